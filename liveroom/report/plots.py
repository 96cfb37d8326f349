"""Numbers -> matplotlib figures; nothing is read or written here.

Figures are made with :class:`matplotlib.figure.Figure` directly (no pyplot:
no global state, no display needed) and rendered by the Agg canvas. Persona
keys, not names, label the axes: the keys are ASCII, so no CJK font is needed.
Each model keeps its colour (``C0``, ``C1``, ...) in every figure.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter

from ..data.layout import PAY, WATCH
from .gather import SCORES, ModelResult, RunResult

OK_COLOURS = {"ok": "#4c9a5a", "invalid": "#e0a030", "failed": "#c8423b", "missing": "#9a9a9a"}


def _figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _mark_kept(ax: Axes, epochs: np.ndarray, values: np.ndarray, best: int, colour: str) -> None:
    """A ring on the kept epoch's point of a curve."""
    at = np.flatnonzero(epochs == best)
    if at.size and np.isfinite(values[at[0]]):
        ax.plot(epochs[at[0]], values[at[0]], "o", ms=10, mfc="none", mec=colour, mew=2)


def learning_curves(models: Sequence[ModelResult]) -> Figure:
    """Train and validation loss, and validation RMSE of log_gmv, per epoch; the kept epoch ringed."""
    fig = _figure(12, 5.2)
    loss_ax, rmse_ax = fig.subplots(1, 2)
    for i, m in enumerate(models):
        c, e = f"C{i}", m.curves["epoch"]
        train = m.curves["train_loss"]
        if not np.isfinite(train).any():  # an older metrics.csv: the batch loss is what there is
            train = m.curves["train_batch_loss"]
        loss_ax.plot(e, train, color=c, ls="--", lw=1.2, label=f"{m.name}: train")
        loss_ax.plot(e, m.curves["val_loss"], color=c, lw=1.8, label=f"{m.name}: validation")
        rmse_ax.plot(e, m.curves["val_rmse_log_gmv"], color=c, lw=1.8, label=f"{m.name} (kept epoch {m.best_epoch})")
        _mark_kept(loss_ax, e, m.curves["val_loss"], m.best_epoch, c)
        _mark_kept(rmse_ax, e, m.curves["val_rmse_log_gmv"], m.best_epoch, c)
    loss_ax.plot([], [], "o", ms=10, mfc="none", mec="k", mew=2, label="kept epoch")
    loss_ax.set(title="loss (MSE + KL, per pitch)", xlabel="epoch", ylabel="loss", yscale="log")
    rmse_ax.set(title="validation RMSE of log_gmv", xlabel="epoch", ylabel="RMSE")
    loss_ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))  # 0.1, 0.2, 0.5, 1, ...: plain numbers
    loss_ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    loss_ax.yaxis.set_minor_formatter(NullFormatter())
    for ax in (loss_ax, rmse_ax):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=2)  # below: never on a curve
    return fig


def predicted_vs_actual(models: Sequence[ModelResult]) -> Figure:
    """Predicted against actual log_gmv on each model's test split, with y = x and predict-the-mean."""
    fig = _figure(5.2 * len(models), 5.2)
    axes = fig.subplots(1, len(models), squeeze=False)[0]
    values = np.concatenate([np.r_[m.y_true[:, 0], m.y_pred[:, 0]] for m in models])
    lo, hi = float(values.min()), float(values.max())
    pad = 0.04 * (hi - lo or 1.0)
    lo, hi = lo - pad, hi + pad
    for i, (ax, m) in enumerate(zip(axes, models)):
        got, base = m.test_metrics(), m.test_metrics(m.train_mean)
        ax.scatter(m.y_true[:, 0], m.y_pred[:, 0], s=14, alpha=0.6, color=f"C{i}", edgecolors="none")
        ax.plot([lo, hi], [lo, hi], color="k", lw=0.8, label="predicted = actual")
        ax.axhline(m.train_mean[0], color="grey", ls="--", lw=1.2,
                   label=f"predict the mean: RMSE {base['rmse_log_gmv']:.3f}, MAE {base['mae_log_gmv']:.3f}")
        ax.set(xlim=(lo, hi), ylim=(lo, hi), aspect="equal", xlabel="actual log_gmv", ylabel="predicted log_gmv",
               title=f"{m.name}\nRMSE {got['rmse_log_gmv']:.3f}, MAE {got['mae_log_gmv']:.3f} "
                     f"({len(m.y_true)} test pitches)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="upper left")
    return fig


def shares(models: Sequence[ModelResult], personas: Sequence[str]) -> Figure:
    """Per persona, the mean true and mean predicted watch and pay share over the test split."""
    fig = _figure(12, 7.5)
    axes = fig.subplots(2, 1)
    x = np.arange(len(personas))
    width = 0.8 / (len(models) + 1)
    for ax, (label, cols) in zip(axes, (("watch", WATCH), ("pay", PAY))):
        true = models[0].y_true[:, cols].mean(0)
        ax.bar(x - 0.4 + width / 2, true, width, color="#555555", label="true (test-split mean)")
        for i, m in enumerate(models, 1):
            kl = m.test_metrics()[f"kl_{label}_batchmean"]
            ax.bar(x - 0.4 + width * (i + 0.5), m.y_pred[:, cols].mean(0), width, color=f"C{i - 1}",
                   label=f"{m.name}: predicted (KL {kl:.3f})")
        ax.axhline(1 / len(personas), color="k", ls=":", lw=0.8, label=f"uniform 1/{len(personas)}")
        ax.set_xticks(x, list(personas))
        ax.set_ylim(0, ax.get_ylim()[1] * 1.3)  # headroom for the legend
        ax.set(ylabel=f"mean {label} share", title=f"{label} share per persona on the test split")
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=8, ncol=len(models) + 2, loc="upper center")
    return fig


