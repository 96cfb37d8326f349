"""The chronological split as the method sizes it, the KL as the authors report it, and score checks."""

import numpy as np
import pytest
import torch

from liveroom.data.layout import N_SHARE, PAY, REG, WATCH
from liveroom.errors import InputError
from liveroom.synthetic import make_synthetic, write_synthetic
from liveroom.train.data import build_dataset, check_scores, incomplete, read_features, read_pitches, split_bounds
from liveroom.train.loss import kl
from liveroom.train.metrics import evaluate
from liveroom.train.model import SalesNet


def test_split_sizes_at_90_as_the_method():
    # n * 7 // 10 = 63 train, n // 10 = 9 validation, 18 test; int(0.7 * 90) would give 62
    assert split_bounds(90) == (63, 72)
    assert int(0.7 * 90) == 62


@pytest.mark.parametrize("n", [10, 11, 89, 90, 170, 1300, 3000, 12345])
def test_split_sizes_integer_arithmetic(n):
    n_train, end_val = split_bounds(n)
    assert (n_train, end_val - n_train) == (n * 7 // 10, n // 10)
    assert n - end_val >= 1


def test_split_refuses_too_few():
    with pytest.raises(InputError, match="too few"):
        split_bounds(9)


def test_layout_slices_cover_the_targets():
    assert (REG, WATCH, PAY) == (slice(0, 4), slice(4, 12), slice(12, 20))


def test_reported_kl_is_torch_batchmean_on_the_same_predictions(tmp_path):
    write_synthetic(tmp_path, *make_synthetic(200, seed=3))
    pitches = read_pitches(tmp_path / "pitches.csv", with_targets=True)
    features = read_features(tmp_path, pitches["index"].to_numpy())
    data = build_dataset(pitches, features, debias=True, standardize=True, device=torch.device("cpu"))
    torch.manual_seed(0)
    net = SalesNet(data.n_in, hidden=16, dropout=0.0, temperature=1.0)
    rows = data.part("test")
    got = evaluate(net, data, rows)
    with torch.no_grad():
        _, watch, pay = net.eval()(data.x(rows))
    y = data.y(rows)
    for name, sl, p in (("watch", WATCH, watch), ("pay", PAY, pay)):
        want = torch.nn.functional.kl_div(torch.log(p), y[:, sl], reduction="batchmean").item()
        assert got[f"kl_{name}_batchmean"] == pytest.approx(want, rel=1e-5)
        # N_SHARE times the per-share mean that the loss uses
        assert got[f"kl_{name}_batchmean"] == pytest.approx(N_SHARE * kl(y[:, sl], p).mean().item(), rel=1e-5)
    assert "kl_watch" not in got and "kl_pay" not in got


def test_scores_outside_1_to_5_are_found_and_named():
    index = np.array([10, 11, 12, 13])
    feats = {name: np.full((4, 8), 3.0) for name in ("entry", "action", "read", "state")}
    check_scores(feats, index, "f")  # all scores: nothing to say
    feats["entry"][1, 2] = 0.0
    feats["state"][3, 0] = np.nan
    feats["state"][3, 1] = 5.5
    assert incomplete(feats).tolist() == [False, True, False, True]
    with pytest.raises(InputError) as e:
        check_scores(feats, index, "f", "; hint")
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("f: 3 feature cell(s) outside 1..5") and msg.endswith("; hint")
    assert "in 2 of 4 pitches (entry.npy 1, state.npy 2)" in msg
    assert "pitch index 11 (row 2, entry.npy persona new_white = 0)" in msg
    assert "pitch index 13 (row 4, state.npy persona Z = nan)" in msg
