"""Evaluation of a split and the per-epoch ``metrics.csv``.

Per split: RMSE and MAE of the 4 regressions; KL of the watch and pay shares
as the reference reports it, torch's ``kl_div(..., reduction="batchmean")``:
the sum over the 8 shares, averaged over rows (8 times the per-share mean that
the loss uses), hence the column names ``kl_watch_batchmean`` and
``kl_pay_batchmean``; and the loss, the unweighted mean per-sample loss with
``w_kl = 1`` (what model selection uses).
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..data.layout import N_REG, PAY, REG, REGRESSION_TARGETS, WATCH
from .data import SPLITS, Dataset
from .loss import EPS, per_sample_loss
from .model import SalesNet

#: one epoch's row of metrics.csv: column name -> number (text when read back on resume)
Row = dict[str, Any]

#: the share metrics' names: KL summed over the shares, mean over rows
KL_METRICS = ("kl_watch_batchmean", "kl_pay_batchmean")


def kl_summed(y: Tensor, p: Tensor) -> Tensor:
    """Per-row KL(y || p) summed over the shares (``0 log 0 = 0``, p + 1e-9 as in the loss).

    Its mean over rows is ``torch.nn.functional.kl_div(log p, y, reduction="batchmean")``.
    """
    return (torch.special.xlogy(y, y) - y * torch.log(p + EPS)).sum(-1)


@torch.no_grad()
def evaluate(net: SalesNet, data: Dataset, rows: Tensor, chunk: int = 65536) -> dict[str, float]:
    """RMSE and MAE of the 4 regressions, KL (batchmean) of the shares, and loss on ``rows``."""
    net.eval()
    sq = torch.zeros(N_REG, device=rows.device)
    ab = torch.zeros(N_REG, device=rows.device)
    kls = torch.zeros(2, device=rows.device)
    loss = torch.zeros((), device=rows.device)
    for part in rows.split(chunk):
        x, y = data.x(part), data.y(part)
        reg, watch, pay = net(x)
        err = reg - y[:, REG]
        sq += (err * err).sum(0)
        ab += err.abs().sum(0)
        kls += torch.stack([kl_summed(y[:, WATCH], watch).sum(), kl_summed(y[:, PAY], pay).sum()])
        loss += per_sample_loss(reg, watch, pay, y, 1.0).sum()
    n = len(rows)
    out = {}
    for t, s, a in zip(REGRESSION_TARGETS, (sq / n).sqrt().tolist(), (ab / n).tolist()):
        out[f"rmse_{t}"], out[f"mae_{t}"] = s, a
    out.update(zip(KL_METRICS, (kls / n).tolist()))
    out["loss"] = loss.item() / n
    return out


def metric_names() -> list[str]:
    """The columns of metrics.csv, in order."""
    per_split = [f"{m}_{t}" for t in REGRESSION_TARGETS for m in ("rmse", "mae")] + [*KL_METRICS, "loss"]
    return ["epoch", "train_batch_loss", *(f"{s}_{m}" for s in SPLITS for m in per_split), "lr", "seconds"]


def evaluate_splits(net: SalesNet, data: Dataset) -> dict[str, float]:
    """:func:`evaluate` on every split, keys prefixed ``train_``, ``val_``, ``test_``."""
    return {f"{split}_{k}": v for split in SPLITS for k, v in evaluate(net, data, data.part(split)).items()}


def start_metrics(path: Path, keep: int) -> list[Row]:
    """Rewrite ``path`` with its first ``keep`` epochs (those a resumed run keeps); returns them."""
    history = read_metrics(path)[:keep] if keep else []
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, metric_names())
        w.writeheader()
        w.writerows(history)
    return history


def append_metrics(path: Path, row: Row) -> None:
    """One epoch's row, appended as soon as it is known."""
    with path.open("a", newline="") as f:
        csv.DictWriter(f, metric_names()).writerow(row)


def read_metrics(path: Path) -> list[Row]:
    if not path.exists():
        return []
    with path.open(newline="") as f:
        return list(csv.DictReader(f))
