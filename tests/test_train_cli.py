"""bin/train and bin/predict through their entry points: outputs and one-line errors."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from liveroom.cli import predict_main, train_main
from liveroom.data.layout import TARGET_COLUMNS
from liveroom.synthetic import make_synthetic, write_synthetic

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def syn(tmp_path_factory):
    d = tmp_path_factory.mktemp("syn")
    write_synthetic(d, *make_synthetic(400, seed=9))
    return d


@pytest.fixture(scope="module")
def model(syn, tmp_path_factory):
    out = tmp_path_factory.mktemp("model")
    assert train_main(["--pitches", str(syn / "pitches.csv"), "--features", str(syn), "--out", str(out),
                       "--epochs", "2"]) == 0
    return out


def _copy_features(syn, dst):
    dst.mkdir()
    for name in ("entry", "action", "read", "state", "index"):
        np.save(dst / f"{name}.npy", np.load(syn / f"{name}.npy"))
    return dst


def _fails(capsys, main, argv, *needles):
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    for n in needles:
        assert n in err, err
    return err


def _train_args(syn, features, out):
    return ["--pitches", str(syn / "pitches.csv"), "--features", str(features), "--out", str(out), "--epochs", "1"]


def test_train_prints_progress_and_writes_model(syn, model, tmp_path, capsys):
    assert {p.name for p in model.iterdir()} >= {"metrics.csv", "summary.json", "best.pt", "last.pt"}
    capsys.readouterr()
    assert train_main(_train_args(syn, syn, tmp_path / "m") + ["--epochs", "2", "--hidden", "8"]) == 0
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2 and err[1].startswith("epoch    2  train loss ") and "val rmse log_gmv" in err[1]
    assert torch.load(tmp_path / "m" / "best.pt", weights_only=True)["config"]["hidden"] == 8


def test_nan_feature_names_matrix_and_pitch(syn, tmp_path, capsys):
    feats = _copy_features(syn, tmp_path / "f")
    a = np.load(feats / "read.npy")
    a[17, 3] = np.nan
    np.save(feats / "read.npy", a)
    _fails(capsys, train_main, _train_args(syn, feats, tmp_path / "m"), "read.npy", "pitch index 17", "deep_middle")


@pytest.mark.parametrize("shape", [(399, 8), (400, 7)])
def test_wrong_feature_shape(syn, tmp_path, capsys, shape):
    feats = _copy_features(syn, tmp_path / "f")
    np.save(feats / "state.npy", np.ones(shape))
    _fails(capsys, train_main, _train_args(syn, feats, tmp_path / "m"), "state.npy", f"{shape}", "(400, 8)")


def test_index_mismatch_and_missing_matrix(syn, tmp_path, capsys):
    feats = _copy_features(syn, tmp_path / "f")
    idx = np.load(feats / "index.npy")
    idx[[5, 6]] = idx[[6, 5]]
    np.save(feats / "index.npy", idx)
    _fails(capsys, train_main, _train_args(syn, feats, tmp_path / "m"), "index.npy", "row 6")
    (feats / "index.npy").unlink()
    (feats / "entry.npy").unlink()
    _fails(capsys, train_main, _train_args(syn, feats, tmp_path / "m"), "missing entry.npy")


def test_missing_target_column(syn, tmp_path, capsys):
    df = pd.read_csv(syn / "pitches.csv").drop(columns=["log_gmv", "user_cnt"])
    df.to_csv(tmp_path / "p.csv", index=False)
    args = ["--pitches", str(tmp_path / "p.csv"), "--features", str(syn), "--out", str(tmp_path / "m")]
    _fails(capsys, train_main, args, "missing column(s)", "user_cnt", "log_gmv")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_cuda(syn, tmp_path, capsys):
    _fails(capsys, train_main, _train_args(syn, syn, tmp_path / "m") + ["--device", "cuda:0"], "CUDA is not available")


def test_resume_without_checkpoint(syn, tmp_path, capsys):
    _fails(capsys, train_main, _train_args(syn, syn, tmp_path / "m") + ["--resume"], "nothing to resume")


def test_resume_keeps_settings_unless_given(syn, tmp_path):
    out = tmp_path / "m"
    args = ["--pitches", str(syn / "pitches.csv"), "--features", str(syn), "--out", str(out)]
    assert train_main(args + ["--epochs", "2", "--patience", "7", "--hidden", "8", "--preset", "reference"]) == 0
    assert train_main(args + ["--resume", "--epochs", "3"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["epochs_run"] == 3
    assert summary["config"]["patience"] == 7 and summary["config"]["hidden"] == 8
    assert summary["config"]["temperature"] == 500.0


def test_predict_minimal_pitches(syn, model, tmp_path):
    df = pd.read_csv(syn / "pitches.csv")[["index", "start", "duration", "user_cnt"]].iloc[::-1]
    df.to_csv(tmp_path / "new.csv", index=False)
    feats = _copy_features(syn, tmp_path / "f")
    for name in ("entry", "action", "read", "state", "index"):
        np.save(feats / f"{name}.npy", np.load(feats / f"{name}.npy")[::-1])
    assert predict_main(["--model", str(model), "--pitches", str(tmp_path / "new.csv"), "--features", str(feats),
                         "--out", str(tmp_path / "pred.csv")]) == 0
    pred = pd.read_csv(tmp_path / "pred.csv")
    assert list(pred.columns) == ["index", *TARGET_COLUMNS] and len(pred) == 400
    assert pred["index"].tolist() == df["index"].tolist()
    assert np.allclose(pred.filter(like="_pay").sum(axis=1), 1, atol=1e-4)


def test_predict_refuses_other_features(syn, model, tmp_path, capsys):
    feats = _copy_features(syn, tmp_path / "f")
    np.save(feats / "action.npy", np.ones((400, 6)))
    args = ["--model", str(model), "--pitches", str(syn / "pitches.csv"), "--features", str(feats), "--out", str(tmp_path / "p.csv")]
    _fails(capsys, predict_main, args, "action.npy", "(400, 8)")
    _fails(capsys, predict_main, args[:4] + args[6:], "--features is required")
    _fails(capsys, predict_main, ["--model", str(tmp_path)] + args[2:], "best.pt", "no such file")


def test_bin_train_subprocess_one_line_error(syn, tmp_path):
    r = subprocess.run([sys.executable, str(ROOT / "bin" / "train"), *_train_args(syn, tmp_path / "nope", tmp_path / "m")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    assert r.stderr.startswith("train: error: ") and r.stderr.count("\n") == 1 and "features directory not found" in r.stderr


def _zero_cells(syn, dst):
    """Features like the reference's files: 0 where a reply was missing (pitch index 3 twice, 250 once)."""
    feats = _copy_features(syn, dst)
    for name, row, persona in (("entry", 3, 0), ("state", 3, 5), ("action", 250, 7)):
        a = np.load(feats / f"{name}.npy")
        a[row, persona] = 0
        np.save(feats / f"{name}.npy", a)
    return feats


