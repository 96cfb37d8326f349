"""The training objective, as in the reference.

Per sample: mean squared error over the 4 regression targets, plus
``w_kl * KL(watch) + w_kl * KL(pay)``, each KL the mean over the 8 shares of
``y * (log y - log(p + 1e-9))`` (``0 log 0 = 0``). The batch loss is the mean
of ``weight * loss`` with the causal-debias weight
``1 - clamp(mean_k(action - state), -0.25, 0.25)`` (or 1 without debiasing).

KL weight schedules, ``b`` the batch index within the epoch:

* ``reference``: ``w_kl = max(1 - 0.025 b, 0)``, so the share heads only learn
  in the first 40 batches of each epoch;
* ``constant`` (the default): ``w_kl = 1`` on every batch, so they keep learning.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..data.layout import PAY, REG, WATCH

EPS = 1e-9


def kl_weight(batch: int, schedule: str) -> float:
    """The KL weight of batch ``batch`` of an epoch under ``schedule``."""
    if schedule == "reference":
        return max(1.0 - 0.025 * batch, 0.0)
    return 1.0


def ylogy(y: Tensor) -> Tensor:
    """Sum of ``y log y`` over the last axis (0 where y = 0): KL's constant part."""
    return torch.special.xlogy(y, y).sum(-1)


def kl(y: Tensor, p: Tensor) -> Tensor:
    """Per-sample KL(y || p): mean over the shares of y (log y - log(p + 1e-9))."""
    return (torch.special.xlogy(y, y) - y * torch.log(p + EPS)).mean(-1)


def per_sample_loss(reg: Tensor, watch: Tensor, pay: Tensor, y: Tensor, w_kl: float) -> Tensor:
    """(B,) losses for predictions (B, 4), (B, 8), (B, 8) against targets y (B, 20)."""
    mse = ((reg - y[:, REG]) ** 2).mean(-1)
    return mse + w_kl * kl(y[:, WATCH], watch) + w_kl * kl(y[:, PAY], pay)


def debias_weight(action: Tensor, state: Tensor) -> Tensor:
    """(B,) weights ``1 - clamp(mean(action - state), -0.25, 0.25)`` from raw (B, 8) scores."""
    return 1.0 - torch.clamp((action - state).mean(-1), -0.25, 0.25)


def batch_loss(per_sample: Tensor, weight: Tensor) -> Tensor:
    """The weighted mean that the optimiser minimises."""
    return (weight * per_sample).mean()
