"""The reply each stage asks for: its JSON Schema and its parser. Pure functions.

The same for every prompt set (:mod:`liveroom.prompts.wording`): a set changes
what the model is told, never what a reply must look like. Parsers take the
reply text and the item count and return the scores, or raise
:class:`~liveroom.prompts.replies.ReplyError` with a reason fit for a re-ask.
Buy replies are read wrapped (``{"items": [...]}``, as asked) or as a bare
list, numbered from 1, from 0 or by position, with ``want_to_buy`` or ``want``.
"""

from __future__ import annotations

from statistics import fmean
from typing import Any

from ..data.pitch import Pitch
from .replies import ReplyError, as_score, extract_json, pick

SCORE: dict[str, Any] = {"type": "integer", "enum": [1, 2, 3, 4, 5]}


def _obj(props: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "properties": props, "required": list(props), "additionalProperties": False}


def entry_schema(p: Pitch) -> dict[str, Any]:
    """``{"want_to_enter": 1..5, "reason": str}``."""
    return _obj({"want_to_enter": SCORE, "reason": {"type": "string"}})


def parse_entry(text: str, n_items: int = 0) -> dict[str, Any]:
    """``{"entry": score}``; a few other key names that models use are accepted too."""
    obj = _one_object(extract_json(text))
    return {"entry": as_score(pick(obj, ("want_to_enter", "want", "score", "enter")), "want_to_enter")}


def buy_schema(p: Pitch) -> dict[str, Any]:
    """``{"items": [...]}`` with exactly one entry per showcase item (a wrapped list suits ``json_object``)."""
    n = len(p.items)
    item = _obj({"idx": {"type": "integer", "enum": list(range(1, n + 1))}, "want_to_buy": SCORE,
                 "reason": {"type": "string"}})
    return _obj({"items": {"type": "array", "items": item, "minItems": n, "maxItems": n}})


_LIST_KEYS = ("items", "scores", "results", "goods", "products", "data")
_IDX_KEYS = ("idx", "id", "index", "item", "#")
_BUY_KEYS = ("want_to_buy", "want", "score", "rating")


def _item_list(value: Any) -> list[Any]:
    if isinstance(value, list):
        return value
    for k in _LIST_KEYS:
        if isinstance(value.get(k), list):
            return value[k]
    lists = [v for v in value.values() if isinstance(v, list)]
    if len(lists) == 1:
        return lists[0]
    if any(k in value for k in _BUY_KEYS):
        return [value]
    raise ReplyError("expected a list of items with 'want_to_buy' scores")


def _as_idx(value: Any) -> int:
    try:
        return int(str(value).strip().lstrip("#"))
    except ValueError:
        raise ReplyError(f"'idx' must be an item number, got {value!r}") from None


def _buy_pairs(text: str, n_items: int) -> list[tuple[int, dict[str, Any]]]:
    """(item number, entry) of every entry of a buy reply, in reply order, numbered as the reply numbers them."""
    entries = _item_list(extract_json(text))
    if not entries or not all(isinstance(e, dict) for e in entries):
        raise ReplyError("expected a list of item objects")
    if all(not any(k in e for k in _IDX_KEYS) for e in entries):
        return [(i, e) for i, e in enumerate(entries, 1)]  # numbered by position
    pairs = [(_as_idx(pick(e, _IDX_KEYS)), e) for e in entries]
    if {i for i, _ in pairs} >= set(range(n_items)) and n_items not in {i for i, _ in pairs}:
        pairs = [(i + 1, e) for i, e in pairs]  # numbered from 0
    return pairs


def _used(pairs: list[tuple[int, dict[str, Any]]], n_items: int) -> list[int | None]:
    """The showcase item each entry scores, None for one left out (out of range, or the item seen before)."""
    seen: set[int] = set()
    out: list[int | None] = []
    for i, _ in pairs:
        used = 1 <= i <= n_items and i not in seen
        seen.add(i)
        out.append(i if used else None)
    return out


def buy_order(text: str, n_items: int) -> list[int | None]:
    """The showcase item (1..n) that each entry of a buy reply scores, in reply order; None for an entry
    :func:`parse_buy` does not use. ReplyError as :func:`parse_buy` raises it."""
    return _used(_buy_pairs(text, n_items), n_items)


def parse_buy(text: str, n_items: int) -> dict[str, Any]:
    """Every item's score in showcase order, their mean (``state``) and the first (``action``)."""
    pairs = _buy_pairs(text, n_items)
    scores: dict[int, int] = {}
    for i, (_, e) in zip(_used(pairs, n_items), pairs):
        if i is not None:
            scores[i] = as_score(pick(e, _BUY_KEYS), "want_to_buy")
    missing = [i for i in range(1, n_items + 1) if i not in scores]
    if missing:
        raise ReplyError(f"item(s) {', '.join(f'#{i}' for i in missing)} not scored")
    ordered = [scores[i] for i in range(1, n_items + 1)]
    return {"scores": ordered, "state": fmean(ordered), "action": ordered[0]}



def read_schema(p: Pitch) -> dict[str, Any]:
    """``{"impact": 1..5, "reason": str}``."""
    return _obj({"impact": SCORE, "reason": {"type": "string"}})


def parse_read(text: str, n_items: int = 0) -> dict[str, Any]:
    """``{"read": score}``."""
    obj = _one_object(extract_json(text))
    return {"read": as_score(pick(obj, ("impact", "score", "want")), "impact")}


def _one_object(value: Any) -> dict[str, Any]:
    if isinstance(value, list) and len(value) == 1:
        value = value[0]
    if not isinstance(value, dict):
        raise ReplyError("expected one JSON object")
    return value


