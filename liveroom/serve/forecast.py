"""A forecast as functions of data: a pitch from the API -> questions; answers -> prediction.

No HTTP and no engine here. A pitch is checked field by field with the rules
of the CSV and showcase loaders (:mod:`liveroom.data.inputs`), each error
naming its field. Its ``index`` is a hash of what the questions show (start,
title, product, transcript, showcase names and prices), so the same pitch
always maps to the same request ids and its answers are found in the cache,
while ``duration`` and ``user_cnt`` only enter the prediction.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
import re
from collections.abc import Callable, Container, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from ..async_client.engine import Job
from ..async_client.manifest import Manifest
from ..data.inputs import MAX_SHOWCASE_ITEMS, Item
from ..data.layout import LLM_FEATURES, PAY, REG, REGRESSION_TARGETS, TABULAR_COLUMNS, WATCH
from ..data.moment import CalendarYearError, day_facts, time_features
from ..data.personas import Persona
from ..errors import InputError
from ..prompts.stages import Stage, request_id
from ..scoring.plan import DoneTable, ModelParams, Plan, plan_jobs, run_manifest

FIELDS: tuple[str, ...] = ("start", "title", "prod", "text", "duration", "user_cnt", "showcase")
#: the scores a forecast shows per persona, in the order the issue lists them
SCORE_FEATURES: tuple[str, ...] = ("entry", "state", "action", "read")
#: hex digits of the content hash: a 52-bit index, exact as a JSON number in a browser (below 2**53)
INDEX_HEX = 13
#: what the cache's manifest says its pitches are (a bin/score run dir names a file hash here)
CACHE_INPUT = "bin/serve: pitches from the API, indexed by content hash"

_START = re.compile(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}")  # as the CSV loader: "2024-1-5 6:05" is refused


class FieldError(InputError):
    """A pitch field the loaders would refuse; ``field`` names it (``pitches[2].title`` in a batch)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field, self.message = field, message


@dataclass(frozen=True)
class Pitch:
    """A checked pitch from the API; ``items`` are the showcase items kept (price > 0, the first 10)."""

    start: str
    title: str
    prod: str
    text: str
    duration: float
    user_cnt: float
    items: tuple[Item, ...]

    @property
    def when(self) -> dt.datetime:
        return dt.datetime.strptime(self.start, "%Y-%m-%d %H:%M")

    @property
    def index(self) -> int:
        """Stable id of what the questions show: the same pitch, the same request ids."""
        shown = [self.start, self.title, self.prod, self.text, [[it.name, it.price] for it in self.items]]
        digest = hashlib.sha256(json.dumps(shown, ensure_ascii=False).encode()).hexdigest()
        return int(digest[:INDEX_HEX], 16)


# ----------------------------------------------------------------- checking

def _start(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{value!r} is not YYYY-MM-DD HH:MM")
    try:
        when = dt.datetime.strptime(value, "%Y-%m-%d %H:%M")
    except ValueError:
        when = None
    if when is None or not _START.fullmatch(value):
        raise ValueError(f"{value!r} is not YYYY-MM-DD HH:MM")
    try:
        day_facts(when.date())
    except CalendarYearError as e:
        raise ValueError(f"{value!r}: {e}") from None
    return value


def _number(value: Any) -> float:
    """A finite number; text is read as a CSV cell is (``" 12 "``, ``"1e3"``)."""
    number: float = math.nan
    if isinstance(value, str):
        number = float(pd.to_numeric(value.strip(), errors="coerce"))
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            number = float(value)
        except OverflowError:
            pass
    if not math.isfinite(number):
        raise ValueError(f"{value!r} is not a finite number")
    return number


def _items(value: Any) -> tuple[Item, ...]:
    """The showcase items kept, checked exactly as the showcase loader checks them."""
    if not isinstance(value, list):
        raise ValueError("expected a list of [idx, name, price]")
    kept: list[Item] = []
    for n, it in enumerate(value, 1):
        if type(it) is list and len(it) == 3:
            idx, name, price = it
            if type(idx) is int and type(name) is str and type(price) in (int, float) and math.isfinite(price):
                if price > 0 and len(kept) < MAX_SHOWCASE_ITEMS:
                    kept.append(Item(idx, name, float(price)))
                continue
        raise ValueError(f"item {n}: expected [idx, name, price], got {json.dumps(it, ensure_ascii=False)[:80]}")
    if not kept:
        raise ValueError("no showcase items (with price > 0)")
    return tuple(kept)


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"must be text, got {json.dumps(value, ensure_ascii=False)[:40]}")
    return value


_CHECKS: dict[str, Callable[[Any], Any]] = {"start": _start, "title": _text, "prod": _text, "text": _text,
                                            "duration": _number, "user_cnt": _number, "showcase": _items}


def check_pitch(obj: Any, where: str = "") -> Pitch:
    """The pitch in a JSON object, or a :class:`FieldError` naming the first bad field."""
    if not isinstance(obj, dict):
        raise FieldError(where.rstrip(".") or "body", f"expected a JSON object with {', '.join(FIELDS)}")
    for name in obj:
        if name not in _CHECKS:
            raise FieldError(where + name, f"is not a pitch field (expected {', '.join(FIELDS)})")
    values: dict[str, Any] = {}
    for name in FIELDS:
        if name not in obj:
            raise FieldError(where + name, "is required")
        try:
            values[name] = _CHECKS[name](obj[name])
        except ValueError as e:
            raise FieldError(where + name, str(e)) from None
    return Pitch(values["start"], values["title"], values["prod"], values["text"], values["duration"],
                 values["user_cnt"], values["showcase"])


# ----------------------------------------------------------------- questions

def cache_manifest(params: ModelParams, base_url: str, stages: Sequence[Stage],
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
    frame = pd.DataFrame({"index": [index], "start": [pitch.start], "title": [pitch.title],
                          "prod": [pitch.prod], "text": [pitch.text]})
    plan = Plan(frame, {pitch.start: list(pitch.items)}, tuple(stages), personas, params, Manifest())
    table = DoneTable([index], [s.name for s in stages], [p.key for p in personas])
    for s in stages:
        table.add(s.name, [rid.encode() for p in personas if (rid := request_id(s.name, index, p.key)) in done])
    jobs, _ = plan_jobs(plan, table)
    return list(jobs)


# ----------------------------------------------------------------- answers -> prediction

def persona_scores(answers: Mapping[str, Mapping[str, Any]], pitch: Pitch, stages: Sequence[Stage],
                   personas: Sequence[Persona]) -> dict[str, dict[str, float]]:
    """feature -> persona -> score, from the answers of every question of ``pitch`` (all must be there)."""
    index = pitch.index
    filled: dict[str, dict[str, float]] = {}
    for s in stages:
        for p in personas:
            scores = answers[request_id(s.name, index, p.key)]
            for f in s.features:
                filled.setdefault(f, {})[p.key] = float(scores[f])
    return {f: filled[f] for f in SCORE_FEATURES if f in filled}


def model_inputs(pitch: Pitch, scores: Mapping[str, Mapping[str, float]] | None,
                 personas: Sequence[str]) -> np.ndarray:
    """(1, 8) or, with ``scores``, (1, 40) raw inputs in the model's column order."""
    tab = time_features(pd.Series([pd.Timestamp(pitch.when)]))
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
