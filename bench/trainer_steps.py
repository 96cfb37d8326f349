"""Table 2 of the trainer benchmark: ways of taking training steps at batch 16 on one thread.

Eager autograd with the three Adam implementations, torch.compile (several ways), the
project's fast step, and K models trained at once, each measured the same way
(:func:`step_variants`). Used by ``bench/bench_trainer.py``.
"""

from __future__ import annotations

import copy
import statistics
import sys
import time
from typing import Callable

import torch
from torch import Tensor, nn
from torch._dynamo.utils import counters

from liveroom.data.layout import N_REG, N_SHARE
from liveroom.train.data import Dataset
from liveroom.train.loss import EPS, batch_loss, per_sample_loss
from liveroom.train.model import FastStep, SalesNet

B = 16
LR = 1e-2


class KFastStep:
    """K SalesNets of one shape trained at once: :class:`FastStep`'s hand-written forward and
    backward with a leading model axis (bmm / batched matmul), one fused Adam over the stacked weights."""

    def __init__(self, nets: list[SalesNet]):
        self.K, self.hidden, self.T = len(nets), nets[0].trunk[0].out_features, nets[0].temperature

        def stack(get: Callable[[SalesNet], list[Tensor]]) -> nn.Parameter:
            return nn.Parameter(torch.stack([torch.cat([t.detach() for t in get(n)]) for n in nets]))

        self.W1 = stack(lambda n: [n.trunk[0].weight])                                  # (K, H, n_in)
        self.b1 = stack(lambda n: [n.trunk[0].bias])                                    # (K, H)
        self.Wh = stack(lambda n: [n.reg[0].weight, n.watch[0].weight, n.pay[0].weight])  # (K, 3H, H)
        self.bh = stack(lambda n: [n.reg[0].bias, n.watch[0].bias, n.pay[0].bias])        # (K, 3H)
        self.Wo = stack(lambda n: [n.reg[3].weight, n.watch[3].weight, n.pay[3].weight])  # (K, 20, H)
        self.bo = stack(lambda n: [n.reg[3].bias, n.watch[3].bias, n.pay[3].bias])        # (K, 20)
        self.params = [self.W1, self.b1, self.Wh, self.bh, self.Wo, self.bo]

    def masks(self, batch: int, p: float) -> tuple[Tensor, Tensor] | None:
        if p == 0:
            return None
        H = self.hidden
        m = torch.empty(self.K, batch, 4 * H).bernoulli_(1 - p).mul_(1 / (1 - p))
        return m[..., :H], m[..., H:]

    def loss_and_grad(self, x: Tensor, y: Tensor, weight: Tensor, ylogy: Tensor, w_kl: float,
                      masks: tuple[Tensor, Tensor] | None) -> Tensor:
        """(K,) batch losses; gradients go to each parameter's ``.grad``. x (K, B, n_in), y (K, B, 20)."""
        K, Bn, H, T = x.shape[0], x.shape[1], self.hidden, self.T
        Wo, bo = self.Wo.detach(), self.bo.detach()
        a1 = torch.relu(torch.baddbmm(self.b1.detach().unsqueeze(1), x, self.W1.detach().transpose(1, 2)))
        h1 = a1 if masks is None else a1 * masks[0]
        a2 = torch.relu(torch.baddbmm(self.bh.detach().unsqueeze(1), h1, self.Wh.detach().transpose(1, 2)))
        h2 = a2 if masks is None else a2 * masks[1]
        reg = torch.baddbmm(bo[:, None, :N_REG], h2[..., :H], Wo[:, :N_REG].transpose(1, 2))        # (K, B, 4)
        h2s = h2[..., H:].view(K, Bn, 2, H).transpose(1, 2)                                         # (K, 2, B, H)
        Ws = Wo[:, N_REG:].view(K, 2, N_SHARE, H)
        logits = torch.matmul(h2s, Ws.transpose(-1, -2)) + bo[:, N_REG:].view(K, 2, 1, N_SHARE)
        p = torch.softmax(logits / T, -1)                                                          # (K, 2, B, 8)
        ys = y[..., N_REG:].view(K, Bn, 2, N_SHARE).transpose(1, 2)
        q = p + EPS
        err = reg - y[..., :N_REG]
        kl = (ylogy.transpose(1, 2) - (ys * torch.log(q)).sum(-1)) / N_SHARE                      # (K, 2, B)
        loss = (weight * ((err * err).mean(-1) + w_kl * kl.sum(1))).mean(1)
        c = weight / Bn
        d_reg = err * (c * (2 / N_REG)).unsqueeze(-1)
        d_p = ys * (c * (-w_kl / N_SHARE)).view(K, 1, Bn, 1) / q
        d_logits = p * (d_p - (d_p * p).sum(-1, keepdim=True)) / T
        self.Wo.grad = torch.cat([torch.bmm(d_reg.transpose(1, 2), h2[..., :H]),
                                  torch.matmul(d_logits.transpose(-1, -2), h2s).reshape(K, 2 * N_SHARE, H)], 1)
        self.bo.grad = torch.cat([d_reg.sum(1), d_logits.sum(2).reshape(K, 2 * N_SHARE)], 1)
        d_h2 = torch.cat([torch.bmm(d_reg, Wo[:, :N_REG]),
                          torch.matmul(d_logits, Ws).transpose(1, 2).reshape(K, Bn, 2 * H)], -1)
        if masks is not None:
            d_h2 = d_h2 * masks[1]
        d_z2 = torch.ops.aten.threshold_backward(d_h2, a2, 0)
        self.Wh.grad = torch.bmm(d_z2.transpose(1, 2), h1)
        self.bh.grad = d_z2.sum(1)
        d_h1 = torch.bmm(d_z2, self.Wh.detach())
        if masks is not None:
            d_h1 = d_h1 * masks[0]
        d_z1 = torch.ops.aten.threshold_backward(d_h1, a1, 0)
        self.W1.grad = torch.bmm(d_z1.transpose(1, 2), x)
        self.b1.grad = d_z1.sum(1)
        return loss


