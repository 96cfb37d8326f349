"""``bin/collect``: a run's records -> the four feature matrices.

Writes ``entry.npy``, ``state.npy``, ``action.npy``, ``read.npy`` (float64,
pitches x personas, rows in the pitches file's order, columns in the run's
persona order), ``index.npy`` (the pitch ``index`` of each row) and
``coverage.json``. A cell without an ok record is NaN and named in the
report; any makes the command fail unless ``--allow-missing``.
Whatever mix of direct and batch mode filled the run, the last ok record of
each request counts. The stages and the features each fills come from the
stage registry; the matrices written are the layout's :data:`LLM_FEATURES`.

When any record carries the reply's probabilities (``bin/score
--score-probs``), it also writes ``<f>_expected.npy`` (the expected score of
each cell; a cell whose record has none takes its integer) and
``<f>_probs.npy`` (pitches x personas x 5, p(1)..p(5); NaN where the record
has none); ``coverage.json`` says per stage how many cells came from
probabilities (``from_probs``). A collect of a run without any removes those
files left by an earlier one, so they never describe other integers.

A damaged line in a record file (a record cut by a failing disk) is skipped
and named by file and line; its cell counts as missing unless another record
fills it. The files appear together and whole: each is written to a
temporary file first, and all are renamed into place only once every one is
written, so a failed collect leaves the old files as they were.
"""

from __future__ import annotations

import io
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from ..async_client.files import write_error
from ..async_client.run_dir import RunDir
from ..cliargs import command_parser
from ..data.inputs import ENCODING_HELP, check_encoding, load_pitches
from ..data.layout import EXPECTED, LLM_FEATURES, PROBS, SCORE_LEVELS
from ..errors import LiveroomError
from ..prompts.stages import STAGES, request_id
from .usage import check_usage, usage_lines

FEATURES: tuple[str, ...] = LLM_FEATURES  # the matrices written, one .npy each
SHOWN_MISSING = 20
#: the files of the expected scores and their probabilities, written only from a run that has them
PROB_FILES: tuple[str, ...] = tuple(f"{f}{suffix}.npy" for suffix in (EXPECTED, PROBS) for f in FEATURES)


def reply_probs(scores: dict[str, Any], feature: str) -> tuple[float, list[float]] | None:
    """(expected score, p(1)..p(5)) of ``feature`` in one ok record's scores, or None when it has none."""
    expected, probs = scores.get(feature + EXPECTED), scores.get(feature + PROBS)
    if not isinstance(expected, (int, float)) or isinstance(expected, bool):
        return None
    if not isinstance(probs, list) or len(probs) != len(SCORE_LEVELS) \
            or not all(isinstance(p, (int, float)) and not isinstance(p, bool) for p in probs):
        return None
    return float(expected), [float(p) for p in probs]


def collect(pitches: str | Path, run_dir: str | Path,
            encoding: str | None = None) -> tuple[np.ndarray, dict[str, np.ndarray], dict[str, Any]]:
    """Pitch indexes, matrices and the coverage report of one run over one pitches file.

    The matrices are the integers (``entry`` ...) and, when any record has the
    reply's probabilities, ``entry_expected`` ... and ``entry_probs`` ...
    Damaged record lines are skipped; the report's ``damaged`` (present
    only when there are any) maps each file to their line numbers.
    """
    run_dir = Path(run_dir)
    records = RunDir(run_dir)
    keys = records.manifest().persona_keys
    df = load_pitches(pitches, need=(), encoding=encoding)
    index = df["index"].to_numpy(dtype=np.int64)
    row: dict[Any, int] = {int(i): r for r, i in enumerate(index)}  # looked up with what a record holds
    col: dict[Any, int] = {k: c for c, k in enumerate(keys)}
    mats: dict[str, np.ndarray] = {f: np.full((len(index), len(keys)), np.nan) for f in FEATURES}
    expected = {f: np.full((len(index), len(keys)), np.nan) for f in FEATURES}
    probs = {f: np.full((len(index), len(keys), len(SCORE_LEVELS)), np.nan) for f in FEATURES}
    report: dict[str, Any] = {"pitches": len(index), "personas": keys, "stages": {}, "missing": {}}
    for stage_name, stage in STAGES.items():
        features = stage.features
        failed: dict[str, str] = {}
        unknown = 0
        damaged: list[int] = []
        for rec in records.records(stage_name, damaged):
            r, c = row.get(rec.meta.get("index")), col.get(rec.meta.get("persona"))
            if r is None or c is None:
                unknown += 1
                continue
            if rec.ok:
                for f in features:
                    mats[f][r, c] = rec.scores[f]
                    found = reply_probs(rec.scores, f)
                    expected[f][r, c], probs[f][r, c] = found if found else (rec.scores[f], np.nan)
                failed.pop(rec.id, None)
            elif np.isnan(mats[features[0]][r, c]):
                failed[rec.id] = rec.error or rec.status
        cells = mats[features[0]]
        missing = [request_id(stage_name, int(index[r]), keys[c]) for r, c in zip(*np.nonzero(np.isnan(cells)))]
        report["stages"][stage_name] = {
            "cells": int(cells.size), "filled": int(cells.size - len(missing)), "missing": len(missing),
            "failed": len(failed), "records_outside_pitches": unknown,
            "from_probs": int((~np.isnan(probs[features[0]][..., 0])).sum()),
        }
        if damaged:
            report.setdefault("damaged", {})[records.path(stage_name).name] = damaged
        if missing:
            report["missing"][stage_name] = [
                {"id": m, **({"error": failed[m]} if m in failed else {})} for m in missing[:SHOWN_MISSING]
            ]
    report["usage"] = check_usage(run_dir, STAGES)  # the run's totals summed over its records, beside usage.json
    if any(s["from_probs"] for s in report["stages"].values()):
        mats.update({f + EXPECTED: expected[f] for f in FEATURES})
        mats.update({f + PROBS: probs[f] for f in FEATURES})
    return index, mats, report


