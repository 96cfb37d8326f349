"""``bin/experiment`` against the same models trained by ``bin/train`` one after another, one CPU thread.

1. N pitches (default 20,000), 3 arms x 5 seeds: the 15 ``bin/train`` runs
   (each with the flags ``Experiment.train_argv`` gives), one after another,
   then ``bin/experiment`` on the same data with the same epochs and
   patience; wall times, their ratio, and how far apart the two sets of
   models are (selected epochs, test RMSE).
2. BIG_N pitches (default 200,000), 3 arms x 5 seeds, BIG_EPOCHS epochs
   (patience 0, so every model runs every epoch): ``bin/experiment``'s wall
   time, peak RSS and seconds per model-epoch, beside one ``bin/train``
   run of 2 epochs on the same data to put the per-model cost in scale.

    OMP_NUM_THREADS=1 python bench/bench_experiment.py [--epochs 10] [--big-epochs 20] [--device cuda:0] [--write-docs]
    OMP_NUM_THREADS=1 python bench/bench_experiment.py --quick     # smoke run, small data, writes nothing

Every command runs as a subprocess with ``OMP_NUM_THREADS=1``; peak RSS is
the child's ``ru_maxrss`` (``os.wait4``). Data: ``bin/make-synthetic --n N
--seed 0`` under runs/ (the sets bench/bench_trainer.py uses). Prints
markdown; ``--write-docs`` puts it under "## Experiment" in docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
from harness import cpu_model, load_avg  # noqa: E402

from liveroom.experiment.arms import Experiment  # noqa: E402

ARMS = ["tabular", "llm", "llm+debias"]
SEEDS = [0, 1, 2, 3, 4]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def rel(argv: list[str]) -> str:
    return " ".join(a.replace(str(ROOT) + "/", "") for a in argv)


def timed(argv: list[str]) -> dict:
    """Run ``python argv`` (one thread); wall seconds and peak RSS (MB) of the child."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        t = time.perf_counter()
        proc = subprocess.Popen([sys.executable, *argv], env=ENV, stdout=out, stderr=err, cwd=ROOT, text=True)
        _, status, usage = os.wait4(proc.pid, 0)  # the child's own rusage: its peak RSS
        wall = time.perf_counter() - t
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    if proc.returncode:
        sys.exit(f"{rel(argv)} failed:\n{stderr[-2000:]}")
    return {"wall": wall, "rss_mb": usage.ru_maxrss / 1024, "stdout": stdout, "stderr": stderr}


def ensure_data(n: int) -> Path:
    d = ROOT / "runs" / f"bench-{n // 1000}k" if n % 1000 == 0 else ROOT / "runs" / f"bench-{n}"
    if not (d / "index.npy").exists() or len(np.load(d / "index.npy")) != n:
        print(f"making {n:,} synthetic pitches in {d}", file=sys.stderr, flush=True)
        subprocess.run([sys.executable, str(ROOT / "bin" / "make-synthetic"), "--n", str(n), "--seed", "0",
                        "--out", str(d)], check=True, env=ENV)
    return d


def experiment_argv(exp: Experiment) -> list[str]:
    argv = [str(ROOT / "bin" / "experiment"), "--pitches", exp.pitches, "--features", str(exp.features),
            "--out", exp.out, "--arms", ",".join(exp.arms), "--seeds", ",".join(map(str, exp.seeds)),
            "--epochs", str(exp.epochs), "--patience", str(exp.patience)]
    return argv + (["--device", exp.device] if exp.device != "cpu" else [])


def epoch_seconds(root: Path, names: list[str]) -> float:
    """The models' metrics.csv ``seconds`` summed: the experiment's time in epochs (steps + evaluation)."""
    total = 0.0
    for m in names:
        with (root / m / "metrics.csv").open() as f:
            rows = f.read().splitlines()
        col = rows[0].split(",").index("seconds")
        total += sum(float(line.split(",")[col]) for line in rows[1:])
    return total


def summaries(root: Path, names: list[str]) -> dict[str, dict]:
    return {n: json.loads((root / n / "summary.json").read_text()) for n in names}


