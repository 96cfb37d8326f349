"""Loss, KL, KL schedule and debias weight against values worked out by hand."""

import math

import pytest
import torch

from liveroom.train.loss import batch_loss, debias_weight, kl, kl_weight, per_sample_loss


def test_kl_by_hand():
    y = torch.tensor([[0.5, 0.5, 0, 0, 0, 0, 0, 0]], dtype=torch.float64)
    p = torch.full((1, 8), 1 / 8, dtype=torch.float64)
    # mean over 8 of y (log y - log(p + 1e-9)); the zero shares add 0
    want = 2 * 0.5 * (math.log(0.5) - math.log(1 / 8 + 1e-9)) / 8
    assert kl(y, p).item() == pytest.approx(want, rel=1e-12)
    assert kl(p, p).item() == pytest.approx(0.0, abs=1e-8)


def test_per_sample_loss_by_hand():
    y = torch.zeros(1, 20, dtype=torch.float64)
    y[0, :4] = torch.tensor([1.0, 2.0, 3.0, 4.0])
    y[0, 4] = 1.0                      # all viewers persona 0
    y[0, 12:20] = 1 / 8                # buyers uniform
    reg = torch.tensor([[1.0, 2.0, 3.0, 6.0]], dtype=torch.float64)  # MSE = 4 / 4 = 1
    watch = torch.full((1, 8), 1 / 8, dtype=torch.float64)
    pay = torch.full((1, 8), 1 / 8, dtype=torch.float64)
    kl_watch = (math.log(1.0) - math.log(1 / 8 + 1e-9)) / 8
    kl_pay = (math.log(1 / 8) - math.log(1 / 8 + 1e-9)) * (1 / 8)   # 8 * (1/8 * ...) / 8
    for w_kl in (1.0, 0.5, 0.0):
        got = per_sample_loss(reg, watch, pay, y, w_kl).item()
        assert got == pytest.approx(1.0 + w_kl * (kl_watch + kl_pay), rel=1e-12)


def test_debias_weight_by_hand_and_clamped():
    state = torch.full((3, 8), 3.0)
    action = torch.stack([torch.full((8,), 3.8), torch.full((8,), 1.0), torch.full((8,), 3.0)])
    action[2, :4] = 3.2  # mean difference 0.1
    w = debias_weight(action, state)
    torch.testing.assert_close(w, torch.tensor([0.75, 1.25, 0.9]))


def test_batch_loss_is_weighted_mean():
    assert batch_loss(torch.tensor([1.0, 3.0]), torch.tensor([0.5, 1.5])).item() == pytest.approx((0.5 + 4.5) / 2)


def test_kl_weight_schedules():
    assert [kl_weight(b, "reference") for b in (0, 1, 20, 39, 40, 100)] == pytest.approx([1, 0.975, 0.5, 0.025, 0, 0])
    assert {kl_weight(b, "constant") for b in range(100)} == {1.0}
