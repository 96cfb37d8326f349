"""A forecast as functions of data: a checked pitch -> questions; answers -> prediction.

No HTTP and no engine here. A pitch from the API is checked by the rules of
:mod:`liveroom.data.pitch` (:func:`check_pitch`), those the CSV and showcase
loaders apply, each error naming its field. Its ``index`` is a hash of what
the questions show (start, title, product, transcript, showcase names and
prices, as cut), so the same pitch always maps to the same request ids and
its answers are found in the cache, while ``duration`` and ``user_cnt`` only
enter the prediction. A model trained on expected scores (``bin/train --scores
expected``) takes each answer's ``f_expected`` where the answer carries the
reply's probabilities, and its integer where it does not, as ``bin/collect``
fills a cell.
"""

from __future__ import annotations

from collections.abc import Container, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from ..async_client.engine import Job
from ..async_client.manifest import Manifest
from ..data.layout import EXPECTED, LLM_FEATURES, PAY, REG, REGRESSION_TARGETS, TABULAR_COLUMNS, WATCH
from ..data.moment import time_features
from ..data.personas import Persona
from ..data.pitch import START_FORMAT, FieldError, Pitch, check_pitch
from ..prompts.stages import Stage, request_id
from ..scoring.plan import DoneTable, ModelParams, Plan, plan_jobs, run_manifest

__all__ = ["CACHE_INPUT", "FieldError", "Pitch", "SCORE_FEATURES", "cache_manifest", "check_pitch", "model_inputs",
           "persona_scores", "pitch_jobs", "prediction", "request_ids", "score_value"]

#: the scores a forecast shows per persona, in the order a reply lists them
SCORE_FEATURES: tuple[str, ...] = ("entry", "state", "action", "read")
#: what the cache's manifest says its pitches are (a bin/score run dir names a file hash here)
CACHE_INPUT = "bin/serve: pitches from the API, indexed by content hash"


# ----------------------------------------------------------------- questions

def cache_manifest(params: ModelParams, base_url: str | None, stages: Sequence[Stage],
                   personas: tuple[Persona, ...]) -> Manifest:
    """The cache's run manifest: what its answers mean, as bin/score writes it for a run."""
    return run_manifest(params, base_url, stages, personas, {"pitches": CACHE_INPUT})


def request_ids(pitch: Pitch, stages: Sequence[Stage], personas: Sequence[Persona]) -> list[str]:
    """Every question's id for ``pitch``: stages x personas."""
    index = pitch.index
    return [request_id(s.name, index, p.key) for s in stages for p in personas]


def pitch_jobs(pitch: Pitch, stages: Sequence[Stage], personas: tuple[Persona, ...], params: ModelParams,
               done: Container[str]) -> list[Job]:
    """The questions for ``pitch`` not in ``done``, built by the scoring planner as bin/score builds them."""
    index = pitch.index
    start = pitch.start.strftime(START_FORMAT)
    frame = pd.DataFrame({"index": [index], "start": [start], "title": [pitch.title],
                          "prod": [pitch.prod], "text": [pitch.text]})
    plan = Plan(frame, {start: list(pitch.items)}, tuple(stages), personas, params, Manifest())
    table = DoneTable([index], [s.name for s in stages], [p.key for p in personas])
    for s in stages:
        table.add(s.name, [rid.encode() for p in personas if (rid := request_id(s.name, index, p.key)) in done])
    jobs, _ = plan_jobs(plan, table)
    return list(jobs)


# ----------------------------------------------------------------- answers -> prediction

def score_value(scores: Mapping[str, Any], feature: str, kind: str = "sampled") -> float:
    """The value of ``feature`` in one answer's scores that a model of score kind ``kind`` reads:
    the integer, or for ``expected`` the expected score when the answer has one."""
    expected = scores.get(feature + EXPECTED) if kind == "expected" else None
    if isinstance(expected, (int, float)) and not isinstance(expected, bool):
        return float(expected)
    return float(scores[feature])


def persona_scores(answers: Mapping[str, Mapping[str, Any]], pitch: Pitch, stages: Sequence[Stage],
                   personas: Sequence[Persona], kind: str = "sampled") -> dict[str, dict[str, float]]:
    """feature -> persona -> score of kind ``kind``, from the answers of every question of ``pitch``
    (all must be there)."""
    index = pitch.index
    filled: dict[str, dict[str, float]] = {}
    for s in stages:
        for p in personas:
            scores = answers[request_id(s.name, index, p.key)]
            for f in s.features:
                filled.setdefault(f, {})[p.key] = score_value(scores, f, kind)
    return {f: filled[f] for f in SCORE_FEATURES if f in filled}


def model_inputs(pitch: Pitch, scores: Mapping[str, Mapping[str, float]] | None,
                 personas: Sequence[str]) -> np.ndarray:
    """(1, 8) or, with ``scores``, (1, 40) raw inputs in the model's column order."""
    tab = time_features(pd.Series([pd.Timestamp(pitch.start)]))
    assert pitch.duration is not None and pitch.user_cnt is not None, "a pitch to forecast carries both numbers"
    tab["duration"], tab["user_cnt"] = pitch.duration, pitch.user_cnt
    row = list(tab[list(TABULAR_COLUMNS)].to_numpy(np.float64)[0])
    if scores is not None:
        row += [scores[f][k] for f in LLM_FEATURES for k in personas]
    return np.asarray([row], dtype=np.float64)


def prediction(out: np.ndarray, personas: Sequence[str]) -> dict[str, Any]:
    """The model's 20 outputs for one pitch, named: 4 log counts and the two share maps."""
    row = [float(v) for v in out]
    named: dict[str, Any] = dict(zip(REGRESSION_TARGETS, row[REG]))
    named["watch_share"] = dict(zip(personas, row[WATCH]))
    named["pay_share"] = dict(zip(personas, row[PAY]))
    return named