def against_train(n: int, epochs: int, patience: int, device: str) -> dict:
    """Table 1: the 15 bin/train runs one after another, then bin/experiment."""
    d = ensure_data(n)
    runs = ROOT / "runs"
    exp = Experiment(pitches=str(d / "pitches.csv"), features=str(d), out=str(runs / f"bench-exp-{d.name}"),
                     arms=ARMS, seeds=SEEDS, epochs=epochs, patience=patience, device=device)
    alone = runs / f"bench-exp-{d.name}-train"
    for p in (Path(exp.out), alone):
        shutil.rmtree(p, ignore_errors=True)  # a run left there would be continued, not timed
    r: dict = {"n": n, "epochs": epochs, "patience": patience, "load_train": load_avg(), "train": []}
    names = [f"{a}-{s}" for a, s in exp.models()]
    for arm, seed in exp.models():
        argv = [str(ROOT / "bin" / "train"), *exp.train_argv(arm, seed, alone / f"{arm}-{seed}")]
        t = timed(argv)
        r["train"].append(t["wall"])
        r.setdefault("train_example", rel(argv))
        print(f"  bin/train {arm}-{seed}: {t['wall']:.1f} s", file=sys.stderr, flush=True)
    r["load_exp"] = load_avg()
    argv = experiment_argv(exp)
    t = timed(argv)
    r.update(exp_wall=t["wall"], exp_rss=t["rss_mb"], exp_command=rel(argv), table=t["stdout"].split("\nArms:")[0])
    print(f"  bin/experiment: {t['wall']:.1f} s", file=sys.stderr, flush=True)
    a, b = summaries(Path(exp.out) / "models", names), summaries(alone, names)
    r["same_epoch"] = sum(a[m]["best_epoch"] == b[m]["best_epoch"] for m in names)
    r["max_rel"] = max(abs(a[m]["test"]["rmse_log_gmv"] / b[m]["test"]["rmse_log_gmv"] - 1) for m in names)
    r["model_epochs"] = sum(a[m]["epochs_run"] for m in names)
    r["per_model_epoch"] = epoch_seconds(Path(exp.out) / "models", names) / r["model_epochs"]
    return r


def big(n: int, epochs: int, device: str) -> dict:
    """Table 2: bin/experiment at n pitches, every model every epoch; and one bin/train for scale."""
    d = ensure_data(n)
    exp = Experiment(pitches=str(d / "pitches.csv"), features=str(d), out=str(ROOT / "runs" / f"bench-exp-{d.name}"),
                     arms=ARMS, seeds=SEEDS, epochs=epochs, patience=0, device=device)
    shutil.rmtree(exp.out, ignore_errors=True)
    r: dict = {"n": n, "epochs": epochs, "load": load_avg(), "device": device}
    argv = experiment_argv(exp)
    t = timed(argv)
    names = [f"{a}-{s}" for a, s in exp.models()]
    s = summaries(Path(exp.out) / "models", names)
    model_epochs = sum(v["epochs_run"] for v in s.values())
    epoch_s = epoch_seconds(Path(exp.out) / "models", names)
    r.update(wall=t["wall"], rss=t["rss_mb"], command=rel(argv), model_epochs=model_epochs, epoch_s=epoch_s,
             load_s=s[names[0]]["load_seconds"])
    print(f"  bin/experiment {n:,}: {t['wall']:.1f} s, peak RSS {t['rss_mb']:.0f} MB", file=sys.stderr, flush=True)
    one = ROOT / "runs" / f"bench-exp-{d.name}-one"
    shutil.rmtree(one, ignore_errors=True)
    argv = [str(ROOT / "bin" / "train"), *exp.train_argv("llm+debias", 0, one)]
    argv[argv.index("--epochs") + 1] = "2"
    t = timed(argv)
    with (one / "metrics.csv").open() as f:
        rows = f.read().splitlines()
    col = rows[0].split(",").index("seconds")
    r.update(one_command=rel(argv), one_wall=t["wall"], one_rss=t["rss_mb"],
             one_epoch=sum(float(line.split(",")[col]) for line in rows[1:]) / 2,
             one_load=json.loads((one / "summary.json").read_text())["load_seconds"])
    return r