def _stage_label(name: str) -> str:
    return "buy (mean of items)" if name == "buy" else name


def score_heatmap(run: RunResult) -> Figure:
    """Mean score of each persona in each stage (ok requests)."""
    mat = np.stack([s.persona_mean for s in run.stages], 1)  # personas x stages
    fig = _figure(2.2 + 1.6 * len(run.stages), 0.9 + 0.45 * len(run.personas))
    ax = fig.subplots()
    im = ax.imshow(mat, cmap="viridis", vmin=1, vmax=5, aspect="auto")
    for (r, c), v in np.ndenumerate(mat):
        if np.isfinite(v):
            ax.text(c, r, f"{v:.2f}", ha="center", va="center", fontsize=9, color="white" if v < 3.5 else "black")
    ax.set_xticks(range(len(run.stages)), [_stage_label(s.name) for s in run.stages])
    ax.set_yticks(range(len(run.personas)), run.personas)
    ax.set_title("mean score per persona and stage (1..5)")
    fig.colorbar(im, ax=ax, label="mean score")
    return fig


def score_distribution(run: RunResult) -> Figure:
    """Share of each score 1..5 per stage (buy: every item's score)."""
    fig = _figure(8, 4.4)
    ax = fig.subplots()
    width = 0.8 / max(len(run.stages), 1)
    for i, s in enumerate(run.stages):
        total = int(s.hist.sum())
        share = s.hist / total if total else np.zeros(len(SCORES))
        label = f"{'buy (every item)' if s.name == 'buy' else s.name}: {total} scores"
        ax.bar(SCORES - 0.4 + width * (i + 0.5), share, width, label=label)
    ax.set_xticks(SCORES)
    ax.set(xlabel="score", ylabel="share of the stage's scores", title="score distribution per stage")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def coverage(run: RunResult) -> Figure:
    """Per stage, how many requests ended ok, invalid (unusable reply), failed, or never finished."""
    fig = _figure(9, 1.4 + 0.9 * len(run.stages))
    ax = fig.subplots()
    labels, widest = [], 1
    for row, s in enumerate(run.stages):
        parts = {"ok": s.ok, "invalid": s.invalid, "failed": s.failed}
        if s.missing is not None:
            parts["missing"] = s.missing
        left = 0
        for kind, n in parts.items():
            ax.barh(row, n, left=left, color=OK_COLOURS[kind], label=kind if row == 0 else None)
            left += n
        widest = max(widest, left)
        labels.append(f"{s.name}: " + " · ".join(f"{k} {n}" for k, n in parts.items())
                      + f"\n{s.records} records: {s.retried} retried, {s.reasked} re-asked")
    ax.set_yticks(range(len(run.stages)), labels)
    ax.invert_yaxis()
    ax.set_xlim(0, widest * 1.01)
    ax.set(xlabel="requests (the last word on each)", title="coverage per stage")
    fig.legend(loc="outside lower center", ncol=4, fontsize=8)
    return fig


def expected_vs_integers(groups: Sequence[tuple[str, np.ndarray, np.ndarray]]) -> Figure:
    """Per stage or feature (name, integers, expected scores): the share of values at or below each score, both
    kinds on one axis, so a step of the integers sits beside the spread of the expected scores around it."""
    fig = _figure(3.4 * len(groups) + 0.6, 3.8)
    axes = fig.subplots(1, len(groups), squeeze=False, sharey=True)[0]
    for ax, (name, ints, expected) in zip(axes, groups):
        for values, label, style in ((ints, "integers", dict(color="C0", lw=2.2)),
                                     (expected, "expected", dict(color="C1", lw=1.4))):
            v = np.sort(values[np.isfinite(values)])
            if v.size:
                ax.step(np.r_[1.0, v, 5.0], np.r_[0.0, np.arange(1, v.size + 1) / v.size, 1.0], where="post",
                        label=f"{label}: {v.size} values, {np.unique(v).size} distinct", **style)
        ax.set(xlim=(0.9, 5.1), xticks=SCORES, xlabel="score", title=name)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper left")
    axes[0].set_ylabel("share of values <= score")
    return fig
