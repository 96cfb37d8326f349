"""bin/report: tiny trained models and a tiny run drawn into one self-contained HTML file."""

from __future__ import annotations

import base64
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.image import imread

from liveroom.async_client.record import ERROR, INVALID, OK, Record
from liveroom.async_client.run_dir import RunDir
from liveroom.cli import run as run_command
from liveroom.data.personas import DEFAULT_PERSONAS, PERSONA_KEYS, personas_json
from liveroom.prompts.stages import STAGES, request_id
from liveroom.report.cli import main
from liveroom.report.gather import load_model_result, load_run_result
from liveroom.synthetic import make_synthetic, write_synthetic
from liveroom.train.config import TrainConfig
from liveroom.train.loop import train

N_RUN = 20  # pitches in the run
MODEL_IMAGES = ("learning-curves", "predicted-vs-actual", "shares")
RUN_IMAGES = ("scores-heatmap", "score-distribution", "expected-scores", "coverage")
IMAGES = (*MODEL_IMAGES, *RUN_IMAGES)


@pytest.fixture(scope="module")
def syn(tmp_path_factory):
    d = tmp_path_factory.mktemp("syn")
    write_synthetic(d, *make_synthetic(200, seed=4))
    return d


def _train(syn: Path, out: Path, inputs: str, pitches: Path | None = None, scores: str = "sampled") -> Path:
    cfg = TrainConfig(pitches=str(pitches or syn / "pitches.csv"), features=str(syn), out=str(out), epochs=3,
                      hidden=16, inputs=inputs, scores=scores)
    with open("/dev/null", "w") as log:
        train(cfg, log=log)
    return out


@pytest.fixture(scope="module")
def models(syn, tmp_path_factory):
    return (_train(syn, tmp_path_factory.mktemp("tabular"), "tabular"),
            _train(syn, tmp_path_factory.mktemp("llm"), "tabular+llm"))


def _scores(stage: str, feats: dict[str, np.ndarray], r: int, c: int) -> dict:
    """The scores of one answer; those of even pitches carry an expected score (0.3 above the integer)."""
    if stage == "buy":
        first = int(feats["action"][r, c])
        items = [first, 5, 1] if first < 3 else [first, 1]
        probs = {"items_expected": [min(s + 0.3, 5) for s in items]} if r % 2 == 0 else {}
        return {"scores": items, "state": float(np.mean(items)), "action": first, **probs}
    score = int(feats[stage][r, c])
    return {stage: score, **({f"{stage}_expected": min(score + 0.3, 5)} if r % 2 == 0 else {})}


@pytest.fixture(scope="module")
def run(syn, tmp_path_factory):
    """A run over the first N_RUN pitches: retried then ok, invalid, failed and unfinished requests."""
    d = tmp_path_factory.mktemp("run")
    feats = {n: np.load(syn / f"{n}.npy") for n in ("entry", "action", "read")}
    cp = RunDir(d)
    cp.open({"format": 1, "model": "tiny", "endpoint": "127.0.0.1", "params": {},
             "groups": {s: STAGES[s].version for s in STAGES}, "personas": personas_json(DEFAULT_PERSONAS),
             "inputs": {}})
    for stage in STAGES:
        for r in range(N_RUN):
            for c, key in enumerate(PERSONA_KEYS):
                if stage == "read" and r == N_RUN - 1:
                    continue  # never finished: missing
                rid, meta = request_id(stage, r, key), {"stage": stage, "index": r, "persona": key}
                usage = {"prompt_tokens": 100, "completion_tokens": 10}
                if r == 0:  # a failure, then the retry succeeds: counts as ok
                    cp.write(stage, Record(rid, ERROR, meta, error="HTTP 500"))
                if r == 1 and c < 2 and stage == "entry":
                    cp.write(stage, Record(rid, INVALID, meta, reply="?", usage=usage, error="no JSON"))
                elif r == 1 and c == 2 and stage == "entry":
                    cp.write(stage, Record(rid, ERROR, meta, error="HTTP 500"))
                else:  # pitch 2's entry answers took three HTTP attempts and one re-ask
                    tries = (3, 1) if r == 2 and stage == "entry" else (1, 0)
                    cp.write(stage, Record(rid, OK, meta, _scores(stage, feats, r, c), "{}", usage, *tries))
    cp.close()
    return d


