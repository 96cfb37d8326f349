"""What a pitch is, and the one set of rules every way in applies to it.

A :class:`Pitch` is what the prompts show of one live-stream pitch (and, when
its source has them, the two numbers the sales model reads). It comes from a
row of a pitches CSV (:func:`~liveroom.data.inputs.load_pitches` with the
showcase of :func:`~liveroom.data.inputs.load_showcase`) or from the JSON body
of ``POST /v1/forecast`` (:func:`check_pitch`); both apply the rules below, so
one pitch asks the same questions whichever way it came in.

===============  ==================================================================
field            rule (the same in the CSV loaders and the API)
===============  ==================================================================
``start``        ``YYYY-MM-DD HH:MM`` (:data:`START_PATTERN`), a real date in a year the calendar covers
``title``        text, cut to :data:`TEXT_LIMITS` ``["title"]`` (200) characters
``prod``         text, cut to 200 characters
``text``         text, cut to 1,024 characters (the method's transcript cut)
item ``name``    text, cut to :data:`MAX_ITEM_NAME` (200) characters
item ``price``   a finite number up to :data:`MAX_PRICE`; items priced <= 0 are dropped,
                 and of the rest the first :data:`MAX_SHOWCASE_ITEMS` kept
``duration``     a finite number in :data:`NUMBER_RANGES` (0 .. 100,000)
``user_cnt``     a finite number in 0 .. 1,000,000,000
===============  ==================================================================

The real data's longest title is 25 characters, item being explained 37,
item name 44; its highest price 49,999. The limits leave room for other
data while bounding what one pitch can cost: a title of 100,000 characters
is shown to the model as its first 200.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

from ..errors import InputError
from .moment import CalendarYearError, day_facts

if TYPE_CHECKING:  # numpy and pandas are imported where used: bin/sim-server reads pitches without them
    import numpy as np

START_FORMAT = "%Y-%m-%d %H:%M"
#: strptime alone also takes "2024-1-5 6:05", which would then miss its showcase key
START_PATTERN = r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}"
#: characters of each free-text field that are kept (the transcript's cut is the method's)
TEXT_LIMITS: Mapping[str, int] = {"title": 200, "prod": 200, "text": 1024}
MAX_ITEM_NAME = 200
MAX_SHOWCASE_ITEMS = 10
MAX_PRICE = 10_000_000.0
#: the documented range of each number a pitch carries, both ends allowed
NUMBER_RANGES: Mapping[str, tuple[float, float]] = {"duration": (0.0, 100_000.0), "user_cnt": (0.0, 1e9)}
#: the fields of a pitch in the API, in the order they are checked
FIELDS: tuple[str, ...] = ("start", "title", "prod", "text", "duration", "user_cnt", "showcase")
#: hex digits of the content hash: a 52-bit index, exact as a JSON number in a browser (below 2**53)
INDEX_HEX = 13

_START = re.compile(START_PATTERN)


class Item(NamedTuple):
    """One showcase item as shown to the model."""

    idx: int
    name: str
    price: float


@dataclass(frozen=True)
class Pitch:
    """What the prompts show of one pitch; ``duration`` and ``user_cnt`` where the source has them."""

    index: int
    start: dt.datetime
    title: str
    prod: str
    text: str
    items: tuple[Item, ...] = ()
    duration: float | None = None
    user_cnt: float | None = None


class FieldError(InputError):
    """A pitch field the rules refuse; ``field`` names it (``pitches[2].title`` in a batch)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field, self.message = field, message


# ----------------------------------------------------------------- the rules, one value at a time

def cut(field: str, value: str) -> str:
    """``value`` cut to the documented length of ``field`` (a key of :data:`TEXT_LIMITS`)."""
    return value[:TEXT_LIMITS[field]]


def out_of_range(field: str, values: np.ndarray) -> np.ndarray:
    """Where finite ``values`` of ``field`` lie outside its documented range (all False for other fields)."""
    import numpy as np

    if field not in NUMBER_RANGES:
        return np.zeros(len(values), dtype=bool)
    lo, hi = NUMBER_RANGES[field]
    return (values < lo) | (values > hi)


def range_message(field: str) -> str:
    """Why a value of ``field`` outside its range is refused, after the value."""
    lo, hi = NUMBER_RANGES[field]
    return f"is outside {lo:g} .. {hi:g}"


def check_start(value: Any) -> dt.datetime:
    """A start time as the CSV loader reads it, or a ValueError saying why not."""
    if not isinstance(value, str) or not _START.fullmatch(value):
        raise ValueError(f"{json.dumps(value, ensure_ascii=False)[:40]} is not YYYY-MM-DD HH:MM")
    try:
        when = dt.datetime.strptime(value, START_FORMAT)
    except ValueError:
        raise ValueError(f"{value!r} is not YYYY-MM-DD HH:MM") from None
    try:
        day_facts(when.date())
    except CalendarYearError as e:
        raise ValueError(f"{value!r}: {e}") from None
    return when