def test_zero_features_refused_with_count_and_first_pitches(syn, tmp_path, capsys):
    feats = _zero_cells(syn, tmp_path / "f")
    _fails(capsys, train_main, _train_args(syn, feats, tmp_path / "m"),
           "3 feature cell(s) outside 1..5", "0 = missing", "in 2 of 400 pitches",
           "pitch index 3 (row 4, entry.npy persona Z = 0)", "pitch index 250 (row 251, action.npy persona town_old = 0)",
           "--drop-missing trains on the 398 complete pitches")
    assert not (tmp_path / "m" / "best.pt").exists()


def test_drop_missing_trains_on_complete_pitches(syn, tmp_path, capsys):
    feats = _zero_cells(syn, tmp_path / "f")
    capsys.readouterr()
    assert train_main(_train_args(syn, feats, tmp_path / "m") + ["--drop-missing"]) == 0
    err = capsys.readouterr().err
    assert "left out 2 of 400 pitches" in err
    summary = json.loads((tmp_path / "m" / "summary.json").read_text())
    assert summary["dropped_pitches"] == 2 and summary["config"]["drop_missing"] is True
    assert summary["n_pitches"] == {"train": 278, "val": 39, "test": 81}  # 398 * 7 // 10, 398 // 10, the rest
    # without anything to drop, the count is 0 and the split is the whole file's
    assert train_main(_train_args(syn, syn, tmp_path / "m2") + ["--drop-missing"]) == 0
    assert "left out 0 of 400 pitches" in capsys.readouterr().err
    assert json.loads((tmp_path / "m2" / "summary.json").read_text())["dropped_pitches"] == 0


def test_predict_refuses_zero_features(syn, model, tmp_path, capsys):
    feats = _zero_cells(syn, tmp_path / "f")
    args = ["--model", str(model), "--pitches", str(syn / "pitches.csv"), "--features", str(feats),
            "--out", str(tmp_path / "p.csv")]
    _fails(capsys, predict_main, args, "3 feature cell(s) outside 1..5", "pitch index 3 (row 4")