@pytest.fixture(scope="module")
def report(syn, models, run, tmp_path_factory):
    out = tmp_path_factory.mktemp("report") / "report.html"
    argv = ["--model", str(models[0]), "--name", "tabular only", "--model", str(models[1]), "--name", "tabular + LLM",
            "--run", str(run), "--pitches", str(syn / "pitches.csv"), "--out", str(out)]
    assert main(argv) == 0
    return out


def test_images_are_written_beside_the_page_embedded_and_not_blank(report):
    page = report.read_text(encoding="utf-8")
    for name in IMAGES:
        png = report.with_name(f"report-{name}.png")
        data = png.read_bytes()
        assert data.startswith(b"\x89PNG\r\n\x1a\n"), name
        assert f"data:image/png;base64,{base64.b64encode(data).decode()}" in page, name
        pixels = imread(png)[..., :3]
        assert pixels.shape[0] > 200 and pixels.shape[1] > 300, name
        rgb = (pixels * 255).round().astype(np.uint32) @ np.array([1 << 16, 1 << 8, 1], np.uint32)
        assert len(np.unique(rgb)) > 20 and pixels.std() > 0.05, name
    assert page.count("<img ") == len(IMAGES)
    assert "src=\"http" not in page and "<script" not in page  # self-contained: nothing to fetch
    for label in ("tabular only", "tabular + LLM", "predict the mean", "test RMSE log_gmv", "kept epoch"):
        assert label in page


def test_the_page_shows_the_models_own_metrics(syn, models):
    for d in models:
        m = load_model_result(d)
        summary = json.loads((d / "summary.json").read_text())
        got = m.test_metrics()
        for key in ("rmse_log_gmv", "mae_log_gmv", "kl_watch_batchmean", "kl_pay_batchmean"):
            assert got[key] == pytest.approx(summary["test"][key], rel=1e-4, abs=1e-5), key
        assert len(m.y_true) == summary["n_pitches"]["test"] and len(m.curves["epoch"]) == summary["epochs_run"]
        mean = m.test_metrics(m.train_mean)
        assert mean["rmse_log_gmv"] > 0 and m.name.startswith(d.name)


def test_run_counts_the_last_word_on_each_request(syn, run, tmp_path):
    pd.read_csv(syn / "pitches.csv").head(N_RUN).to_csv(tmp_path / "scored.csv", index=False)
    r = load_run_result(run, str(tmp_path / "scored.csv"))
    assert [s.name for s in r.stages] == list(STAGES) and r.personas == list(PERSONA_KEYS)
    by = {s.name: s for s in r.stages}
    cells = N_RUN * len(PERSONA_KEYS)
    assert (by["entry"].ok, by["entry"].invalid, by["entry"].failed, by["entry"].missing) == (cells - 3, 2, 1, 0)
    assert (by["read"].ok, by["read"].missing) == (cells - 8, 8)
    assert by["entry"].hist.sum() == cells - 3 and by["buy"].hist.sum() > by["buy"].ok  # buy: every item
    even = np.arange(N_RUN) % 2 == 0
    assert by["entry"].expected.size == even.sum() * len(PERSONA_KEYS)  # the unanswered are on pitch 1
    np.testing.assert_allclose(np.sort(by["read"].expected),
                               np.sort(np.minimum(np.load(syn / "read.npy")[:N_RUN - 1][even[:-1]] + 0.3, 5).ravel()))
    assert by["buy"].expected.size > by["buy"].ok // 2  # every item's
    entry = np.load(syn / "entry.npy")[:N_RUN]
    assert by["read"].records == cells - 8 + len(PERSONA_KEYS)  # the failed first tries count as records
    assert by["entry"].prompt_tokens == 100 * (cells - 3 + 2)
    assert (by["entry"].retried, by["entry"].reasked, by["buy"].retried) == (8, 8, 0)
    ok = np.ones_like(entry, bool)
    ok[1, :3] = False
    assert np.allclose(by["entry"].persona_mean, np.nanmean(np.where(ok, entry, np.nan), 0))
    assert r.cost is None
    (run / "usage.json").write_text('{"cost": 0.25, "currency": "USD"}')
    try:
        assert load_run_result(run).cost == 0.25 and load_run_result(run).stages[0].missing is None
    finally:
        (run / "usage.json").unlink()


