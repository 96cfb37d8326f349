"""K networks trained at once: the fast step's math with a model axis.

:class:`KNets` holds K :class:`~liveroom.train.model.SalesNet` s as six
stacked parameters (trunk, heads' first layers, output layers; weights and
biases), each with a leading model axis, so one ``bmm`` does the work of K
small matrix products and one fused Adam updates every model. The forward
and backward are :class:`~liveroom.train.model.FastStep`'s, written with
that axis; per model there is its own temperature and KL weight, so the
default and the reference presets train side by side. Adam is elementwise,
so each model's update is the one it would get alone.

Models of fewer inputs (tabular only: 8 of 40) train beside the others with
their inputs and their trunk weights padded with zeros: a zero input adds
nothing to a product and gets a zero gradient, and Adam moves a weight with
zero gradients (and zero moments) by exactly zero, so the padding stays zero
and the model is the one it would be alone.

``tests/test_experiment_equal.py`` checks a step against ``FastStep`` model
by model.
"""

from __future__ import annotations

import functools

import torch
from torch import Tensor, nn

from ..data.layout import N_REG, N_SHARE
from ..train.loss import EPS, kl_weight
from ..train.model import SalesNet, linear

#: (trunk, first layers of the reg/watch/pay heads, their output layers), as stacked below
_HEADS = ("reg", "watch", "pay")


def _layers(net: SalesNet) -> tuple[list[nn.Linear], list[nn.Linear], list[nn.Linear]]:
    heads = [getattr(net, h) for h in _HEADS]
    return [linear(net.trunk, 0)], [linear(h, 0) for h in heads], [linear(h, 3) for h in heads]


