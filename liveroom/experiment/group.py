"""A group: the models of one data size, trained one step at a time together.

The group holds its models' datasets stacked as ``(D, n, columns)`` (one per
distinct input set and sample weight: tabular only, the LLM inputs with and
without the debias weight, raw or standardised; narrower inputs padded with
zero columns to the widest, see :mod:`.kstep`), each model's index into them, its :class:`KNets`, one fused
Adam, the learning rate and each model's shuffle generator. An epoch draws
each model's permutation and dropout masks from its own generator in the
order ``bin/train`` does, so model k sees the batches it would see alone.
Stopped models leave the group (:meth:`Group.keep`), so they cost nothing
after their last epoch.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ..data.layout import N_REG, N_SHARE, N_TARGETS, REGRESSION_TARGETS
from ..train.data import SPLITS, Dataset
from ..train.loss import EPS
from ..train.metrics import KL_METRICS, Row
from .kstep import KNets, draws_concatenate, kl_weights

#: rows per model in one evaluation chunk (all K models at once: K x this many rows)
EVAL_ROWS = 1 << 16
#: batches whose dropout masks are drawn in one call, where that draws the same numbers
MASK_BATCHES = 64


@dataclass
class Member:
    """A model's place in a group: its name, its dataset, KL schedule and shuffle generator."""

    name: str
    data: Dataset
    kl_schedule: str
    gen: torch.Generator