def check_kfast(data: Dataset) -> float:
    """KFastStep against FastStep, model by model (no dropout); largest relative error of loss and gradients."""
    torch.manual_seed(1)
    nets = [SalesNet(data.n_in, 64, 0.1, 1.0) for _ in range(3)]
    kf = KFastStep(nets)
    rows = data.part("train")
    batches = torch.stack([rows[i * B:(i + 1) * B] for i in range(3)])
    n = data.n_in
    kloss = kf.loss_and_grad(batches[..., :n], batches[..., n:n + 20], batches[..., n + 20], batches[..., n + 21:],
                             1.0, None)
    worst = 0.0
    for k, net in enumerate(nets):
        fs = FastStep(copy.deepcopy(net))
        b = batches[k]
        loss = fs.loss_and_grad(data.x(b), data.y(b), data.weight(b), data.ylogy(b), 1.0, None)
        pairs = [(kloss[k], loss), (kf.W1.grad[k], fs.gW1), (kf.b1.grad[k], fs.gb1), (kf.Wh.grad[k], fs.gWh),
                 (kf.bh.grad[k], fs.gbh), (kf.Wo.grad[k], fs.gWo), (kf.bo.grad[k], fs.gbo)]
        for a, e in pairs:
            worst = max(worst, float((a - e).abs().max() / e.abs().max().clamp_min(1e-12)))
    if worst > 1e-4:
        raise AssertionError(f"KFastStep disagrees with FastStep: relative error {worst:.2e}")
    return worst


def error_line(e: BaseException) -> str:
    first = next((ln for ln in str(e).splitlines() if ln.strip()), "")
    return f"{type(e).__name__}: {first[:200]}"


def run_steps(step: Callable[[int], Tensor], first: int, n: int, losses: list[Tensor]) -> float:
    """Steps ``first`` .. ``first + n - 1``; their losses go to ``losses``; seconds taken."""
    t = time.perf_counter()
    for s in range(first, first + n):
        losses.append(step(s).detach())
    return time.perf_counter() - t


