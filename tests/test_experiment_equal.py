"""One experiment against bin/train: every (arm, seed) model is the model bin/train trains alone.

The experiment trains five arms over two seeds at once (two groups: the
tabular models, and the 40-input models with and without the debias weight,
on the expected scores, and the reference preset side by side); each model is then trained by
``bin/train`` with the flags that :meth:`Experiment.train_argv` gives, and
the two must agree on every epoch: same epochs run, same selected epoch, the
same validation losses and test metrics up to float rounding.
"""

from __future__ import annotations

import copy
import csv
import json

import numpy as np
import pandas as pd
import pytest
import torch

from liveroom.cli import experiment_main, predict_main, train_main
from liveroom.experiment.arms import Experiment
from liveroom.experiment.kstep import KNets
from liveroom.synthetic import make_synthetic, write_synthetic
from liveroom.train.data import build_dataset, read_features, read_pitches
from liveroom.train.model import FastStep, SalesNet

ARMS = ["tabular", "llm", "llm+debias", "llm-expected", "reference"]
SEEDS = [0, 3]


@pytest.fixture(scope="module")
def syn(tmp_path_factory):
    d = tmp_path_factory.mktemp("syn")
    write_synthetic(d, *make_synthetic(500, seed=11))
    return d


@pytest.fixture(scope="module")
def experiment(syn, tmp_path_factory):
    out = tmp_path_factory.mktemp("exp")
    argv = ["--pitches", str(syn / "pitches.csv"), "--features", str(syn), "--out", str(out),
            "--arms", ",".join(ARMS), "--seeds", ",".join(map(str, SEEDS)), "--epochs", "9", "--patience", "2"]
    assert experiment_main(argv) == 0
    return out, Experiment(pitches=str(syn / "pitches.csv"), features=str(syn), out=str(out), arms=ARMS,
                           seeds=SEEDS, epochs=9, patience=2)


def _metrics(path):
    with path.open() as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize("arm", ARMS)
def test_each_model_equals_bin_train(experiment, arm, tmp_path):
    out, exp = experiment
    for seed in SEEDS:
        alone = tmp_path / f"{arm}-{seed}"
        assert train_main(exp.train_argv(arm, seed, alone)) == 0
        a = json.loads((out / "models" / f"{arm}-{seed}" / "summary.json").read_text())
        b = json.loads((alone / "summary.json").read_text())
        assert (a["best_epoch"], a["epochs_run"], a["stopped_early"]) == \
               (b["best_epoch"], b["epochs_run"], b["stopped_early"]), f"{arm}-{seed}"
        assert a["config"] == {**b["config"], "out": a["config"]["out"]}
        for k, v in b["test"].items():
            assert a["test"][k] == pytest.approx(v, rel=1e-4, abs=1e-6), f"{arm}-{seed} test {k}"
        ea, eb = _metrics(out / "models" / f"{arm}-{seed}" / "metrics.csv"), _metrics(alone / "metrics.csv")
        assert len(ea) == len(eb)
        for ra, rb in zip(ea, eb):
            for k in ("train_batch_loss", "val_loss", "test_rmse_log_gmv", "lr"):
                assert float(ra[k]) == pytest.approx(float(rb[k]), rel=1e-4), f"{arm}-{seed} epoch {ra['epoch']} {k}"


def test_early_stopping_happened_and_reference_ran_all_epochs(experiment):
    out, _ = experiment
    rows = pd.read_csv(out / "results.csv")
    assert len(rows) == len(ARMS) * len(SEEDS)
    assert rows[rows.arm != "reference"].stopped_early.any()  # some models left their group early
    ref = rows[rows.arm == "reference"]
    assert (ref.best_epoch == 9).all() and (ref.epochs_run == 9).all()