class Group:
    """K models trained together; see the module doc."""

    def __init__(self, members: list[Member], nets: KNets, lr: float, gamma: float, batch_size: int,
                 opt_state: dict[str, Any] | None = None) -> None:
        self.members, self.nets, self.lr, self.gamma, self.batch_size = members, nets, lr, gamma, batch_size
        datasets: list[Dataset] = []
        for m in members:
            if not any(m.data is d for d in datasets):
                datasets.append(m.data)
        self.datasets = datasets
        device = nets.W1.device
        self.n_in, self.bounds = nets.n_in, datasets[0].bounds
        self.rows = torch.stack([_padded(d, self.n_in) for d in datasets])
        for i, d in enumerate(datasets):  # a dataset's rows become a view of the stack: one copy in memory
            if d.n_in == self.n_in:
                d.rows = self.rows[i]
        self.dk = torch.tensor([next(i for i, d in enumerate(datasets) if d is m.data) for m in members],
                               device=device)
        self.opt = torch.optim.Adam(nets.params, lr=lr, fused=True)
        if opt_state is not None:
            for p, exp_avg, exp_avg_sq in zip(nets.params, opt_state["exp_avg"], opt_state["exp_avg_sq"]):
                self.opt.state[p] = {"step": opt_state["step"].clone().to(device), "exp_avg": exp_avg.to(device),
                                     "exp_avg_sq": exp_avg_sq.to(device)}
        n_batches = math.ceil(self.bounds[0] / batch_size)
        self.w_kl = kl_weights([m.kl_schedule for m in members], n_batches, device)

    @property
    def names(self) -> list[str]:
        return [m.name for m in self.members]

    def epoch(self, epoch: int) -> list[Row]:
        """One pass over each model's shuffled training split, the LR decay, every split's metrics per model."""
        t0 = time.perf_counter()
        nets, B, n_in, K = self.nets, self.batch_size, self.n_in, len(self.members)
        n = self.bounds[0]
        train = self.rows[:, :n]
        gens = [m.gen for m in self.members]
        perms = torch.stack([torch.randperm(n, generator=g, device=train.device) for g in gens])
        lr = self.opt.param_groups[0]["lr"] = self.lr
        loss_sum = torch.zeros(K, device=train.device)
        n_batches = math.ceil(n / B)
        at_once = MASK_BATCHES if draws_concatenate(str(train.device), nets.dropout, 4 * nets.hidden, B) else 1
        drawn: Tensor | None = None
        for b in range(n_batches):
            batch = train[self.dk[:, None], perms[:, b * B:(b + 1) * B]]          # (K, B, columns)
            if b % at_once == 0:  # the next batches' dropout masks, drawn in one call per model
                drawn = nets.mask_rows(min(n, (b + at_once) * B) - b * B, gens)
            i = b % at_once * B
            masks = nets.split_masks(None if drawn is None else drawn[:, i:i + batch.shape[1]])
            loss_sum += nets.loss_and_grad(batch[..., :n_in], batch[..., n_in:n_in + N_TARGETS],
                                           batch[..., n_in + N_TARGETS], batch[..., n_in + N_TARGETS + 1:],
                                           self.w_kl[b], masks)
            self.opt.step()
        self.lr *= self.gamma  # as ExponentialLR does: one multiplication per epoch
        metrics = self.evaluate()
        seconds = (time.perf_counter() - t0) / K
        return [{"epoch": epoch, "train_batch_loss": loss / n_batches, **m, "lr": lr, "seconds": seconds}
                for loss, m in zip(loss_sum.tolist(), metrics)]

    @torch.no_grad()
    def evaluate(self) -> list[dict[str, float]]:
        """Per model, the metrics of :func:`liveroom.train.metrics.evaluate` on every split, prefixed."""
        K, n_in = len(self.members), self.n_in
        a, b = self.bounds
        ranges = dict(zip(SPLITS, ((0, a), (a, b), (b, self.rows.shape[1]))))
        out: list[dict[str, float]] = [{} for _ in range(K)]
        chunk = max(1024, EVAL_ROWS // K)
        for split, (lo, hi) in ranges.items():
            dev = self.rows.device
            sq, ab = torch.zeros(K, N_REG, device=dev), torch.zeros(K, N_REG, device=dev)
            kls, loss = torch.zeros(K, 2, device=dev), torch.zeros(K, device=dev)
            for start in range(lo, hi, chunk):
                part = self.rows[self.dk, start:min(hi, start + chunk)]              # (K, c, columns)
                c = part.shape[1]
                y = part[..., n_in:n_in + N_TARGETS]
                reg, p = self.nets.predict(part[..., :n_in])
                err = reg - y[..., :N_REG]
                ys = y[..., N_REG:].reshape(K, c, 2, N_SHARE).transpose(1, 2)
                kl = (torch.special.xlogy(ys, ys) - ys * torch.log(p + EPS)).sum(-1)  # (K, 2, c)
                sq += (err * err).sum(1)
                ab += err.abs().sum(1)
                kls += kl.sum(-1)
                loss += ((err * err).mean(-1) + kl.sum(1) / N_SHARE).sum(-1)
            rows = hi - lo
            for k in range(K):
                d = out[k]
                for t, s, e in zip(REGRESSION_TARGETS, (sq[k] / rows).sqrt().tolist(), (ab[k] / rows).tolist()):
                    d[f"{split}_rmse_{t}"], d[f"{split}_mae_{t}"] = s, e
                d.update((f"{split}_{m}", v) for m, v in zip(KL_METRICS, (kls[k] / rows).tolist()))
                d[f"{split}_loss"] = loss[k].item() / rows
        return out

    def keep(self, names: set[str]) -> Group | None:
        """The group of the models named (their state carried over), or None if none is left."""
        idx = [i for i, m in enumerate(self.members) if m.name in names]
        if len(idx) == len(self.members):
            return self
        if not idx:
            return None
        nets = self.nets.select(idx)
        state = self.opt_state(idx)
        for d in self.datasets:  # the new group stacks the datasets again
            if d.rows._base is not None:
                d.rows = d.rows.clone()
        return Group([self.members[i] for i in idx], nets, self.lr, self.gamma, self.batch_size, state)

    def opt_state(self, idx: list[int] | None = None) -> dict[str, Any]:
        """Adam's moments (of the models ``idx``, all by default) and its step count."""
        sel = slice(None) if idx is None else torch.tensor(idx, device=self.rows.device)
        states = [self.opt.state.get(p) for p in self.nets.params]
        if not states[0]:  # no step taken yet
            zeros = [torch.zeros_like(p.detach()[sel]) for p in self.nets.params]
            return {"step": torch.zeros((), dtype=torch.float32), "exp_avg": zeros,
                    "exp_avg_sq": [z.clone() for z in zeros]}
        return {"step": states[0]["step"].detach().clone(),
                "exp_avg": [s["exp_avg"][sel].clone() for s in states if s],
                "exp_avg_sq": [s["exp_avg_sq"][sel].clone() for s in states if s]}

    def state(self) -> dict[str, Any]:
        """What ``state.pt`` keeps of the group (CPU tensors and plain data)."""
        opt = self.opt_state()
        return {"names": self.names, "lr": self.lr,
                "params": [p.detach().cpu().clone() for p in self.nets.params],
                "step": opt["step"].cpu(), "exp_avg": [t.cpu() for t in opt["exp_avg"]],
                "exp_avg_sq": [t.cpu() for t in opt["exp_avg_sq"]],
                "rng": [m.gen.get_state() for m in self.members]}


def _padded(data: Dataset, width: int) -> torch.Tensor:
    """The dataset's rows with zero input columns added up to ``width`` inputs."""
    if data.n_in == width:
        return data.rows
    zeros = data.rows.new_zeros(len(data.rows), width - data.n_in)
    return torch.cat([data.rows[:, :data.n_in], zeros, data.rows[:, data.n_in:]], 1)
