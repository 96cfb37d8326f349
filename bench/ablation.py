"""Ablation on synthetic data: tabular only, + persona (LLM) features, + causal
debiasing, and the reference preset, over several seeds; mean ± std of the
test metrics of the selected epoch.

    python bench/ablation.py [--n 20000] [--seeds 0 1 2] [--epochs 20] [--write-docs]

Seed s generates the data (``make_synthetic(n, s)``) and seeds training.
``--write-docs`` writes the table to docs/ABLATION.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from liveroom.synthetic import make_synthetic, write_synthetic  # noqa: E402
from liveroom.train.config import PRESETS, TrainConfig  # noqa: E402
from liveroom.train.loop import train  # noqa: E402

VARIANTS: dict[str, dict] = {
    "tabular only": dict(inputs="tabular", debias=False),
    "+ LLM features": dict(inputs="tabular+llm", debias=False),
    "+ LLM features + debias": dict(inputs="tabular+llm", debias=True),
    "reference preset (+ LLM + debias)": dict(inputs="tabular+llm", debias=True, preset="reference",
                                              **PRESETS["reference"]),
}
METRICS = ("rmse_log_gmv", "mae_log_gmv", "rmse_log_live_deal_user_cnt", "rmse_log_watch_user_cnt", "kl_watch_batchmean",
           "kl_pay_batchmean")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=20_000)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--patience", type=int, default=5)
    ap.add_argument("--write-docs", action="store_true")
    args = ap.parse_args()
    results: dict[str, list[dict]] = {v: [] for v in VARIANTS}
    t0 = time.perf_counter()
    null = open(os.devnull, "w")
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            data = Path(tmp) / f"data{seed}"
            write_synthetic(data, *make_synthetic(args.n, seed))
            for name, kw in VARIANTS.items():
                kw = {"patience": args.patience, **kw}
                cfg = TrainConfig(pitches=str(data / "pitches.csv"), features=str(data), out=str(Path(tmp) / "m"),
                                  epochs=args.epochs, seed=seed, **kw)
                s = train(cfg, log=null)
                results[name].append({**s["test"], "best_epoch": s["best_epoch"]})
                print(f"seed {seed}  {name:36s} test rmse log_gmv {s['test']['rmse_log_gmv']:.4f}", file=sys.stderr)
    minutes = (time.perf_counter() - t0) / 60

    head = "| variant | " + " | ".join(f"test {m}" for m in METRICS) + " | best epoch |"
    lines = [head, "|" + " --- |" * (len(METRICS) + 2)]
    for name, runs in results.items():
        cells = []
        for m in (*METRICS, "best_epoch"):
            v = np.array([r[m] for r in runs], float)
            cells.append(f"{v.mean():.4f} ± {v.std(ddof=1) if len(v) > 1 else 0:.4f}" if m != "best_epoch"
                         else f"{v.mean():.1f}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    table = "\n".join(lines)
    cmd = f"python bench/ablation.py --n {args.n} --seeds {' '.join(map(str, args.seeds))} --epochs {args.epochs} --patience {args.patience} --write-docs"
    doc = "\n".join([
        "# Ablation",
        "",
        f"Synthetic data ({args.n:,} pitches per seed, features as the simulator scores them, targets planted as in "
        "`liveroom/synthetic.py`), chronological 70/10/20 split, default preset unless noted, at most "
        f"{args.epochs} epochs with early stopping after {args.patience} (the reference preset runs all epochs and "
        f"keeps the last). Mean ± sample std over seeds {', '.join(map(str, args.seeds))}; test metrics of the selected epoch.",
        "",
        "```",
        cmd,
        "```",
        "",
        table,
        "",
        "The planted noise alone puts a floor of about 0.34 under the log_gmv RMSE (the sd of its noise terms). "
        "Only the persona features carry the price and transcript signal, hence the gap to tabular only. The "
        "synthetic targets hold no bias of the kind the debias weight corrects, so it is expected to change little "
        "here. The reference preset (raw inputs, T = 500, KL weight 0 after 40 batches) leaves the share "
        "predictions near uniform (twice the KL) and is unstable across seeds.",
        "",
        f"Measured {dt.date.today().isoformat()} on {os.cpu_count()} CPU cores in {minutes:.1f} min.",
        "",
    ])
    print(doc)
    if args.write_docs:
        (ROOT / "docs").mkdir(exist_ok=True)
        (ROOT / "docs" / "ABLATION.md").write_text(doc)


if __name__ == "__main__":
    main()