def test_bin_predict_takes_an_experiment_model(syn, experiment, tmp_path):
    out, exp = experiment
    model = out / "models" / "llm+debias-3"
    assert predict_main(["--model", str(model), "--pitches", str(syn / "pitches.csv"), "--features", str(syn),
                         "--out", str(tmp_path / "pred.csv")]) == 0
    pred = pd.read_csv(tmp_path / "pred.csv")
    assert len(pred) == 500 and np.allclose(pred.filter(regex="^prop_.*_watch$").sum(axis=1), 1, atol=1e-4)
    alone = tmp_path / "alone"
    assert train_main(exp.train_argv("llm+debias", 3, alone)) == 0
    assert predict_main(["--model", str(alone), "--pitches", str(syn / "pitches.csv"), "--features", str(syn),
                         "--out", str(tmp_path / "alone.csv")]) == 0
    np.testing.assert_allclose(pred.to_numpy(), pd.read_csv(tmp_path / "alone.csv").to_numpy(), rtol=1e-3, atol=1e-4)


def test_knets_step_equals_fast_step_model_by_model(syn):
    pitches = read_pitches(syn / "pitches.csv", with_targets=True)
    data = build_dataset(pitches, read_features(syn, pitches["index"].to_numpy()), debias=True, standardize=True,
                         device=torch.device("cpu"))
    torch.manual_seed(2)
    nets = [SalesNet(40, 16, 0.1, t) for t in (1.0, 500.0, 1.0)]
    knets = KNets.stack(nets, 0.1)
    for k, net in enumerate(nets):
        again = knets.net(k)
        for name, value in net.state_dict().items():
            torch.testing.assert_close(again.state_dict()[name], value, rtol=0, atol=0)
    rows = data.part("train")
    batches = torch.stack([rows[i * 16:(i + 1) * 16] for i in range(3)])
    gens = [torch.Generator().manual_seed(s) for s in (5, 6, 7)]
    masks = knets.masks(16, gens)
    w_kl = torch.tensor([[1.0], [0.5], [1.0]])
    n = data.n_in
    losses = knets.loss_and_grad(batches[..., :n], batches[..., n:n + 20], batches[..., n + 20],
                                 batches[..., n + 21:], w_kl, masks)
    for k, net in enumerate(nets):
        fast = FastStep(copy.deepcopy(net))
        b = batches[k]
        m = fast.masks(16, 0.1, torch.Generator().manual_seed(5 + k))  # the same draws from the same generator
        assert m is not None and masks is not None
        torch.testing.assert_close(masks[0][k], m[0], rtol=0, atol=0)
        loss = fast.loss_and_grad(data.x(b), data.y(b), data.weight(b), data.ylogy(b), float(w_kl[k]), m)
        torch.testing.assert_close(losses[k], loss, rtol=1e-5, atol=1e-7)
        for got, want in ((knets.W1.grad[k], fast.gW1), (knets.Wh.grad[k], fast.gWh), (knets.bh.grad[k], fast.gbh),
                          (knets.Wo.grad[k], fast.gWo), (knets.bo.grad[k], fast.gbo), (knets.b1.grad[k], fast.gb1)):
            torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("at_once", [5, "per batch"])
def test_masks_drawn_ahead_or_per_batch_are_bin_trains(syn, tmp_path, monkeypatch, at_once):
    """Dropout masks drawn several batches at a time (where the sampler allows) or batch by batch."""
    from liveroom.experiment import group

    if at_once == "per batch":
        monkeypatch.setattr(group, "draws_concatenate", lambda *a: False)
    else:
        monkeypatch.setattr(group, "MASK_BATCHES", at_once)  # 22 batches an epoch: chunks of 5, 5, 5, 5, 2
    exp = Experiment(pitches=str(syn / "pitches.csv"), features=str(syn), out=str(tmp_path / "exp"),
                     arms=["llm+debias"], seeds=[1], epochs=3, patience=0)
    assert experiment_main(["--pitches", exp.pitches, "--features", str(syn), "--out", exp.out, "--arms",
                            "llm+debias", "--seeds", "1", "--epochs", "3", "--patience", "0"]) == 0
    assert train_main(exp.train_argv("llm+debias", 1, tmp_path / "alone")) == 0
    ea, eb = _metrics(tmp_path / "exp" / "models" / "llm+debias-1" / "metrics.csv"), _metrics(tmp_path / "alone" / "metrics.csv")
    for ra, rb in zip(ea, eb):
        assert float(ra["val_loss"]) == pytest.approx(float(rb["val_loss"]), rel=1e-5)