def dur(seconds: float) -> str:
    return f"{seconds:.1f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def markdown(info: dict, a: dict, b: dict) -> str:
    total, ratio = sum(a["train"]), a["exp_wall"] / sum(a["train"])
    per = b["epoch_s"] / b["model_epochs"]
    seq = 15 * (b["one_wall"] - 2 * b["one_epoch"]) + 15 * b["epochs"] * b["one_epoch"]
    return "\n".join([
        "## Experiment",
        "",
        f"`bin/experiment` (every arm and seed trained together) against the same models trained by `bin/train` "
        f"one after another. Command: `{info['command']}`; measured {info['date']} on {info['nproc']} cores "
        f"(`nproc`), CPU {info['cpu']}, every command a subprocess with `OMP_NUM_THREADS=1` (and the epochs of "
        f"both on one torch thread), {info['total_s'] / 60:.1f} min in all; the machine is shared, load average "
        f"given per table. Data: `bin/make-synthetic --n N --seed 0` under runs/. Arms {', '.join(ARMS)}, seeds "
        f"{SEEDS[0]}-{SEEDS[-1]}.",
        "",
        f"### 3 arms x 5 seeds, {a['n']:,} pitches, at most {a['epochs']} epochs, patience {a['patience']}",
        "",
        "| 15 `bin/train` runs one after another | `bin/experiment` | ratio | target | models with the same "
        "selected epoch | largest difference in test RMSE of log_gmv |",
        "| ---: | ---: | ---: | ---: | ---: | ---: |",
        f"| {total:.1f} s (each {min(a['train']):.1f}-{max(a['train']):.1f} s) | {a['exp_wall']:.1f} s (peak RSS "
        f"{a['exp_rss']:.0f} MB) | **{ratio:.2f}** | <= 0.4: {'met' if ratio <= 0.4 else 'not met'} | "
        f"{a['same_epoch']} of 15 | {a['max_rel']:.1e} (relative) |",
        "",
        f"Load average {a['load_train']} before the `bin/train` runs, {a['load_exp']} before `bin/experiment`. "
        f"{a['epochs']} epochs instead of the default 150 so that the 15 single runs fit the benchmark; "
        f"{a['model_epochs']} model-epochs were run in all (early stopping). Commands: the experiment "
        f"`{a['exp_command']}`; each single run as `{a['train_example']}` (flags per arm from "
        "`Experiment.train_argv`). Wall times include Python and torch start-up and loading, which the single runs "
        "pay 15 times.",
        "",
        "Same initialisation, same batches and dropout masks, but not the same rounding: the batched step's `bmm` sums in another order than the single model's `mm` (at 500 pitches every epoch agrees to about 1e-7, `tests/test_experiment_equal.py`), and thousands of batch-16 Adam steps at lr 1e-2 amplify such differences: `bin/train` against itself is bitwise reproducible, but here some models part from their `bin/train` twin within the first epochs. The selected epoch and the test metrics of one model then differ as much as those of two seeds do; each arm's mean and spread over the seeds do not.",
        "",
        "It printed:",
        "",
        a["table"].strip(),
        "",
        f"### 3 arms x 5 seeds, {b['n']:,} pitches, {b['epochs']} epochs",
        "",
        "| device | wall time | peak RSS | of which loading | epochs (steps + evaluation of every split) | "
        "per model-epoch | one `bin/train` epoch alone, same data | 15 `bin/train` runs, estimated |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        f"| {b['device']} (one thread) | {dur(b['wall'])} | {b['rss']:.0f} MB | {b['load_s']:.1f} s | "
        f"{dur(b['epoch_s'])} for {b['model_epochs']} model-epochs | {per:.2f} s | {b['one_epoch']:.2f} s "
        f"({b['one_epoch'] / per:.1f}x) | {dur(seq)} |",
        "",
        (f"{b['epochs']} epochs, not {b['asked_epochs']}: at the pace of the table above the {b['asked_epochs']} "
         f"would have taken over {b['budget_min']:.0f} min. " if b["epochs"] < b["asked_epochs"] else "")
        + f"Patience 0, so every model runs all {b['epochs']} epochs. Command: `{b['command']}` (load average "
        f"{b['load']} before it). Per model-epoch is the sum of the models' `seconds` in metrics.csv (each epoch "
        f"of a group split evenly over its models) over the model-epochs. The single run, for scale: "
        f"`{b['one_command']}`: {b['one_wall']:.1f} s wall, {b['one_epoch']:.2f} s per epoch, peak RSS "
        f"{b['one_rss']:.0f} MB; the estimate for 15 such runs of {b['epochs']} epochs is 15 x (its wall time less "
        f"its 2 epochs) + 15 x {b['epochs']} x its epoch.",
        "",
        "GPU: " + (f"measured on {info['gpu']}." if info.get("gpu") else "not measured: no CUDA device on the "
                   "machine that produced these tables; `python bench/bench_experiment.py --device cuda:0 "
                   "--write-docs` on one measures the 200k table there (and `python bench/bench_trainer.py "
                   "--device cuda:0` the single-model GPU epoch)."),
        "",
    ])


