"""Trainer speed on one CPU thread, every table of the benchmark issue in one run.

1. Seconds per epoch at 20k and 200k synthetic pitches, batch 16: the whole
   ``bin/train --epochs 1`` command against a per-row baseline written the
   reference's way (a Dataset doing ``df.iloc[idx]`` and column-list lookups,
   a DataLoader of batch 16, eager SalesNet + Adam), both full epochs, same run.
2. Ways past the per-step overhead at batch 16: eager autograd with the three
   Adam implementations, torch.compile (several ways), the project's fast step,
   and K models trained at once (torch.func vmap, and the fast step's math
   batched over models), as ms per step and seconds per model-epoch.
3. GPU (with ``--device cuda:0`` on a machine with CUDA): ``bin/train --device
   cuda:0 --epochs 1`` on 1M synthetic pitches.

    OMP_NUM_THREADS=1 python bench/bench_trainer.py [--device cuda:0] [--write-docs]
    OMP_NUM_THREADS=1 python bench/bench_trainer.py --quick      # smoke run, small data, writes nothing

Prints markdown; ``--write-docs`` also puts it under "## Trainer" in
docs/BENCHMARKS.md (other sections are left as they are). Data sets are made
once under runs/ (``make_synthetic(n, seed=0)``) and reused.
"""

from __future__ import annotations

import argparse
import copy
import datetime as dt
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

os.environ.setdefault("OMP_NUM_THREADS", "1")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402
from torch import Tensor, nn  # noqa: E402
from torch._dynamo.utils import counters  # noqa: E402

from liveroom.data.layout import N_REG, N_SHARE, TARGET_COLUMNS, input_names  # noqa: E402
from liveroom.data.personas import PERSONA_KEYS  # noqa: E402
from liveroom.synthetic import make_synthetic, write_synthetic  # noqa: E402
from liveroom.train.data import Dataset, build_dataset, read_features, read_pitches  # noqa: E402
from liveroom.train.loss import EPS, batch_loss, kl_weight, per_sample_loss  # noqa: E402
from liveroom.train.model import FastStep, SalesNet  # noqa: E402

REFERENCE_EPOCH_S = {20_000: 37.0, 200_000: 395.0}  # the reference on this machine (issue), batch 16, one epoch
B = 16
LR = 1e-2
COMMAND = "OMP_NUM_THREADS=1 python bench/bench_trainer.py --write-docs"


# --------------------------------------------------------------------------- machine and data

def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def load_avg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def stamp() -> dict:
    """When and where a table was measured."""
    return {"date": dt.datetime.now().strftime("%Y-%m-%d %H:%M"), "load": load_avg()}


def ensure_data(d: Path, n: int) -> float:
    """Make ``make_synthetic(n, seed=0)`` under ``d`` unless it is there; seconds taken (nan if reused)."""
    if (d / "pitches.csv").exists() and (d / "index.npy").exists() and len(np.load(d / "index.npy")) == n:
        return float("nan")
    t = time.perf_counter()
    write_synthetic(d, *make_synthetic(n, seed=0))
    return time.perf_counter() - t


def rel(p: Path) -> str:
    return str(p).replace(str(ROOT) + "/", "")


def time_command(d: Path, out: Path, device: str = "cpu") -> dict:
    """Wall time of ``bin/train --epochs 1``, its load_seconds and its epoch's ``seconds``."""
    cmd = [sys.executable, str(ROOT / "bin" / "train"), "--pitches", str(d / "pitches.csv"), "--features", str(d),
           "--out", str(out), "--epochs", "1"]
    if device != "cpu":
        cmd += ["--device", device]
    t = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    wall = time.perf_counter() - t
    if r.returncode:
        sys.exit(f"{' '.join(cmd)} failed:\n{r.stderr}")
    summary = json.loads((out / "summary.json").read_text())
    epoch_s = float(pd.read_csv(out / "metrics.csv")["seconds"].iloc[0])
    return {"wall": wall, "load": summary["load_seconds"], "epoch": epoch_s,
            "command": "python " + " ".join(rel(Path(c)) if c.startswith("/") else c for c in cmd[1:])}


# --------------------------------------------------------------------------- the per-row baseline

