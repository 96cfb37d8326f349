"""Numbers -> the report's tables: each model's settings, data sizes and metrics; the run's counts."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..data.layout import REGRESSION_TARGETS
from .gather import ModelResult, RunResult
from .page import Table

#: the settings shown, as (row label, TrainConfig field)
SETTINGS = (("preset", "preset"), ("inputs", "inputs"), ("debias weight", "debias"), ("hidden width", "hidden"),
            ("batch size", "batch_size"), ("learning rate", "lr"), ("lr decay per epoch", "gamma"),
            ("dropout", "dropout"), ("temperature", "temperature"), ("KL schedule", "kl_schedule"),
            ("standardise inputs", "standardize"), ("patience", "patience"), ("max epochs", "epochs"),
            ("seed", "seed"), ("device", "device"))


def _num(v: float) -> str:
    return f"{v:.4f}"


def model_table(models: Sequence[ModelResult]) -> Table:
    """One column per model (and predict-the-mean for the metrics): settings, sizes, test metrics."""
    same = all(m.y_true.shape == models[0].y_true.shape and np.array_equal(m.y_true, models[0].y_true) for m in models)
    header = ["", *(m.name for m in models), "predict the mean" + ("" if same else f" ({models[0].name}'s test split)")]
    rows: list[list[str]] = []

    def row(label: str, cells: list[str], mean: str = "") -> None:
        rows.append([label, *cells, mean])

    row("directory", [str(m.path) for m in models])
    row("input columns", [str(len(m.summary.get("inputs", []))) for m in models])
    for label, name in SETTINGS:
        row(label, [str(getattr(m.config, name)) for m in models])
        if name == "debias":  # bin/train weighs samples only when it has the features the weight needs
            rows[-1][1:-1] = [str(m.config.debias) if m.config.with_llm else "off (no LLM features)" for m in models]
    row("epochs run", [f"{m.summary.get('epochs_run', '')}{' (stopped early)' if m.summary.get('stopped_early') else ''}"
                       for m in models])
    row("kept epoch", [f"{m.best_epoch} ({m.summary.get('selection', '')})" for m in models])
    for split in ("train", "val", "test"):
        row(f"{split} pitches", [str(m.summary.get("n_pitches", {}).get(split, "")) for m in models])
    row("pitches left out (--drop-missing)", [str(m.summary.get("dropped_pitches", 0)) for m in models])
    row("validation loss (kept epoch)", [_num(float(m.summary.get("val", {}).get("loss", "nan"))) for m in models])
    metrics = [m.test_metrics() for m in models]
    mean = models[0].test_metrics(models[0].train_mean)
    keys = [f"{kind}_{t}" for t in REGRESSION_TARGETS for kind in ("rmse", "mae")]
    for key in (*keys, "kl_watch_batchmean", "kl_pay_batchmean"):
        kind, _, what = key.partition("_")
        label = f"test KL {what.split('_')[0]} share" if kind == "kl" else f"test {kind.upper()} {what}"
        row(label, [_num(mt[key]) for mt in metrics], _num(mean[key]))
    return Table(header, rows, "Test metrics are recomputed from best.pt on the test split; KL is summed over the "
                               "8 shares and averaged over pitches (torch's kl_div batchmean). Predict-the-mean "
                               "predicts the training split's mean of every target.")


def run_table(run: RunResult) -> Table:
    """Per stage: records, the last word on each request, tokens; totals; cost when known."""
    header = ["stage", "records", "retried", "re-asked", "ok", "invalid", "failed", "missing", "prompt tokens",
              "completion tokens"]
    counts = ("records", "retried", "reasked", "ok", "invalid", "failed")
    rows = []
    for s in run.stages:
        rows.append([s.name, *(str(getattr(s, k)) for k in counts), "?" if s.missing is None else str(s.missing),
                     f"{s.prompt_tokens:,}", f"{s.completion_tokens:,}"])
    total = [sum(getattr(s, k) for s in run.stages) for k in counts]
    missing = "?" if any(s.missing is None for s in run.stages) else str(sum(s.missing or 0 for s in run.stages))
    rows.append(["all", *map(str, total), missing, f"{sum(s.prompt_tokens for s in run.stages):,}",
                 f"{sum(s.completion_tokens for s in run.stages):,}"])
    cost = "cost: not known (no usage.json with a cost in the run directory)" if run.cost is None else \
        f"cost: {run.cost:.4f} {run.currency}".rstrip()
    note = (f"model {run.model or '?'} at {run.endpoint or '?'}; personas {', '.join(run.personas)}; {cost}. "
            "Records: lines in the stage's file (a request failed in one run and asked again in the next has two); "
            "retried: records that took more than one HTTP attempt; re-asked: records whose reply was unusable and "
            "asked again. A request counts as ok when any of its records is ok (as bin/collect counts); "
            "missing (never finished) needs --pitches.")
    return Table(header, rows, note)