def _npy(m: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, m)
    return buf.getvalue()


def write_features(out: str | Path, index: np.ndarray, mats: dict[str, np.ndarray], report: dict[str, Any]) -> None:
    """The matrices, ``index.npy`` and ``coverage.json`` into ``out``, all or none (temp files, then renames);
    expected-score files of an earlier collect that ``mats`` does not replace are removed after."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    files = {**{f"{name}.npy": _npy(m) for name, m in mats.items()}, "index.npy": _npy(index),
             "coverage.json": orjson.dumps(report, option=orjson.OPT_INDENT_2)}
    temps: list[Path] = []
    try:
        for name, data in files.items():
            tmp = out / f".{name}.tmp"
            temps.append(tmp)
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
    except OSError as e:
        for tmp in temps:
            tmp.unlink(missing_ok=True)
        raise write_error(temps[-1], e) from None
    for tmp, name in zip(temps, files):
        os.replace(tmp, out / name)
    for name in PROB_FILES:
        if name not in files:
            (out / name).unlink(missing_ok=True)


def main(argv: Sequence[str] | None = None) -> int:
    """bin/collect: 0 when every cell is filled (or --allow-missing), else an error naming one."""
    p = command_parser(
        "collect",
        description="Build the entry/state/action/read feature matrices (pitches x personas) from a scoring run.",
    )
    p.add_argument("--pitches", required=True, metavar="CSV", help="the pitches file that was scored (row order kept)")
    p.add_argument("--run", required=True, metavar="RUN_DIR", help="run directory of bin/score or bin/batch")
    p.add_argument("--out", required=True, metavar="FEATURES_DIR", help="where the .npy files and coverage.json go")
    p.add_argument("--allow-missing", action="store_true",
                   help="write and exit 0 even when cells are missing (NaN) or checkpoint lines are damaged")
    p.add_argument("--encoding", default=None, help=ENCODING_HELP)
    args = p.parse_args(argv)
    check_encoding(args.encoding)  # before the run directory: a wrong flag is named first
    index, mats, report = collect(args.pitches, args.run, args.encoding)
    write_features(args.out, index, mats, report)
    damaged = [f"{name} line {n}" for name, lines in report.get("damaged", {}).items() for n in lines]
    if damaged:
        print(f"collect: {len(damaged)} damaged checkpoint line(s) skipped: {', '.join(damaged[:SHOWN_MISSING])}"
              + (" ..." if len(damaged) > SHOWN_MISSING else ""), file=sys.stderr)
    total_missing = sum(s["missing"] for s in report["stages"].values())
    for name, s in report["stages"].items():
        print(f"collect: {name}: {s['filled']}/{s['cells']} cells"
              + (f", {s['missing']} missing ({s['failed']} failed)" if s["missing"] else ""), file=sys.stderr)
    for line in usage_lines(report["usage"]):
        print(f"collect: {line}", file=sys.stderr)
    from_probs = sum(s["from_probs"] for s in report["stages"].values())
    if from_probs:
        print(f"collect: {from_probs} of {sum(s['cells'] for s in report['stages'].values())} cells have the "
              "reply's probabilities (the others' expected score is their integer)", file=sys.stderr)
    written = [*(f"{f}.npy" for f in FEATURES), *(PROB_FILES if from_probs else ())]
    print(f"collect: wrote {', '.join(written)}, index.npy, coverage.json to {args.out}",
          flush=True)  # the result
    if total_missing and not args.allow_missing:
        first = next(iter(report["missing"].values()))[0]
        raise LiveroomError(f"{total_missing} cell(s) missing (NaN), e.g. {first['id']}"
                            + (f" ({first['error']})" if "error" in first else "")
                            + (f"; {len(damaged)} damaged line(s), e.g. {damaged[0]}" if damaged else "")
                            + f"; see {Path(args.out) / 'coverage.json'}; rerun bin/score, or pass --allow-missing")
    return 0
