"""The trainer benchmark's tables as markdown, and their place in docs/BENCHMARKS.md."""

from __future__ import annotations

import math
from pathlib import Path

import torch
from trainer_steps import B

ROOT = Path(__file__).resolve().parent.parent
REFERENCE_EPOCH_S = {20_000: 37.0, 200_000: 395.0}  # the reference on this machine, batch 16, one epoch


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