def write_docs(text: str) -> None:
    path = ROOT / "docs" / "BENCHMARKS.md"
    old = path.read_text() if path.exists() else "# Benchmarks\n\n"
    start = old.find("## Experiment")
    if start < 0:
        new = old.rstrip("\n") + "\n\n" + text
    else:
        end = old.find("\n## ", start + 1)
        new = old[:start] + text + ("" if end < 0 else "\n" + old[end + 1:])
    path.write_text(new.rstrip("\n") + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=20_000)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--patience", type=int, default=5)
    ap.add_argument("--big-n", type=int, default=200_000)
    ap.add_argument("--big-epochs", type=int, default=20)
    ap.add_argument("--budget-min", type=float, default=15, help="fewer big epochs if --big-epochs would take "
                    "longer than this at table 1's pace (default 15)")
    ap.add_argument("--device", default="cpu", help="device of the big table's experiment (default cpu)")
    ap.add_argument("--quick", action="store_true", help="smoke run: 2,000 and 4,000 pitches, 2 epochs; writes "
                    "nothing")
    ap.add_argument("--write-docs", action="store_true")
    args = ap.parse_args()
    if args.quick:
        if args.write_docs:
            ap.error("--quick writes nothing; drop --write-docs")
        args.n, args.epochs, args.big_n, args.big_epochs = 2_000, 2, 4_000, 2
    t0 = time.perf_counter()
    flags = "".join(f" --{k.replace('_', '-')} {v}" for k, v in vars(args).items()
                    if k not in ("quick", "write_docs") and v != ap.get_default(k))
    info = {"command": f"OMP_NUM_THREADS=1 python bench/bench_experiment.py{flags}"
                       + (" --quick" if args.quick else " --write-docs"),
            "date": dt.datetime.now().strftime("%Y-%m-%d %H:%M"), "nproc": os.cpu_count(), "cpu": cpu_model()}
    if args.device != "cpu":
        import torch
        info["gpu"] = torch.cuda.get_device_name(args.device) if torch.cuda.is_available() else ""
    print(f"table 1: {args.n:,} pitches", file=sys.stderr, flush=True)
    a = against_train(args.n, args.epochs, args.patience, "cpu")
    # the big run's epochs: as asked, unless they would take longer than --budget-min at table 1's pace
    per_epoch = a["per_model_epoch"] * args.big_n / args.n * len(ARMS) * len(SEEDS)
    epochs = max(1, min(args.big_epochs, int(args.budget_min * 60 / per_epoch)))
    print(f"table 2: {args.big_n:,} pitches, {epochs} epochs (about {per_epoch:.0f} s each expected)",
          file=sys.stderr, flush=True)
    b = big(args.big_n, epochs, args.device)
    b["asked_epochs"], b["budget_min"] = args.big_epochs, args.budget_min
    info["total_s"] = time.perf_counter() - t0
    text = markdown(info, a, b)
    print(text)
    if args.write_docs:
        write_docs(text)


if __name__ == "__main__":
    main()