class RowDataset(torch.utils.data.Dataset):
    """The reference's way: one pandas row per item, columns looked up by name lists."""

    def __init__(self, df: pd.DataFrame):
        self.df = df
        self.x_cols = input_names(True)
        self.y_cols = list(TARGET_COLUMNS)
        self.action_cols = [c for c in self.x_cols if c.startswith("action_")]
        self.state_cols = [c for c in self.x_cols if c.startswith("state_")]

    def __len__(self) -> int:
        return len(self.df)

    def __getitem__(self, idx: int):
        row = self.df.iloc[idx]
        x = torch.tensor(row[self.x_cols].to_numpy(np.float32))
        y = torch.tensor(row[self.y_cols].to_numpy(np.float32))
        u = torch.tensor(row[self.action_cols].to_numpy(np.float32) - row[self.state_cols].to_numpy(np.float32))
        return x, y, u


def per_row_baseline(d: Path, max_batches: int | None = None) -> dict:
    """One full epoch (or ``max_batches``) of the per-row pipeline on the training 70 % of the set in ``d``.

    Reference preset: raw inputs, T = 500, KL weight max(1 - 0.025 b, 0), debias weight from action - state.
    """
    t0 = time.perf_counter()
    pitches = read_pitches(d / "pitches.csv", with_targets=True)
    feats = read_features(d, pitches["index"].to_numpy())
    cols = {f"{name}_{persona}": a[:, k] for name, a in feats.items() for k, persona in enumerate(PERSONA_KEYS)}
    df = pd.concat([pitches, pd.DataFrame(cols, index=pitches.index)], axis=1)
    train = df.iloc[:int(0.7 * len(df))].reset_index(drop=True)
    loader = torch.utils.data.DataLoader(RowDataset(train), batch_size=B, shuffle=True)
    setup = time.perf_counter() - t0
    torch.manual_seed(0)
    net = SalesNet(40, 64, 0.1, 500.0)
    opt = torch.optim.Adam(net.parameters(), lr=LR)
    losses, data_s = [], 0.0
    t = time.perf_counter()
    it = iter(loader)
    for b in range(len(loader) if max_batches is None else min(max_batches, len(loader))):
        t1 = time.perf_counter()
        x, y, u = next(it)
        data_s += time.perf_counter() - t1
        opt.zero_grad()
        w = 1 - torch.clamp(u.mean(1), -0.25, 0.25)
        loss = batch_loss(per_sample_loss(*net(x), y, kl_weight(b, "reference")), w)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    epoch = time.perf_counter() - t
    n = len(losses)
    k = min(100, max(1, n // 4))
    return {"epoch": epoch, "batches": n, "of": len(loader), "data": data_s, "setup": setup,
            "loss0": float(np.mean(losses[:k])), "loss1": float(np.mean(losses[-k:])), "k": k}


# --------------------------------------------------------------------------- step variants

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


# --------------------------------------------------------------------------- markdown

def header(info: dict, st: dict) -> str:
    return (f"Command: `{info['command']}`; measured {st['date']} on {info['nproc']} cores (`nproc`), "
            f"CPU {info['cpu']}, torch {torch.__version__}, one thread (`OMP_NUM_THREADS=1`, "
            f"`torch.get_num_threads() == {torch.get_num_threads()}`); load average {st['load']} at the start "
            f"of this table (the machine is shared).")


def markdown(r: dict) -> str:
    info = r["info"]
    lines = [
        "## Trainer",
        "",
        "All tables below come from one run of",
        "",
        "```",
        info["command"],
        "```",
        "",
        f"({r['total_s'] / 60:.1f} min in all). Data: `make_synthetic(n, seed=0)` (as `bin/make-synthetic --n N "
        "--seed 0`), a separate set per size under runs/ (the 20k set is its own, not the first 20k rows of the "
        "200k one); train = the first 70 % of the rows, so an epoch is ceil(0.7 n / 16) batches of 16.",
        "",
        "### Seconds per epoch (CPU, one thread, batch 16)",
        "",
        header(info, r["epoch_stamp"]),
        "",
        "| pitches | batches / epoch | `bin/train --epochs 1`: whole command | of which load | of which the epoch "
        "(steps + train/val/test eval) | per-row baseline: epoch (full, measured) | of which its data pipeline | "
        "baseline ÷ our epoch | baseline ÷ our whole command | reference (issue, this machine) |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for s in r["sizes"]:
        c, b = s["cmd"], s["row"]
        ref = REFERENCE_EPOCH_S.get(s["n"])
        part = "" if b["batches"] == b["of"] else f" ({b['batches']:,} batches only)"
        lines.append(
            f"| {s['n']:,} | {b['of']:,} | {c['wall']:.1f} s | {c['load']:.1f} s | {c['epoch']:.2f} s | "
            f"{b['epoch']:.1f} s{part} | "
            f"{b['data'] / b['epoch'] * 100:.0f} % | {b['epoch'] / c['epoch']:.0f}x | {b['epoch'] / c['wall']:.1f}x | "
            f"{f'~{ref:.0f} s' if ref else ''} |")
    lines += [
        "",
        "Commands timed (output under runs/): " + "; ".join(f"`OMP_NUM_THREADS=1 {s['cmd']['command']}`"
                                                             for s in r["sizes"]) + ".",
        "Our epoch is metrics.csv `seconds` (the shuffle, every training step, and the evaluation of train, val and "
        "test); load is summary.json `load_seconds` (CSV + features read, tensors built); the whole command is its "
        "wall time (Python and torch start-up, load, epoch, checkpoints). "
        "The per-row baseline is the reference's way: a torch Dataset whose `__getitem__` does `df.iloc[idx]` and "
        "looks up the input, target, action and state columns by name lists, a `DataLoader(batch_size=16, "
        "shuffle=True)`, the eager `SalesNet` with autograd and `torch.optim.Adam`, the reference preset (raw "
        "inputs, T = 500, KL weight max(1 - 0.025 b, 0), debias weight); its epoch is the whole loop over the "
        "training rows, no evaluation, timed in full (building its DataFrame is not counted: "
        + ", ".join(f"{s['row']['setup']:.1f} s at {s['n'] // 1000}k" for s in r["sizes"]) + "). "
        "Its loss fell from " + ", ".join(f"{s['row']['loss0']:.2f} to {s['row']['loss1']:.2f} at "
                                          f"{s['n'] // 1000}k" for s in r["sizes"])
        + f" (mean of the first and of the last {r['sizes'][0]['row']['k']} batches). "
        "It is leaner than the reference's own pipeline (one pandas lookup per column group), which is why it "
        "beats the issue's figures (~37 s and ~395 s, ~90 % of them in the data pipeline).",
    ]
    if any(not math.isnan(s["gen"]) for s in r["sizes"]):
        lines.append("Generating the data in this run took " + ", ".join(
            f"{s['gen']:.1f} s ({s['n']:,})" for s in r["sizes"] if not math.isnan(s["gen"])) + ".")
    nb, K_rows = r["steps_batches"], r["steps"]
    base = next((v for v in K_rows if "error" not in v), None)
    sp = r["step_params"]
    lines += [
        "",
        f"### Ways past the per-step overhead (CPU, one thread, batch 16, {r['steps_n']:,} pitches)",
        "",
        header(info, r["steps_stamp"]),
        "",
        f"Same data for every row (the {r['steps_n'] // 1000}k set, standardised, debias weights, default preset: "
        "T = 1, KL weight 1, dropout 0.1, lr 1e-2). Each row: "
        f"{sp['warm']} warm-up steps, then {sp['repeats']} repeat(s) of {sp['steps']:,} steps; ms/step is the median "
        f"of the {sp['repeats']} repeats. All rows are built and warmed up first, then each repeat round times "
        "every row in turn, so load changes on the shared machine fall on all rows alike. "
        f"A model-epoch is {nb:,} steps (ceil(0.7 × {r['steps_n']:,} / 16)), so "
        f"s per model-epoch = ms/step × {nb:,} / K / 1000 (training steps only: no evaluation, no load). "
        "K models: each model has its own initialisation and its own batches (an independent shuffle per model), as "
        "when training the models of an ablation or several seeds together; one step advances all K. "
        f"\"Loss\" is the mean training loss of the first and of the last {base['k'] if base else 100} steps "
        "(mean over the K models), to show the step trains.",
        "",
        "| way | K | ms / step (all K) | s / model-epoch | vs eager `Adam()` | compile + warm-up "
        "| loss first → last |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for v in K_rows:
        if "error" in v:
            lines.append(f"| {v['name']} | {v['K']} | not measured: {v['error'].replace('|', '/')} | | | | |")
            continue
        epoch = v["ms"] * nb / v["K"] / 1e3
        vs = base["ms"] / (v["ms"] / v["K"]) if base else float("nan")
        comp = f"{v['overhead_s']:.1f} s" if v["overhead_s"] > 0.5 else "-"
        if v["graphs"]:
            comp += f" ({v['graphs']} graph{'s' * (v['graphs'] > 1)}, {v['breaks']} break{'s' * (v['breaks'] != 1)})"
        trains = "" if v["finite"] and v["loss1"] < v["loss0"] else " (did not fall!)"
        lines.append(f"| {v['name']} | {v['K']} | {v['ms']:.3f} | {epoch:.2f} s | {vs:.1f}x | {comp} | "
                     f"{v['loss0']:.3f} → {v['loss1']:.3f}{trains} |")
    lines += [
        "",
        "\"vs eager `Adam()`\" compares the cost per model-step. \"compile + warm-up\" is the warm-up's time "
        f"beyond {sp['warm']} steady-state steps: for the `torch.compile` rows the compile (cold: a fresh inductor "
        "cache directory each run; C++ kernels built with the system gcc; the first such row also pays inductor's "
        "one-time start-up), shown when over 0.5 s, with the number of graphs Dynamo made and its graph breaks. "
        "torch.compile would recompile once more for an epoch's last, shorter batch. The batched fast step is "
        "checked against "
        f"`FastStep` model by model at start-up (loss and gradients, relative error {r['kfast_err']:.1e}); "
        "`FastStep` itself is checked against autograd in `tests/test_train_model.py`.",
        "",
        "### GPU",
        "",
    ]
    g = r.get("gpu")
    if g and "cmd" in g:
        c = g["cmd"]
        lines += [
            header({**info, "command": info["command"]}, g["stamp"]).replace("one thread", "data loading on one "
                                                                             "thread") + f" GPU: {g['name']}.",
            "",
            "| pitches | batches / epoch | whole command | of which load | of which the epoch (steps + eval) |",
            "| ---: | ---: | ---: | ---: | ---: |",
            f"| {g['n']:,} | {math.ceil(int(0.7 * g['n']) / B):,} | {c['wall']:.1f} s | {c['load']:.1f} s | "
            f"{c['epoch']:.2f} s |",
            "",
            f"Command timed: `OMP_NUM_THREADS=1 {c['command']}`."
            + ("" if math.isnan(g["gen"]) else f" Generating the {g['n']:,} pitches took {g['gen']:.0f} s."),
        ]
    else:
        lines.append(g["note"] if g else "")
    lines.append("")
    return "\n".join(lines)


def write_docs(text: str) -> None:
    path = ROOT / "docs" / "BENCHMARKS.md"
    old = path.read_text() if path.exists() else "# Benchmarks\n\n"
    start = old.find("## Trainer")
    if start < 0:
        new = old.rstrip("\n") + "\n\n" + text
    else:
        end = old.find("\n## ", start + 1)
        new = old[:start] + text + ("" if end < 0 else "\n" + old[end + 1:])
    path.parent.mkdir(exist_ok=True)
    path.write_text(new.rstrip("\n") + "\n")


# --------------------------------------------------------------------------- main

def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cpu", help="cpu (default) or cuda:N: also time bin/train on --gpu-n "
                    "pitches there (the CPU tables always run on the CPU)")
    ap.add_argument("--gpu-n", type=int, default=1_000_000, help="pitches for the GPU row (default 1,000,000)")
    ap.add_argument("--quick", action="store_true", help="smoke run: small data, few steps, no torch.compile; "
                    "writes nothing (data in a temporary directory)")
    ap.add_argument("--write-docs", action="store_true")
    args = ap.parse_args()
    if args.quick and args.write_docs:
        ap.error("--quick writes nothing; drop --write-docs")
    t_start = time.perf_counter()
    torch.set_num_threads(1)
    tmp = tempfile.TemporaryDirectory(prefix="bench-trainer-")
    # a fresh inductor cache each run, so the compile times are cold ones
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(Path(tmp.name) / "inductor")
    runs = Path(tmp.name) if args.quick else ROOT / "runs"
    sizes = (2_000, 4_000) if args.quick else (20_000, 200_000)
    warm, steps, repeats, ks = (10, 40, 1, (2, 4)) if args.quick else (100, 1500, 3, (4, 8))
    info = {"nproc": os.cpu_count(), "cpu": cpu_model(),
            "command": "OMP_NUM_THREADS=1 python bench/bench_trainer.py"
                       + (f" --device {args.device}" if args.device != "cpu" else "")
                       + (" --quick" if args.quick else " --write-docs")}
    r: dict = {"info": info, "sizes": []}

    log = sys.stderr
    print(f"table 1: seconds per epoch at {', '.join(f'{n:,}' for n in sizes)} pitches", file=log, flush=True)
    dirs = {}
    for n in sizes:
        d = dirs[n] = runs / f"bench-{n // 1000}k"
        r["sizes"].append({"n": n, "gen": ensure_data(d, n)})
    r["epoch_stamp"] = stamp()
    for s in r["sizes"]:
        d = dirs[s["n"]]
        s["cmd"] = time_command(d, d.parent / (d.name + "-model"))
        print(f"  {s['n']:,}: bin/train {s['cmd']['wall']:.1f} s (load {s['cmd']['load']:.1f} s, epoch "
              f"{s['cmd']['epoch']:.2f} s)", file=log, flush=True)
        s["row"] = per_row_baseline(d)
        b = s["row"]
        print(f"  {s['n']:,}: per-row baseline {b['epoch']:.1f} s for {b['batches']:,} batches "
              f"(data {b['data']:.1f} s), loss {b['loss0']:.3f} -> {b['loss1']:.3f}", file=log, flush=True)

    n = sizes[-1]
    print(f"table 2: step variants on {n:,} pitches", file=log, flush=True)
    pitches = read_pitches(dirs[n] / "pitches.csv", with_targets=True)
    data = build_dataset(pitches, read_features(dirs[n], pitches["index"].to_numpy()), debias=True,
                         standardize=True, device=torch.device("cpu"))
    del pitches
    r["steps_n"], r["steps_batches"] = n, math.ceil(len(data.part("train")) / B)
    r["step_params"] = {"warm": warm, "steps": steps, "repeats": repeats}
    r["kfast_err"] = check_kfast(data)
    r["steps_stamp"] = stamp()
    r["steps"] = step_variants(data, warm, steps, repeats, ks, compile_=not args.quick)
    del data

    if args.device != "cpu" and torch.cuda.is_available():
        print(f"GPU: bin/train --device {args.device} on {args.gpu_n:,} pitches", file=log, flush=True)
        d = runs / ("bench-1m" if args.gpu_n == 1_000_000 else f"bench-{args.gpu_n}")
        gen = ensure_data(d, args.gpu_n)
        st = stamp()
        r["gpu"] = {"n": args.gpu_n, "gen": gen, "stamp": st, "name": torch.cuda.get_device_name(args.device),
                    "cmd": time_command(d, d.parent / (d.name + "-model-gpu"), args.device)}
    else:
        why = ("no CUDA device on the machine that produced these tables" if not torch.cuda.is_available() else
               "this run was not given `--device cuda:0`")
        if args.device != "cpu":
            print(f"warning: --device {args.device}: CUDA is not available; GPU row not measured", file=log)
        r["gpu"] = {"note": f"GPU: not measured — {why}; run `python bench/bench_trainer.py --device cuda:0 "
                            f"--write-docs` on one (times `bin/train --device cuda:0 --epochs 1` on "
                            f"{args.gpu_n:,} synthetic pitches under runs/bench-1m)."}
    r["total_s"] = time.perf_counter() - t_start
    text = markdown(r)
    print(text)
    print(f"total {r['total_s']:.0f} s", file=log)
    if args.write_docs:
        write_docs(text)
    tmp.cleanup()


if __name__ == "__main__":
    main()