def item_problem(it: object) -> bool:
    """True when ``it`` is not ``[idx, name, price]`` with a finite price up to :data:`MAX_PRICE`."""
    if type(it) is list and len(it) == 3:
        idx, name, price = it
        # exact types: a bool is no idx or price; json reads NaN and Infinity
        return not (type(idx) is int and type(name) is str and type(price) in (int, float)
                    and math.isfinite(price) and price <= MAX_PRICE)
    return True


def keep_items(items: object) -> list[Item]:
    """The showcase items shown: price > 0, the first 10, names cut; a ValueError naming the first bad item."""
    if not isinstance(items, list):
        raise ValueError("expected a list of [idx, name, price]")
    kept: list[Item] = []
    new = tuple.__new__  # Item(...) without the Python-level __new__ of a NamedTuple: a C call per item
    for n, it in enumerate(items, 1):
        if item_problem(it):
            raise ValueError(f"item {n}: expected [idx, name, price] with a price up to {MAX_PRICE:,.0f}, "
                             f"got {json.dumps(it, ensure_ascii=False)[:80]}")
        assert isinstance(it, list)
        if it[2] > 0 and len(kept) < MAX_SHOWCASE_ITEMS:
            kept.append(new(Item, (it[0], it[1][:MAX_ITEM_NAME], float(it[2]))))
    return kept


def content_index(start: str, title: str, prod: str, text: str, items: tuple[Item, ...]) -> int:
    """A stable id of what the questions show (the API's pitches have no index of their own)."""
    shown = [start, title, prod, text, [[it.name, it.price] for it in items]]
    digest = hashlib.sha256(json.dumps(shown, ensure_ascii=False).encode()).hexdigest()
    return int(digest[:INDEX_HEX], 16)


# ----------------------------------------------------------------- a pitch from API JSON

def _number(field: str) -> Callable[[Any], float]:
    def check(value: Any) -> float:
        """A finite number in range; text is read as a CSV cell is (``" 12 "``, ``"1e3"``)."""
        number: float = math.nan
        if isinstance(value, str):
            import pandas as pd

            number = float(pd.to_numeric(value.strip(), errors="coerce"))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            try:
                number = float(value)
            except OverflowError:
                pass
        shown = json.dumps(value, ensure_ascii=False)[:40]
        if not math.isfinite(number):
            raise ValueError(f"{shown} is not a finite number")
        import numpy as np

        if out_of_range(field, np.array([number]))[0]:
            raise ValueError(f"{shown} {range_message(field)}")
        return number
    return check


def _text(field: str) -> Callable[[Any], str]:
    def check(value: Any) -> str:
        if not isinstance(value, str):
            raise ValueError(f"must be text, got {json.dumps(value, ensure_ascii=False)[:40]}")
        return cut(field, value)
    return check


def _showcase(value: Any) -> tuple[Item, ...]:
    kept = keep_items(value)
    if not kept:
        raise ValueError("no showcase items (with price > 0)")
    return tuple(kept)


_CHECKS: dict[str, Callable[[Any], Any]] = {
    "start": check_start, "title": _text("title"), "prod": _text("prod"), "text": _text("text"),
    "duration": _number("duration"), "user_cnt": _number("user_cnt"), "showcase": _showcase}
#: a field name longer than this is cut where a reply names it
SHOWN_NAME = 40


def check_pitch(obj: Any, where: str = "") -> Pitch:
    """The pitch in a JSON object, indexed by :func:`content_index`, or a :class:`FieldError` naming
    the first bad field (an unknown field's name cut to :data:`SHOWN_NAME` characters)."""
    if not isinstance(obj, dict):
        raise FieldError(where.rstrip(".") or "body", f"expected a JSON object with {', '.join(FIELDS)}")
    for name in obj:
        if name not in _CHECKS:
            shown = name if len(name) <= SHOWN_NAME else name[:SHOWN_NAME] + "…"
            raise FieldError(where + shown, f"is not a pitch field (expected {', '.join(FIELDS)})")
    values: dict[str, Any] = {}
    for name in FIELDS:
        if name not in obj:
            raise FieldError(where + name, "is required")
        try:
            values[name] = _CHECKS[name](obj[name])
        except ValueError as e:
            raise FieldError(where + name, str(e)) from None
    start, title, prod, text, items = (values[k] for k in ("start", "title", "prod", "text", "showcase"))
    index = content_index(obj["start"], title, prod, text, items)
    return Pitch(index, start, title, prod, text, items, values["duration"], values["user_cnt"])
