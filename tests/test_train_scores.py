"""bin/train --scores expected, end to end through bin/predict: which matrices each reads, and what a model keeps."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest
import torch

from kit import one_line_main
from liveroom.cli import predict_main, train_main
from liveroom.data.layout import LLM_FEATURES
from liveroom.serve.forecast import score_value
from liveroom.synthetic import make_synthetic, write_synthetic


@pytest.fixture(scope="module")
def syn(tmp_path_factory):
    d = tmp_path_factory.mktemp("syn")
    write_synthetic(d, *make_synthetic(200, seed=6, draw_temperature=0.2))
    return d


def _predict(model, syn, features, out):
    assert predict_main(["--model-dir", str(model), "--pitches", str(syn / "pitches.csv"),
                         "--features", str(features), "--out", str(out)]) == 0
    return pd.read_csv(out)




def test_expected_model_reads_the_expected_matrices_in_train_and_predict(syn, tmp_path, capsys):
    model = tmp_path / "model"
    argv = ["--pitches", str(syn / "pitches.csv"), "--features", str(syn), "--out", str(model), "--epochs", "2",
            "--hidden", "8", "--scores", "expected"]
    assert train_main(argv) == 0
    ck = torch.load(model / "best.pt", weights_only=True)
    assert ck["config"]["scores"] == "expected"
    # standardised with the expected matrices' statistics, not the integers'
    x_mean = ck["x_mean"].numpy()[8:].reshape(4, 8)
    for j, f in enumerate(LLM_FEATURES):
        np.testing.assert_allclose(x_mean[j], np.load(syn / f"{f}_expected.npy")[:140].mean(0), rtol=1e-5)
        assert not np.allclose(x_mean[j], np.load(syn / f"{f}.npy")[:140].mean(0), rtol=1e-5)
    first = _predict(model, syn, syn, tmp_path / "a.csv")

    # the integers are not read: other integers, same forecasts; other expected scores, other forecasts
    other = tmp_path / "other"
    shutil.copytree(syn, other)
    for f in LLM_FEATURES:
        np.save(other / f"{f}.npy", np.full((200, 8), 3.0))
    pd.testing.assert_frame_equal(_predict(model, syn, other, tmp_path / "b.csv"), first)
    np.save(other / "read_expected.npy", np.full((200, 8), 3.0))
    assert not np.allclose(_predict(model, syn, other, tmp_path / "c.csv")["log_gmv"], first["log_gmv"])

    # a cell that is no score is named in its expected file
    read = np.load(other / "read_expected.npy")
    read[4, 2] = np.nan
    np.save(other / "read_expected.npy", read)
    err = one_line_main(capsys, predict_main, ["--model-dir", str(model), "--pitches", str(syn / "pitches.csv"),
                                           "--features", str(other), "--out", str(tmp_path / "e.csv")])
    assert "read_expected.npy persona new_white = nan" in err, err

    # without the expected files: one line naming the first one missing, for bin/train and bin/predict
    for f in LLM_FEATURES:
        (other / f"{f}_expected.npy").unlink()
    err = one_line_main(capsys, train_main, [*argv[:3], str(other), "--out", str(tmp_path / "m2"), *argv[6:]])
    assert "missing entry_expected.npy" in err and "--scores expected" in err
    err = one_line_main(capsys, predict_main, ["--model-dir", str(model), "--pitches", str(syn / "pitches.csv"),
                                           "--features", str(other), "--out", str(tmp_path / "d.csv")])
    assert "missing entry_expected.npy" in err


def test_a_model_without_the_choice_reads_the_integers(syn, tmp_path):
    """A model directory from before --scores: its config has no ``scores``; it reads entry.npy and its kin."""
    model = tmp_path / "model"
    assert train_main(["--pitches", str(syn / "pitches.csv"), "--features", str(syn), "--out", str(model),
                       "--epochs", "1", "--hidden", "8"]) == 0
    ck = torch.load(model / "best.pt", weights_only=True)
    assert ck["config"].pop("scores") == "sampled"
    torch.save(ck, model / "best.pt")
    plain = tmp_path / "plain"
    plain.mkdir()
    for f in (*LLM_FEATURES, "index"):
        shutil.copy(syn / f"{f}.npy", plain)
    assert len(_predict(model, syn, plain, tmp_path / "p.csv")) == 200


def test_serve_takes_the_expected_score_where_an_answer_has_one():
    answer = {"entry": 3, "entry_expected": 3.42, "entry_probs": [0, 0.1, 0.4, 0.48, 0.02]}
    assert score_value(answer, "entry") == 3.0
    assert score_value(answer, "entry", "expected") == 3.42
    assert score_value({"entry": 3}, "entry", "expected") == 3.0  # an answer without probabilities