def summarise(r: dict, losses: list[Tensor], warm: int) -> None:
    """Median ms/step, compile + warm-up overhead and the loss trend, into ``r``."""
    curve = torch.stack(losses).float()
    k = min(100, max(1, len(losses) // 4))
    r["ms"] = statistics.median(r["runs"])
    r.update(overhead_s=r["warm_s"] - warm * r["ms"] / 1e3, loss0=curve[:k].mean().item(),
             loss1=curve[-k:].mean().item(), k=k, finite=bool(torch.isfinite(curve).all()))


def step_variants(data: Dataset, warm: int, steps: int, repeats: int, ks: tuple[int, ...], compile_: bool,
                  log=sys.stderr) -> list[dict]:
    """Every way of taking training steps at batch 16 on one thread, each measured the same way."""
    rows = data.part("train")
    n = data.n_in
    total = warm + steps * repeats
    wrap = min(len(rows) // B, total)  # distinct full batches used; steps wrap around after that

    def shuffled(k: int, seed: int) -> Tensor:
        """(k, wrap * B, cols): k independent shuffles of the training rows (k = 0: one, no model axis)."""
        g = torch.Generator().manual_seed(seed)
        idx = torch.stack([torch.randperm(len(rows), generator=g)[:wrap * B] for _ in range(max(k, 1))])
        return rows[idx] if k else rows[idx[0]]

    def split(batch: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        return batch[..., :n], batch[..., n:n + 20], batch[..., n + 20], batch[..., n + 21:]

    def single(make_opt: Callable[[SalesNet], torch.optim.Optimizer], wrap_loss=None, wrap_step=None):
        torch.manual_seed(0)
        net = SalesNet(n, 64, 0.1, 1.0)
        opt = make_opt(net)
        sh = shuffled(0, 0)

        def loss_fn(x, y, w):
            return batch_loss(per_sample_loss(*net(x), y, 1.0), w)

        lf = wrap_loss(net, loss_fn) if wrap_loss else loss_fn
        ostep = wrap_step(opt) if wrap_step else opt.step

        def step(s: int) -> Tensor:
            x, y, w, _ = split(sh[s % wrap * B:(s % wrap + 1) * B])
            opt.zero_grad()
            loss = lf(x, y, w)
            loss.backward()
            ostep()
            return loss
        return step

    def compiled_model(net, loss_fn):
        cnet = torch.compile(net)
        return lambda x, y, w: batch_loss(per_sample_loss(*cnet(x), y, 1.0), w)

    def compiled_whole():
        torch.manual_seed(0)
        net = SalesNet(n, 64, 0.1, 1.0)
        opt = torch.optim.Adam(net.parameters(), lr=LR)
        sh = shuffled(0, 0)

        def whole(x, y, w):  # zero_grad stays outside: Dynamo will not trace it (a graph break)
            loss = batch_loss(per_sample_loss(*net(x), y, 1.0), w)
            out = loss.detach()  # returning the loss itself after backward breaks the graph
            loss.backward()
            opt.step()
            return out
        cw = torch.compile(whole)

        def step(s: int) -> Tensor:
            x, y, w, _ = split(sh[s % wrap * B:(s % wrap + 1) * B])
            opt.zero_grad()
            with torch._dynamo.config.patch(compiled_autograd=True, trace_autograd_ops=True):
                return cw(x, y, w)
        return step

    def fast():
        torch.manual_seed(0)
        fs = FastStep(SalesNet(n, 64, 0.1, 1.0))
        opt = torch.optim.Adam([fs.flat], lr=LR, fused=True)
        g = torch.Generator().manual_seed(0)
        sh = shuffled(0, 0)

        def step(s: int) -> Tensor:
            x, y, w, yl = split(sh[s % wrap * B:(s % wrap + 1) * B])
            loss = fs.loss_and_grad(x, y, w, yl, 1.0, fs.masks(B, 0.1, g))
            opt.step()
            return loss
        return step

    def vmapped(K: int, use_grad: bool):
        from torch.func import functional_call, grad_and_value, stack_module_state, vmap
        torch.manual_seed(0)
        nets = [SalesNet(n, 64, 0.1, 1.0) for _ in range(K)]
        params, buffers = stack_module_state(nets)
        base = copy.deepcopy(nets[0]).to("meta")
        plist = list(params.values())
        opt = torch.optim.Adam(plist, lr=LR, fused=True)
        sh = shuffled(K, 1)

        def one(p, bufs, x, y, w):
            return batch_loss(per_sample_loss(*functional_call(base, (p, bufs), (x,)), y, 1.0), w)

        gv = vmap(grad_and_value(one), randomness="different")
        fwd = vmap(one, randomness="different")

        def step(s: int) -> Tensor:
            x, y, w, _ = split(sh[:, s % wrap * B:(s % wrap + 1) * B])
            if use_grad:
                grads, loss = gv(params, buffers, x, y, w)
                for name, p in params.items():
                    p.grad = grads[name]
            else:
                opt.zero_grad()
                loss = fwd(params, buffers, x, y, w)
                loss.sum().backward()
            opt.step()
            return loss.mean()
        return step

    def kfast(K: int):
        torch.manual_seed(0)
        kf = KFastStep([SalesNet(n, 64, 0.1, 1.0) for _ in range(K)])
        opt = torch.optim.Adam(kf.params, lr=LR, fused=True)
        sh = shuffled(K, 1)

        def step(s: int) -> Tensor:
            x, y, w, yl = split(sh[:, s % wrap * B:(s % wrap + 1) * B])
            loss = kf.loss_and_grad(x, y, w, yl, 1.0, kf.masks(B, 0.1))
            opt.step()
            return loss.mean()
        return step

    adam = torch.optim.Adam
    variants: list[tuple[str, int, Callable[[], Callable[[int], Tensor]] | str]] = [
        ("eager nn.Module + autograd + `Adam()` (default; on CPU that is the per-tensor for-loop, foreach is "
         "only the default on CUDA)", 1, lambda: single(lambda net: adam(net.parameters(), lr=LR))),
        ("eager + `Adam(foreach=True)`", 1, lambda: single(lambda net: adam(net.parameters(), lr=LR, foreach=True))),
        ("eager + `Adam(fused=True)`", 1, lambda: single(lambda net: adam(net.parameters(), lr=LR, fused=True))),
    ]
    compiled = [
        ("`torch.compile(model)`, eager loss + backward, `Adam(fused=True)`", 1,
         lambda: single(lambda net: adam(net.parameters(), lr=LR, fused=True), wrap_loss=compiled_model)),
        ("`torch.compile` of forward + loss (one graph, AOT backward), `Adam(fused=True)`", 1,
         lambda: single(lambda net: adam(net.parameters(), lr=LR, fused=True),
                        wrap_loss=lambda net, lf: torch.compile(lf))),
        ("`torch.compile` of forward + loss, and of `opt.step()` (`Adam()`, compiled optimizer)", 1,
         lambda: single(lambda net: adam(net.parameters(), lr=LR), wrap_loss=lambda net, lf: torch.compile(lf),
                        wrap_step=lambda opt: torch.compile(opt.step))),
        ("`torch.compile` of the whole step (forward, loss, `backward()`, `Adam()` step; compiled autograd, "
         "`trace_autograd_ops`)", 1, compiled_whole),
    ]
    variants += compiled if compile_ else [(name, 1, "skipped (--quick)") for name, _, _ in compiled]
    variants.append(("project's fast step (`FastStep`: hand-written forward/backward) + fused Adam", 1, fast))
    for K in ks:
        variants.append((f"{K} models at once, torch.func: `vmap(grad_and_value(functional_call))` over "
                         f"`stack_module_state`, fused Adam over the stacked weights", K,
                         lambda K=K: vmapped(K, True)))
    variants.append((f"{ks[-1]} models at once, torch.func: `vmap(functional_call)` loss, autograd `.backward()` "
                     f"of the sum, fused Adam", ks[-1], lambda: vmapped(ks[-1], False)))
    for K in ks:
        variants.append((f"{K} models at once, the fast step's math batched over models by hand (bmm), fused Adam",
                         K, lambda K=K: kfast(K)))

    # every way is built and warmed up first; then the timed repeats go round all of them in turn, so a
    # change in the (shared) machine's load falls on every row alike
    out, live = [], []
    for name, K, make in variants:
        r: dict = {"name": name, "K": K, "runs": [], "graphs": 0, "breaks": 0}
        out.append(r)
        if isinstance(make, str):
            r["error"] = make
            continue
        counters.clear()
        losses: list[Tensor] = []
        try:
            step = make()
            r["warm_s"] = run_steps(step, 0, warm, losses)
            live.append((r, step, losses))
        except Exception as e:  # a way that does not run here is reported, not fatal
            r["error"] = error_line(e)
        r["graphs"] = counters["stats"]["unique_graphs"]
        r["breaks"] = sum(counters["graph_break"].values())
        print(f"  built {name[:70]:70s} " + (r["error"] if "error" in r else f"warm-up {r['warm_s']:.1f} s")
              + (f", {r['graphs']} graph(s), {r['breaks']} graph break(s)" if r["graphs"] else ""),
              file=log, flush=True)
    for rep in range(repeats):
        for r, step, losses in live:
            if "error" in r:
                continue
            try:
                r["runs"].append(run_steps(step, warm + rep * steps, steps, losses) / steps * 1e3)
            except Exception as e:
                r["error"] = error_line(e)
        print(f"  round {rep + 1} of {repeats} done", file=log, flush=True)
    for r, step, losses in live:
        if "error" in r:
            continue
        summarise(r, losses, warm)
        print(f"  {r['name'][:70]:70s} {r['ms']:.3f} ms/step (runs {', '.join(f'{x:.3f}' for x in r['runs'])}), "
              f"loss {r['loss0']:.3f} -> {r['loss1']:.3f}", file=log, flush=True)
    return out
