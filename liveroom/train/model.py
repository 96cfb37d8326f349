"""The network, and a fast training step with the same numerics.

:class:`SalesNet` is the reference's network written plainly: a trunk
Linear(in -> H), ReLU, Dropout and three heads Linear(H -> H), ReLU, Dropout,
Linear(H -> k) for the 4 regressions and the 8 watch and 8 pay shares (logits
/ T, softmax).

At batch 16 the eager step is all per-op overhead, so training uses
:class:`FastStep`: the net's parameters are re-pointed to views of one flat
tensor, ordered so that the three heads' first layers are one (3H x H) matrix
and the watch and pay output layers one (2 x 8 x H) batch; the forward and
backward are written out by hand (about 45 tensor ops instead of ~150) and
write the gradients straight into the flat gradient, so one fused Adam kernel
updates everything. ``tests/test_train_model.py`` checks it against autograd.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ..data.layout import N_REG, N_SHARE
from .loss import EPS


def _head(hidden: int, k: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(nn.Linear(hidden, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, k))


def linear(seq: nn.Sequential, i: int) -> nn.Linear:
    """Layer ``i`` of a trunk or head, typed (the state dict keeps the Sequential's names)."""
    layer = seq[i]
    assert isinstance(layer, nn.Linear)
    return layer


class SalesNet(nn.Module):
    def __init__(self, n_in: int, hidden: int = 64, dropout: float = 0.1, temperature: float = 500.0) -> None:
        super().__init__()
        self.temperature = temperature
        self.trunk = nn.Sequential(nn.Linear(n_in, hidden), nn.ReLU(), nn.Dropout(dropout))
        self.reg = _head(hidden, N_REG, dropout)
        self.watch = _head(hidden, N_SHARE, dropout)
        self.pay = _head(hidden, N_SHARE, dropout)

    def forward(self, x: Tensor, masks: tuple[Tensor, Tensor] | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """(regressions (B, 4), watch shares (B, 8), pay shares (B, 8)).

        ``masks`` (scaled dropout masks (B, H) and (B, 3H)) replace the
        Dropout layers, so a test can compare with :class:`FastStep`.
        """
        if masks is None:
            h = self.trunk(x)
            heads = [self.reg(h), self.watch(h), self.pay(h)]
        else:
            h = torch.relu(linear(self.trunk, 0)(x)) * masks[0]
            m = masks[1].chunk(3, dim=1)
            heads = [linear(hd, 3)(torch.relu(linear(hd, 0)(h)) * mi)
                     for hd, mi in zip((self.reg, self.watch, self.pay), m)]
        reg, watch, pay = heads
        return reg, torch.softmax(watch / self.temperature, -1), torch.softmax(pay / self.temperature, -1)


class FastStep:
    """Hand-written forward + backward of ``SalesNet`` and the training loss.

    ``flat`` is the single parameter the optimiser sees; the net's own
    parameters are views of it (so ``net.state_dict()``, evaluation and
    ``load_state_dict`` all keep working) and ``flat.grad`` is filled by
    :meth:`loss_and_grad`.
    """

    def __init__(self, net: SalesNet) -> None:
        self.net = net
        t = linear(net.trunk, 0)
        first = [linear(hd, 0) for hd in (net.reg, net.watch, net.pay)]
        last = [linear(hd, 3) for hd in (net.reg, net.watch, net.pay)]
        H, n_in = t.out_features, t.in_features
        self.hidden = H
        # flat order: W1 | W of the heads' first layers | b1 | their biases | W out | b out
        order = [(m, a) for a in ("weight", "bias") for m in (t, *first)]
        order += [(m, a) for a in ("weight", "bias") for m in last]
        self.flat = nn.Parameter(torch.cat([getattr(m, a).detach().reshape(-1) for m, a in order]))
        grad = self.flat.grad = torch.zeros_like(self.flat)
        offset = 0
        for m, a in order:  # the net's parameters become views of flat
            shape = getattr(m, a).shape
            n = shape.numel()
            setattr(m, a, nn.Parameter(self.flat.data[offset:offset + n].view(shape)))
            offset += n
        k = N_REG + 2 * N_SHARE
        shapes = [(H, n_in), (3 * H, H), (H,), (3 * H,), (k, H), (k,)]  # parameter and gradient views by group

        def groups(buf: Tensor) -> list[Tensor]:
            parts = buf.split([math.prod(s) for s in shapes])
            return [p.view(s) for p, s in zip(parts, shapes)]

        self.W1, self.Wh, self.b1, self.bh, self.Wo, self.bo = groups(self.flat.data)
        self.gW1, self.gWh, self.gb1, self.gbh, self.gWo, self.gbo = groups(grad)

    def masks(self, batch: int, p: float, generator: torch.Generator | None) -> tuple[Tensor, Tensor] | None:
        """Scaled dropout masks for one batch (None when p = 0), drawn like nn.Dropout."""
        if p == 0:
            return None
        H, dev = self.hidden, self.flat.device
        m = torch.empty(batch, 4 * H, device=dev).bernoulli_(1 - p, generator=generator).mul_(1 / (1 - p))
        return m[:, :H], m[:, H:]

    def loss_and_grad(self, x: Tensor, y: Tensor, weight: Tensor, ylogy: Tensor, w_kl: float,
                      masks: tuple[Tensor, Tensor] | None) -> Tensor:
        """Batch loss (0-dim tensor, no sync) and its gradient written into ``flat.grad``.

        ``weight`` (B,) is the debias weight, ``ylogy`` (B, 2) the constant
        sum of y log y of the watch and pay shares (see :mod:`.loss`).
        """
        B, H, T = x.shape[0], self.hidden, self.net.temperature
        Wo, bo = self.Wo, self.bo
        # forward
        a1 = torch.relu(torch.addmm(self.b1, x, self.W1.t()))
        h1 = a1 if masks is None else a1 * masks[0]
        a2 = torch.relu(torch.addmm(self.bh, h1, self.Wh.t()))
        h2 = a2 if masks is None else a2 * masks[1]
        reg = torch.addmm(bo[:N_REG], h2[:, :H], Wo[:N_REG].t())
        h2s = h2[:, H:].view(B, 2, H).transpose(0, 1)                       # (2, B, H) watch, pay
        Ws = Wo[N_REG:].view(2, N_SHARE, H)
        logits = torch.baddbmm(bo[N_REG:].view(2, 1, N_SHARE), h2s, Ws.transpose(1, 2))
        p = torch.softmax(logits / T, -1)                                    # (2, B, 8)
        ys = y[:, N_REG:].view(B, 2, N_SHARE).transpose(0, 1)
        q = p + EPS
        err = reg - y[:, :N_REG]
        kl = (ylogy.t() - (ys * torch.log(q)).sum(-1)) / N_SHARE          # (2, B)
        per_sample = (err * err).mean(1) + w_kl * kl.sum(0)
        loss = (weight * per_sample).mean()
        # backward
        c = weight / B
        d_reg = err * (c * (2 / N_REG)).unsqueeze(1)
        d_p = ys * (c * (-w_kl / N_SHARE)).view(1, B, 1) / q
        d_logits = p * (d_p - (d_p * p).sum(-1, keepdim=True)) / T        # softmax backward
        torch.mm(d_reg.t(), h2[:, :H], out=self.gWo[:N_REG])
        torch.sum(d_reg, 0, out=self.gbo[:N_REG])
        torch.bmm(d_logits.transpose(1, 2), h2s, out=self.gWo[N_REG:].view(2, N_SHARE, H))
        torch.sum(d_logits, 1, out=self.gbo[N_REG:].view(2, N_SHARE))
        d_h2 = torch.cat([d_reg @ Wo[:N_REG], torch.bmm(d_logits, Ws).transpose(0, 1).reshape(B, 2 * H)], 1)
        if masks is not None:
            d_h2 = d_h2 * masks[1]
        d_z2 = torch.ops.aten.threshold_backward(d_h2, a2, 0)
        torch.mm(d_z2.t(), h1, out=self.gWh)
        torch.sum(d_z2, 0, out=self.gbh)
        d_h1 = d_z2 @ self.Wh
        if masks is not None:
            d_h1 = d_h1 * masks[0]
        d_z1 = torch.ops.aten.threshold_backward(d_h1, a1, 0)
        torch.mm(d_z1.t(), x, out=self.gW1)
        torch.sum(d_z1, 0, out=self.gb1)
        return loss
