"""The experiment's tables: ``results.csv`` (one row per model), ``summary.csv`` and ``summary.md``.

Pure functions from the models' summaries to rows and text, and the writers.
Every number is the test metric of each model's selected epoch; the summary
gives per arm the mean ± sample std over seeds and, for every other arm, the
paired comparison with the baseline arm (:mod:`.stats`).
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

from ..data.layout import REGRESSION_TARGETS
from ..train.metrics import KL_METRICS
from .arms import ARMS, BASELINE
from .stats import mean_std, paired

#: every test metric, in metrics.csv order
METRICS: tuple[str, ...] = (*(f"{m}_{t}" for t in REGRESSION_TARGETS for m in ("rmse", "mae")), *KL_METRICS, "loss")
#: the columns of summary.md's tables
SHOWN: tuple[str, ...] = ("rmse_log_gmv", "mae_log_gmv", "rmse_log_live_deal_user_cnt", "rmse_log_watch_user_cnt",
                          "kl_watch_batchmean", "kl_pay_batchmean")
COMPARED: tuple[str, ...] = ("rmse_log_gmv", "mae_log_gmv", "kl_watch_batchmean", "kl_pay_batchmean")

Result = dict[str, Any]  # one row of results.csv


def result_row(arm: str, seed: int, summary: dict[str, Any]) -> Result:
    """A model's row of results.csv from its summary.json."""
    test = summary["test"]
    return {"arm": arm, "seed": seed, "best_epoch": summary["best_epoch"], "epochs_run": summary["epochs_run"],
            "stopped_early": summary["stopped_early"], **{f"test_{m}": test.get(m, math.nan) for m in METRICS}}


def baseline_of(arms: list[str]) -> str:
    """The arm the others are compared with: tabular only when run, else the first arm."""
    return BASELINE if BASELINE in arms else arms[0]


def summary_rows(results: list[Result], arms: list[str]) -> list[dict[str, Any]]:
    """summary.csv: per arm and metric, n, mean, std, and the paired comparison with the baseline."""
    base = baseline_of(arms)
    by_arm = {a: sorted((r for r in results if r["arm"] == a), key=lambda r: r["seed"]) for a in arms}
    rows = []
    for arm in arms:
        for metric in ("best_epoch", *(f"test_{m}" for m in METRICS)):
            values = [float(r[metric]) for r in by_arm[arm]]
            mean, std = mean_std(values)
            row: dict[str, Any] = {"arm": arm, "metric": metric, "n": len(values), "mean": mean, "std": std,
                                   "compared_with": "", "diff_mean": "", "ci95_low": "", "ci95_high": "",
                                   "t": "", "p": ""}
            if arm != base and [r["seed"] for r in by_arm[arm]] == [r["seed"] for r in by_arm[base]]:
                c = paired(values, [float(r[metric]) for r in by_arm[base]])
                row.update(compared_with=base, diff_mean=c.mean, ci95_low=c.low, ci95_high=c.high, t=c.t, p=c.p)
            rows.append(row)
    return rows


def plus_minus(mean: float, std: float) -> str:
    return f"{mean:.4f}" if math.isnan(std) else f"{mean:.4f} ± {std:.4f}"


def _p(p: float) -> str:
    return "n/a" if math.isnan(p) else ("< 0.001" if p < 0.001 else f"{p:.3f}")


def summary_markdown(rows: list[dict[str, Any]], arms: list[str], seeds: list[int]) -> str:
    """summary.md: the mean ± std table, and the comparison with the baseline arm."""
    cell = {(r["arm"], r["metric"]): r for r in rows}
    lines = [f"Test metrics of each model's selected epoch, mean ± sample std over seeds "
             f"{', '.join(map(str, seeds))} (n = {len(seeds)}).", "",
             "| arm | " + " | ".join(f"test {m}" for m in SHOWN) + " | selected epoch |",
             "| --- |" + " ---: |" * (len(SHOWN) + 1)]
    for arm in arms:
        vals = [plus_minus(cell[arm, f"test_{m}"]["mean"], cell[arm, f"test_{m}"]["std"]) for m in SHOWN]
        e = cell[arm, "best_epoch"]
        epoch = f"{e['mean']:.1f}" + ("" if math.isnan(e["std"]) else f" ± {e['std']:.1f}")
        lines.append(f"| {arm} | " + " | ".join(vals) + f" | {epoch} |")
    base = baseline_of(arms)
    compared = [a for a in arms if a != base and cell[a, "test_loss"]["compared_with"]]
    if compared:
        lines += ["", f"Difference from {base} (arm − {base}, paired over seeds): mean [95 % interval], "
                      "paired t-test p-value.", "",
                  "| arm | " + " | ".join(f"Δ test {m}" for m in COMPARED) + " |",
                  "| --- |" + " ---: |" * len(COMPARED)]
        for arm in compared:
            cells = []
            for m in COMPARED:
                r = cell[arm, f"test_{m}"]
                ci = "" if math.isnan(r["ci95_low"]) else f" [{r['ci95_low']:+.4f}, {r['ci95_high']:+.4f}]"
                cells.append(f"{r['diff_mean']:+.4f}{ci}, p {_p(r['p'])}")
            lines.append(f"| {arm} | " + " | ".join(cells) + " |")
    lines += ["", "Arms: " + "; ".join(f"{a} = {ARMS[a][0]}" for a in arms) + "."]
    return "\n".join(lines) + "\n"


def write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, list(rows[0]))
        w.writeheader()
        for r in rows:
            w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})


def write_tables(out: Path, results: list[Result], arms: list[str], seeds: list[int]) -> str:
    """results.csv, summary.csv and summary.md under ``out``; returns summary.md's text."""
    write_csv(out / "results.csv", results)
    rows = summary_rows(results, arms)
    write_csv(out / "summary.csv", rows)
    text = summary_markdown(rows, arms, seeds)
    (out / "summary.md").write_text(text)
    return text
