"""The report's sections: a table and captioned figures for the models, a scoring run, and features."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..data.personas import PERSONA_KEYS
from . import plots
from .gather import SCORES, ModelResult, RunResult
from .page import Section, image
from .tables import model_table, run_table


def model_section(models: list[ModelResult]) -> Section:
    n = len(models)
    what = "each model" if n > 1 else "the model"
    return Section("Models", [
        model_table(models),
        image("learning-curves", f"Loss (train dashed, validation solid; log scale) and validation RMSE of log_gmv "
              f"per epoch; the ring marks the epoch kept in best.pt of {what}.", plots.learning_curves(models)),
        image("predicted-vs-actual", "Predicted against actual log_gmv on the test split; the dashed line is "
              "predict-the-mean (the training split's mean).", plots.predicted_vs_actual(models)),
        image("shares", "Per persona: the true watch and pay share and the predicted one, each averaged over the "
              "test split.", plots.shares(models, PERSONA_KEYS)),
    ])


def run_section(run: RunResult) -> Section:
    expected = [s for s in run.stages if s.expected.size]
    return Section(f"Scoring run {run.path}", [
        run_table(run),
        image("scores-heatmap", "Mean score of each persona per stage over its ok requests (buy: the mean of the "
              "items' scores).", plots.score_heatmap(run)),
        image("score-distribution", "Share of each score per stage (buy: every item's score).",
              plots.score_distribution(run)),
        *([image("expected-scores", "Sampled integers and expected scores (from the digit token's probabilities) "
                 "per stage (buy: every item's score): the integers of every ok reply, the expected scores of those "
                 "that carry probabilities; the share of values at or below each score.",
                 plots.expected_vs_integers([(s.name, np.repeat(SCORES, s.hist), s.expected) for s in expected]))]
          if expected else []),
        image("coverage", "The last word on each request per stage: ok, invalid (no usable reply after re-asking), "
              "failed (HTTP errors), missing (never finished; needs --pitches).", plots.coverage(run)),
    ])


def features_section(path: Path, pairs: dict[str, tuple[np.ndarray, np.ndarray]], number: int = 0) -> Section:
    return Section(f"Features {path}", [
        image("feature-expected-scores" + (f"-{number}" if number else ""), "Each feature matrix (every pitch and persona): the sampled integers "
              "(state: the mean of the items' integers) and the expected scores, as the share of values at or below "
              "each score.", plots.expected_vs_integers([(f, a.ravel(), e.ravel()) for f, (a, e) in pairs.items()])),
    ])
