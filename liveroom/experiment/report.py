"""``OUT/report.html``: the experiment's table and its plots with error bars, as ``bin/report`` draws them.

Figures are matplotlib :class:`~matplotlib.figure.Figure` s on the Agg
canvas (no pyplot), the page is :mod:`liveroom.report.page`'s (one
self-contained HTML file, PNGs beside it). Each arm keeps its colour
(``C0``, ``C1``, ...) in every figure.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from ..report.page import Section, Table, image, write_report
from ..train.metrics import Row
from .tables import SHOWN, Result, plus_minus

#: the per-arm bar charts: metric -> axis title
BARS = {"rmse_log_gmv": "test RMSE of log_gmv", "mae_log_gmv": "test MAE of log_gmv",
        "kl_pay_batchmean": "test KL of the pay shares"}
CURVES = {"val_loss": "validation loss (MSE + KL, per pitch)", "val_rmse_log_gmv": "validation RMSE of log_gmv"}


def _figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def metric_bars(results: list[Result], arms: list[str]) -> Figure:
    """Per metric, each arm's mean over seeds with a ±1 sample-std error bar; each seed a dot."""
    fig = _figure(4.2 * len(BARS), 4.4)
    for ax, (metric, title) in zip(fig.subplots(1, len(BARS)), BARS.items()):
        for i, arm in enumerate(arms):
            v = np.array([float(r[f"test_{metric}"]) for r in results if r["arm"] == arm])
            std = float(v.std(ddof=1)) if len(v) > 1 else 0.0
            ax.bar(i, v.mean(), 0.6, yerr=std, capsize=6, color=f"C{i}", alpha=0.75)
            ax.plot(i + np.linspace(-0.15, 0.15, len(v)), v, "o", ms=4, color="k", alpha=0.7)
        ax.set_xticks(range(len(arms)), arms, rotation=20)
        ax.set(title=title)
        ax.grid(axis="y", alpha=0.3)
    return fig


def curve_band(histories: list[list[Row]], column: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(epochs, mean, sample std) of ``column`` over the models that ran each epoch (std 0 with one)."""
    by_epoch: dict[int, list[float]] = {}
    for h in histories:
        for row in h:
            by_epoch.setdefault(int(row["epoch"]), []).append(float(row[column]))
    epochs = np.array(sorted(by_epoch))
    values = [np.array(by_epoch[e]) for e in epochs]
    mean = np.array([v.mean() for v in values])
    std = np.array([v.std(ddof=1) if len(v) > 1 else 0.0 for v in values])
    return epochs, mean, std


def learning_curves(histories: dict[str, list[list[Row]]]) -> Figure:
    """Per arm, the validation loss and RMSE per epoch: mean over seeds, ±1 std band."""
    fig = _figure(12, 5.2)
    for ax, (column, title) in zip(fig.subplots(1, 2), CURVES.items()):
        for i, (arm, hs) in enumerate(histories.items()):
            e, mean, std = curve_band(hs, column)
            ax.plot(e, mean, color=f"C{i}", lw=1.8, label=f"{arm} (mean of {len(hs)})")
            ax.fill_between(e, mean - std, mean + std, color=f"C{i}", alpha=0.2, lw=0)
        ax.set(title=title, xlabel="epoch")
        if column == "val_loss":
            ax.set_yscale("log")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=2)
    return fig


def write_html(out: Path, results: list[Result], summary: list[dict[str, Any]], histories: dict[str, list[list[Row]]],
               lines: list[str]) -> list[Path]:
    """OUT/report.html (and its PNGs); returns the PNG paths."""
    arms = list(histories)
    cell = {(r["arm"], r["metric"]): r for r in summary}
    table = Table(["arm", *(f"test {m}" for m in SHOWN), "selected epoch"],
                  [[arm, *(plus_minus(cell[arm, f"test_{m}"]["mean"], cell[arm, f"test_{m}"]["std"]) for m in SHOWN),
                    f"{cell[arm, 'best_epoch']['mean']:.1f}"] for arm in arms],
                  "Mean ± sample std over seeds; summary.md adds each arm's difference from the baseline with its "
                  "95 % interval and paired t-test.")
    compare = [r for r in summary if r["compared_with"] and r["metric"] in {f"test_{m}" for m in BARS}]
    diff = Table(["arm", "metric", "vs", "mean difference", "95 % interval", "p (paired t)"],
                 [[r["arm"], r["metric"], r["compared_with"], f"{r['diff_mean']:+.4f}",
                   "" if math.isnan(r["ci95_low"]) else f"[{r['ci95_low']:+.4f}, {r['ci95_high']:+.4f}]",
                   "n/a" if math.isnan(r["p"]) else f"{r['p']:.3g}"] for r in compare])
    section = Section("Arms over seeds", [
        table, diff,
        image("metrics", "Test metrics of the selected epoch per arm: bar = mean over seeds, error bar = ±1 sample "
              "std, dots = the seeds.", metric_bars(results, arms)),
        image("learning-curves", "Validation loss (log scale) and RMSE of log_gmv per epoch: line = mean over the "
              "seeds still training at that epoch, band = ±1 sample std.", learning_curves(histories)),
    ])
    return write_report(out / "report.html", "Experiment: arms over seeds", lines, [section])