def test_drop_missing_trains_the_arms_on_their_own_pitches(syn, tmp_path, capsys):
    """With a missing score, the LLM arms leave that pitch out and the tabular arm keeps it, as bin/train does."""
    feats = tmp_path / "feats"
    feats.mkdir()
    for f in syn.glob("*.npy"):
        a = np.load(f)
        if f.name == "read.npy":
            a = a.astype(float)
            a[40, 2] = np.nan
        np.save(feats / f.name, a)
    argv = ["--pitches", str(syn / "pitches.csv"), "--features", str(feats), "--out", str(tmp_path / "exp"),
            "--arms", "tabular,llm", "--seeds", "0", "--epochs", "2"]
    assert experiment_main(argv) == 2
    assert "--drop-missing" in capsys.readouterr().err
    assert experiment_main(argv + ["--drop-missing"]) == 0
    exp = Experiment(pitches=str(syn / "pitches.csv"), features=str(feats), out=str(tmp_path / "exp"),
                     arms=["tabular", "llm"], seeds=[0], epochs=2, drop_missing=True)
    for arm, n in (("tabular", 500), ("llm", 499)):
        a = json.loads((tmp_path / "exp" / "models" / f"{arm}-0" / "summary.json").read_text())
        assert sum(a["n_pitches"].values()) == n
        assert train_main(exp.train_argv(arm, 0, tmp_path / arm)) == 0
        b = json.loads((tmp_path / arm / "summary.json").read_text())
        assert a["test"]["rmse_log_gmv"] == pytest.approx(b["test"]["rmse_log_gmv"], rel=1e-4)


def test_tabular_nets_padded_to_40_inputs_keep_their_padding_zero(syn):
    torch.manual_seed(4)
    nets = [SalesNet(8, 16, 0.1, 1.0), SalesNet(40, 16, 0.1, 1.0)]
    knets = KNets.stack(nets, 0.1)
    opt = torch.optim.Adam(knets.params, lr=1e-2, fused=True)
    x = torch.randn(2, 16, 40)
    x[0, :, 8:] = 0  # the tabular model's padded inputs
    y = torch.rand(2, 16, 20)
    for _ in range(3):
        knets.loss_and_grad(x, y, torch.ones(2, 16), torch.zeros(2, 16, 2), torch.ones(2, 1), knets.masks(16, [
            torch.Generator().manual_seed(1), torch.Generator().manual_seed(2)]))
        assert (knets.W1.grad[0, :, 8:] == 0).all()
        opt.step()
    assert (knets.W1[0, :, 8:] == 0).all() and knets.W1[0, :, :8].abs().sum() > 0
    back = knets.net(0)
    assert back.trunk[0].in_features == 8 and knets.net(1).trunk[0].in_features == 40


def test_tables_and_report(experiment):
    out, _ = experiment
    results = pd.read_csv(out / "results.csv")
    assert list(results.columns[:5]) == ["arm", "seed", "best_epoch", "epochs_run", "stopped_early"]
    summary = pd.read_csv(out / "summary.csv")
    rmse = summary[summary.metric == "test_rmse_log_gmv"].set_index("arm")
    for arm in ARMS:
        v = results[results.arm == arm].test_rmse_log_gmv
        assert rmse.loc[arm, "mean"] == pytest.approx(v.mean(), rel=1e-5)
        assert rmse.loc[arm, "std"] == pytest.approx(v.std(ddof=1), rel=1e-4, abs=2e-6)  # results.csv keeps 6 digits
    assert rmse.loc["llm", "compared_with"] == "tabular" and rmse.loc["llm", "diff_mean"] < 0
    md = (out / "summary.md").read_text()
    assert all(f"| {arm} |" in md for arm in ARMS) and "Difference from tabular" in md
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 2 and (out / "report-metrics.png").stat().st_size > 1000