class KNets:
    """K networks as stacked parameters ``(K, ...)``; :meth:`net` gives model ``k`` back as a SalesNet."""

    def __init__(self, params: list[Tensor], temperatures: Tensor, dropout: float,
                 n_ins: list[int] | None = None) -> None:
        self.params = [p if isinstance(p, nn.Parameter) else nn.Parameter(p) for p in params]
        self.W1, self.b1, self.Wh, self.bh, self.Wo, self.bo = self.params
        self.K, self.hidden, self.n_in = self.W1.shape   # n_in: the widest model's inputs
        self.n_ins = n_ins or [self.n_in] * self.K       # each model's own
        self.T = temperatures.to(self.W1.device).view(self.K, 1, 1, 1)   # per model
        self.dropout = dropout

    @classmethod
    def stack(cls, nets: list[SalesNet], dropout: float) -> KNets:
        """The nets' current weights, stacked (copied) in this order; ``dropout`` is theirs.

        Trunk weights of nets with fewer inputs are padded with zero columns to the widest.
        """
        n_ins = [linear(n.trunk, 0).in_features for n in nets]
        parts: list[Tensor] = []
        for which in range(3):
            for attr in ("weight", "bias"):
                parts.append(torch.stack([torch.cat([getattr(m, attr).detach() for m in _layers(n)[which]])
                                          for n in nets]) if (which, attr) != (0, "weight") else
                             torch.stack([nn.functional.pad(linear(n.trunk, 0).weight.detach(), (0, max(n_ins) - w))
                                          for n, w in zip(nets, n_ins)]))
        temps = torch.tensor([n.temperature for n in nets], dtype=torch.float32)
        return cls(parts, temps, dropout, n_ins)

    def net(self, k: int) -> SalesNet:
        """Model ``k`` as a SalesNet (copied weights, on the CPU)."""
        H = self.hidden
        n_in = self.n_ins[k]
        net = SalesNet(n_in, H, self.dropout, float(self.T[k]))
        trunk, first, last = _layers(net)
        sizes = ([H], [H] * 3, [N_REG, N_SHARE, N_SHARE])
        with torch.no_grad():
            for layers, size, W, b in zip((trunk, first, last), sizes, (self.W1[..., :n_in], self.Wh, self.Wo),
                                          (self.b1, self.bh, self.bo)):
                for m, w, bias in zip(layers, W[k].split(size), b[k].split(size)):
                    m.weight.copy_(w)
                    m.bias.copy_(bias)
        return net.cpu()

    def select(self, keep: list[int]) -> KNets:
        """The models ``keep`` (indices), as a new KNets of copies."""
        idx = torch.tensor(keep, device=self.W1.device)
        return KNets([p.detach()[idx].clone() for p in self.params], self.T.view(-1)[idx], self.dropout,
                     [self.n_ins[i] for i in keep])

    # -- training

    def mask_rows(self, rows: int, gens: list[torch.Generator]) -> Tensor | None:
        """Scaled dropout masks (K, rows, 4H), model k's from ``gens[k]``; None without dropout.

        Each model draws exactly what ``FastStep.masks(rows, ...)`` draws from its generator.
        """
        p = self.dropout
        if p == 0:
            return None
        m = torch.empty(self.K, rows, 4 * self.hidden, device=self.W1.device)
        for k, gen in enumerate(gens):
            m[k].bernoulli_(1 - p, generator=gen)
        return m.mul_(1 / (1 - p))

    def masks(self, batch: int, gens: list[torch.Generator]) -> tuple[Tensor, Tensor] | None:
        """One batch's masks (K, batch, H) and (K, batch, 3H), as :meth:`split_masks` gives them."""
        return self.split_masks(self.mask_rows(batch, gens))

    def split_masks(self, m: Tensor | None) -> tuple[Tensor, Tensor] | None:
        """(K, B, 4H) masks -> those of the trunk (K, B, H) and of the heads (K, B, 3H)."""
        return None if m is None else (m[..., :self.hidden], m[..., self.hidden:])

    def loss_and_grad(self, x: Tensor, y: Tensor, weight: Tensor, ylogy: Tensor, w_kl: Tensor,
                      masks: tuple[Tensor, Tensor] | None) -> Tensor:
        """(K,) batch losses; each parameter's ``.grad`` is set.

        x (K, B, n_in), y (K, B, 20), weight (K, B), ylogy (K, B, 2), w_kl (K, 1).
        """
        K, B, H, T = x.shape[0], x.shape[1], self.hidden, self.T
        W1, b1, Wh, bh, Wo, bo = (p.detach() for p in self.params)
        a1 = torch.relu(torch.baddbmm(b1.unsqueeze(1), x, W1.transpose(1, 2)))
        h1 = a1 if masks is None else a1 * masks[0]
        a2 = torch.relu(torch.baddbmm(bh.unsqueeze(1), h1, Wh.transpose(1, 2)))
        h2 = a2 if masks is None else a2 * masks[1]
        reg = torch.baddbmm(bo[:, None, :N_REG], h2[..., :H], Wo[:, :N_REG].transpose(1, 2))      # (K, B, 4)
        h2s = h2[..., H:].reshape(K, B, 2, H).transpose(1, 2)                                    # (K, 2, B, H)
        Ws = Wo[:, N_REG:].view(K, 2, N_SHARE, H)
        logits = torch.matmul(h2s, Ws.transpose(-1, -2)) + bo[:, N_REG:].view(K, 2, 1, N_SHARE)
        p = torch.softmax(logits / T, -1)                                                       # (K, 2, B, 8)
        ys = y[..., N_REG:].reshape(K, B, 2, N_SHARE).transpose(1, 2)
        q = p + EPS
        err = reg - y[..., :N_REG]
        kl = (ylogy.transpose(1, 2) - (ys * torch.log(q)).sum(-1)) / N_SHARE                   # (K, 2, B)
        loss = (weight * ((err * err).mean(-1) + w_kl * kl.sum(1))).mean(1)
        # backward
        c = weight / B
        d_reg = err * (c * (2 / N_REG)).unsqueeze(-1)
        d_p = ys * (c * (-w_kl / N_SHARE)).view(K, 1, B, 1) / q
        d_logits = p * (d_p - (d_p * p).sum(-1, keepdim=True)) / T
        self.Wo.grad = torch.cat([torch.bmm(d_reg.transpose(1, 2), h2[..., :H]),
                                  torch.matmul(d_logits.transpose(-1, -2), h2s).reshape(K, 2 * N_SHARE, H)], 1)
        self.bo.grad = torch.cat([d_reg.sum(1), d_logits.sum(2).reshape(K, 2 * N_SHARE)], 1)
        d_h2 = torch.cat([torch.bmm(d_reg, Wo[:, :N_REG]),
                          torch.matmul(d_logits, Ws).transpose(1, 2).reshape(K, B, 2 * H)], -1)
        if masks is not None:
            d_h2 = d_h2 * masks[1]
        d_z2 = torch.ops.aten.threshold_backward(d_h2, a2, 0)
        self.Wh.grad = torch.bmm(d_z2.transpose(1, 2), h1)
        self.bh.grad = d_z2.sum(1)
        d_h1 = torch.bmm(d_z2, Wh)
        if masks is not None:
            d_h1 = d_h1 * masks[0]
        d_z1 = torch.ops.aten.threshold_backward(d_h1, a1, 0)
        self.W1.grad = torch.bmm(d_z1.transpose(1, 2), x)
        self.b1.grad = d_z1.sum(1)
        return loss

    # -- evaluation

    @torch.no_grad()
    def predict(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Eval-mode outputs for x (K, B, n_in): regressions (K, B, 4) and shares (K, 2, B, 8)."""
        K, B, H = x.shape[0], x.shape[1], self.hidden
        W1, b1, Wh, bh, Wo, bo = (p.detach() for p in self.params)
        h1 = torch.relu(torch.baddbmm(b1.unsqueeze(1), x, W1.transpose(1, 2)))
        h2 = torch.relu(torch.baddbmm(bh.unsqueeze(1), h1, Wh.transpose(1, 2)))
        reg = torch.baddbmm(bo[:, None, :N_REG], h2[..., :H], Wo[:, :N_REG].transpose(1, 2))
        h2s = h2[..., H:].reshape(K, B, 2, H).transpose(1, 2)
        logits = torch.matmul(h2s, Wo[:, N_REG:].view(K, 2, N_SHARE, H).transpose(-1, -2))
        logits = logits + bo[:, N_REG:].view(K, 2, 1, N_SHARE)
        return reg, torch.softmax(logits / self.T, -1)


@functools.cache
def draws_concatenate(device: str, p: float, width: int, batch: int) -> bool:
    """Whether dropout masks drawn batch by batch equal one draw of all their rows, here.

    True for torch's own CPU sampler (one number per element, in order), so
    an epoch's masks can be drawn a few dozen batches at a time; not for
    samplers that seed each call (MKL's on Intel CPUs, CUDA's Philox
    offsets), where each batch is drawn on its own. The generator's state
    afterwards must agree too, as the next epoch's shuffle comes from it.
    """
    gens = [torch.Generator(device=device).manual_seed(0) for _ in range(2)]
    parts = [torch.empty(n, width, device=device).bernoulli_(1 - p, generator=gens[0]) for n in (batch, batch, 3)]
    whole = torch.empty(2 * batch + 3, width, device=device).bernoulli_(1 - p, generator=gens[1])
    return torch.equal(torch.cat(parts), whole) and torch.equal(gens[0].get_state(), gens[1].get_state())


def kl_weights(schedules: list[str], n_batches: int, device: torch.device) -> Tensor:
    """(n_batches, K, 1): each model's KL weight for every batch of an epoch."""
    w = [[kl_weight(b, s) for s in schedules] for b in range(n_batches)]
    return torch.tensor(w, dtype=torch.float32, device=device).unsqueeze(-1)
