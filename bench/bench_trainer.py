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
import datetime as dt
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402
from harness import cpu_model, load_avg  # noqa: E402
from trainer_docs import markdown, write_docs  # noqa: E402
from trainer_steps import LR, B, check_kfast, step_variants  # noqa: E402

from liveroom.data.layout import TARGET_COLUMNS, input_names  # noqa: E402
from liveroom.data.personas import PERSONA_KEYS  # noqa: E402
from liveroom.synthetic import make_synthetic, write_synthetic  # noqa: E402
from liveroom.train.data import build_dataset, read_features, read_pitches  # noqa: E402
from liveroom.train.loss import batch_loss, kl_weight, per_sample_loss  # noqa: E402
from liveroom.train.model import SalesNet  # noqa: E402

COMMAND = "OMP_NUM_THREADS=1 python bench/bench_trainer.py --write-docs"


# --------------------------------------------------------------------------- machine and data

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