def test_a_run_alone_is_a_report(run, tmp_path):
    assert main(["--run", str(run), "--out", str(tmp_path / "r.html")]) == 0
    assert sorted(p.name for p in tmp_path.glob("r-*.png")) == sorted(f"r-{n}.png" for n in RUN_IMAGES)


def test_features_with_expected_scores_are_drawn_alone_or_beside_a_model_on_them(syn, tmp_path, capsys):
    assert main(["--features", str(syn), "--out", str(tmp_path / "r.html")]) == 0
    assert [p.name for p in tmp_path.glob("r-*.png")] == ["r-feature-expected-scores.png"]
    model = _train(syn, tmp_path / "expected", "tabular+llm", scores="expected")
    assert main(["--model-dir", str(model), "--out", str(tmp_path / "m.html")]) == 0
    assert sorted(p.name for p in tmp_path.glob("m-*.png")) == sorted(
        f"m-{n}.png" for n in (*MODEL_IMAGES, "feature-expected-scores"))
    plain = tmp_path / "plain"
    plain.mkdir()
    for f in ("entry", "action", "read", "state"):
        shutil.copy(syn / f"{f}.npy", plain)
    _fails(capsys, ["--features", str(plain), "--out", str(tmp_path / "p.html")], "no expected scores there")


def _fails(capsys, argv, *needles):
    capsys.readouterr()
    assert run_command(main, argv, "report") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    for n in needles:
        assert n in err, err


def test_bad_inputs_are_one_line_errors(syn, models, run, tmp_path, capsys):
    out = ["--out", str(tmp_path / "r.html")]
    _fails(capsys, ["--model", str(tmp_path / "nope"), *out], "nope: model directory not found")
    (tmp_path / "empty").mkdir()
    _fails(capsys, ["--model", str(tmp_path / "empty"), *out], "missing summary.json")
    _fails(capsys, ["--run", str(tmp_path / "empty"), *out], "not a run directory")
    broken = tmp_path / "broken"
    shutil.copytree(models[0], broken)
    (broken / "metrics.csv").write_text("epoch,val_loss\n1,abc\n")
    _fails(capsys, ["--model", str(broken), *out], "metrics.csv line 2", "abc")
    (broken / "metrics.csv").write_text((models[0] / "metrics.csv").read_text())
    (broken / "best.pt").write_bytes(b"not a checkpoint")
    _fails(capsys, ["--model", str(broken), *out], "best.pt: not a liveroom model checkpoint")
    moved = tmp_path / "moved.csv"
    shutil.copy(syn / "pitches.csv", moved)
    gone = _train(syn, tmp_path / "gone", "tabular", moved)
    moved.unlink()
    _fails(capsys, ["--model", str(gone), *out], "moved.csv, which is not there; pass --pitches")
    assert main(["--model", str(gone), "--pitches", str(syn / "pitches.csv"), *out]) == 0
    with pytest.raises(SystemExit) as e:
        main(["--model", str(models[0]), "--name", "a", "--name", "b", *out])
    assert e.value.code == 2
    assert not (tmp_path / "r-coverage.png").exists()  # nothing written by a refused command
