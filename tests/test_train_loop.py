"""Training end to end on small synthetic data: learning, selection, checkpoints, resume."""

import csv
import json

import numpy as np
import pytest
import torch

from liveroom.data.layout import TARGET_COLUMNS
from liveroom.synthetic import make_synthetic, write_synthetic
from liveroom.train.checkpoint import load_model
from liveroom.train.config import TrainConfig
from liveroom.train.data import raw_inputs, read_features, read_pitches
from liveroom.train.loop import train
from liveroom.train.metrics import metric_names
from liveroom.train.predict import predict


@pytest.fixture(scope="module")
def syn(tmp_path_factory):
    d = tmp_path_factory.mktemp("syn")
    write_synthetic(d, *make_synthetic(3000, seed=5))
    return d


def _cfg(syn, out, **kw):
    return TrainConfig(pitches=str(syn / "pitches.csv"), features=str(syn), out=str(out), **kw)


@pytest.fixture(scope="module")
def trained(syn, tmp_path_factory):
    out = tmp_path_factory.mktemp("model")
    return out, train(_cfg(syn, out, epochs=12), log=open("/dev/null", "w"))


def test_beats_predicting_the_mean(syn, trained):
    out, summary = trained
    pitches = read_pitches(syn / "pitches.csv", with_targets=True)
    y = pitches["log_gmv"].to_numpy()
    n_train, n_val = int(0.7 * len(y)), int(0.1 * len(y))
    test = y[n_train + n_val:]
    mean_rmse = float(np.sqrt(((test - y[:n_train].mean()) ** 2).mean()))
    assert summary["test"]["rmse_log_gmv"] < 0.75 * mean_rmse
    assert summary["n_pitches"] == {"train": 2100, "val": 300, "test": 600}


def test_llm_features_beat_tabular_only(syn, trained, tmp_path):
    tab = train(_cfg(syn, tmp_path, epochs=12, inputs="tabular"), log=open("/dev/null", "w"))
    assert trained[1]["test"]["rmse_log_gmv"] < 0.8 * tab["test"]["rmse_log_gmv"]


def test_outputs_metrics_summary_checkpoints(trained):
    out, summary = trained
    with (out / "metrics.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == metric_names() and len(rows) == summary["epochs_run"]
    assert {"val_rmse_log_gmv", "test_mae_log_watch_user_cnt", "train_kl_pay_batchmean", "lr", "seconds"} <= set(rows[0])
    saved = json.loads((out / "summary.json").read_text())
    assert saved["best_epoch"] == summary["best_epoch"] >= 1
    assert saved["config"]["lr"] == 1e-2 and "rmse_log_gmv" in saved["test"]
    best = torch.load(out / "best.pt", weights_only=True)
    last = torch.load(out / "last.pt", weights_only=True)
    assert best["epoch"] == summary["best_epoch"] and best["inputs"][8] == "entry_Z"
    assert best["targets"] == list(TARGET_COLUMNS) and best["x_mean"].shape == (40,)
    assert {"optimizer", "scheduler", "rng"} <= set(last) and last["epoch"] == summary["epochs_run"]


def test_checkpoint_round_trip_same_predictions(syn, trained):
    out, _ = trained
    net, ck = load_model(out)
    pitches = read_pitches(syn / "pitches.csv", with_targets=False)
    x = raw_inputs(pitches, read_features(syn, pitches["index"].to_numpy()))
    first = predict(net, ck, x)
    again = predict(*load_model(out), x)
    np.testing.assert_array_equal(first, again)
    # and the same as the eval forward of a net built from the raw state_dict
    from liveroom.train.model import SalesNet
    raw = torch.load(out / "best.pt", weights_only=True)
    fresh = SalesNet(40, raw["config"]["hidden"], 0.0, raw["config"]["temperature"])
    fresh.load_state_dict(raw["model"])
    xs = (torch.from_numpy(x[:50]).float() - raw["x_mean"]) / raw["x_std"]
    with torch.no_grad():
        np.testing.assert_allclose(torch.cat(fresh.eval()(xs), 1).numpy(), first[:50], rtol=1e-6)
    assert first.shape == (3000, 20) and np.allclose(first[:, 4:12].sum(1), 1, atol=1e-5)


def test_resume_continues_exactly(syn, tmp_path):
    null = open("/dev/null", "w")
    straight = train(_cfg(syn, tmp_path / "a", epochs=4, patience=0), log=null)
    train(_cfg(syn, tmp_path / "b", epochs=2, patience=0), log=null)
    resumed = train(_cfg(syn, tmp_path / "b", epochs=4, patience=0), resume=True, log=null)
    assert resumed["epochs_run"] == 4
    with (tmp_path / "b" / "metrics.csv").open() as f:
        assert [int(r["epoch"]) for r in csv.DictReader(f)] == [1, 2, 3, 4]
    a = torch.load(tmp_path / "a" / "last.pt", weights_only=True)
    b = torch.load(tmp_path / "b" / "last.pt", weights_only=True)
    for k in a["model"]:
        torch.testing.assert_close(a["model"][k], b["model"][k], rtol=0, atol=0)
    assert straight["test"] == resumed["test"]


def test_early_stopping_and_reference_preset(syn, tmp_path):
    null = open("/dev/null", "w")
    s = train(_cfg(syn, tmp_path / "es", epochs=40, patience=2, lr=5e-2), log=null)
    assert s["stopped_early"] and s["epochs_run"] == s["best_epoch"] + 2
    ref = train(_cfg(syn, tmp_path / "ref", epochs=2, temperature=500.0, kl_schedule="reference",
                     standardize=False, init_bias=False, select_best=False, patience=0, preset="reference"), log=null)
    assert ref["best_epoch"] == ref["epochs_run"] == 2
    ck = torch.load(tmp_path / "ref" / "best.pt", weights_only=True)
    assert (ck["x_mean"] == 0).all() and (ck["x_std"] == 1).all()
