"""bin/collect over records that carry the reply's probabilities, some of them, or none.

The run directory is written as the engine writes it: the manifest through
:class:`RunDir`, each line through :func:`liveroom.async_client.record.dumps`;
bin/collect runs as a subprocess, as a user runs it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from kit import collect, make_inputs
from liveroom.async_client.record import Record, dumps
from liveroom.async_client.run_dir import RunDir
from liveroom.data.personas import DEFAULT_PERSONAS, PERSONA_KEYS
from liveroom.prompts.stages import STAGES, request_id
from liveroom.scoring.plan import ModelParams, run_manifest

PROBS = [0.1, 0.2, 0.4, 0.2, 0.1]  # expected score 3.0
TILTED = [0.0, 0.1, 0.2, 0.3, 0.4]  # expected score 4.0


def _scores(stage: str, ints: list[int], probs: list[list[float]] | None) -> dict[str, Any]:
    """A record's scores as the parsers give them, with the probability keys of the layout when ``probs``."""
    exp = [float(np.dot(range(1, 6), p)) for p in probs] if probs else []
    if stage == "buy":
        out: dict[str, Any] = {"scores": ints, "state": float(np.mean(ints)), "action": ints[0]}
        if probs:
            out |= {"items_expected": exp, "items_probs": probs, "items_mass": [0.9] * len(ints),
                    "state_expected": float(np.mean(exp)), "state_probs": np.mean(probs, 0).tolist(),
                    "state_mass": 0.9, "action_expected": exp[0], "action_probs": probs[0], "action_mass": 0.9}
        return out
    f = STAGES[stage].features[0]
    return {f: ints[0], **({f"{f}_expected": exp[0], f"{f}_probs": probs[0], f"{f}_mass": 0.95} if probs else {})}


def _write_run(run: Path, pitches: Path, lines: dict[str, list[Record]]) -> None:
    RunDir(run).open(run_manifest(ModelParams(), None, tuple(STAGES.values()), DEFAULT_PERSONAS,
                                  {"pitches": str(pitches)}))
    for stage, recs in lines.items():
        with (run / f"{stage}.jsonl").open("ab") as f:
            f.write(b"".join(dumps(r) for r in recs))


def _record(stage: str, index: int, persona: str, ints: list[int], probs: list[list[float]] | None) -> Record:
    return Record(request_id(stage, index, persona), "ok", {"stage": stage, "index": index, "persona": persona},
                  _scores(stage, ints, probs), "{}")


def test_probabilities_become_expected_matrices_and_the_rest_keep_their_integers(tmp_path):
    pitches, _ = make_inputs(tmp_path, 3)
    index = pd.read_csv(pitches)["index"].tolist()
    run, out = tmp_path / "run", tmp_path / "features"
    lines: dict[str, list[Record]] = {"entry": [], "buy": [], "read": []}
    for i in index:
        for k, key in enumerate(PERSONA_KEYS):
            with_probs = (i + k) % 2 == 0
            lines["entry"].append(_record("entry", i, key, [2], [PROBS] if with_probs else None))
            lines["buy"].append(_record("buy", i, key, [5, 3], [TILTED, PROBS] if with_probs else None))
            lines["read"].append(_record("read", i, key, [4], [TILTED] if k else None))
    # a later answer without probabilities replaces an earlier one with them: its cell is the integer again
    lines["read"].append(_record("read", index[0], PERSONA_KEYS[1], [1], None))
    _write_run(run, pitches, lines)

    p = collect(pitches, run, out)
    assert p.returncode == 0, p.stderr
    assert "entry_expected.npy" in p.stdout and "read_probs.npy" in p.stdout
    has = np.array([[(i + k) % 2 == 0 for k in range(8)] for i in index])
    entry, entry_exp, entry_probs = (np.load(out / f"entry{s}.npy") for s in ("", "_expected", "_probs"))
    assert entry_probs.shape == (3, 8, 5)
    assert (entry == 2).all()
    np.testing.assert_allclose(entry_exp, np.where(has, 3.0, 2.0))
    np.testing.assert_allclose(entry_probs[has], np.tile(PROBS, (int(has.sum()), 1)))
    assert np.isnan(entry_probs[~has]).all()
    np.testing.assert_allclose(np.load(out / "action_expected.npy"), np.where(has, 4.0, 5.0))
    np.testing.assert_allclose(np.load(out / "state_expected.npy"), np.where(has, 3.5, 4.0))
    np.testing.assert_allclose(np.load(out / "state.npy"), 4.0)
    read_exp, read_probs = np.load(out / "read_expected.npy"), np.load(out / "read_probs.npy")
    assert read_exp[0, 1] == 1.0 and np.isnan(read_probs[0, 1]).all()
    assert (read_exp[:, 0] == 4.0).all() and (read_exp[1:, 1:] == 4.0).all()
    coverage = json.loads((out / "coverage.json").read_text())["stages"]
    assert {s: coverage[s]["from_probs"] for s in coverage} == {"entry": int(has.sum()), "buy": int(has.sum()),
                                                                  "read": 3 * 7 - 1}

    # the same run without any probabilities: no expected files, and those of the collect before are gone
    plain = tmp_path / "plain"
    _write_run(plain, pitches, {s: [_record(s, int(r.meta["index"]), str(r.meta["persona"]),
                                            list(r.scores.get("scores", [1])), None) for r in recs]
                                for s, recs in lines.items()})
    p = collect(pitches, plain, out)
    assert p.returncode == 0, p.stderr
    assert sorted(f.name for f in out.iterdir()) == ["action.npy", "coverage.json", "entry.npy", "index.npy",
                                                    "read.npy", "state.npy"]
    assert all(s["from_probs"] == 0 for s in json.loads((out / "coverage.json").read_text())["stages"].values())
