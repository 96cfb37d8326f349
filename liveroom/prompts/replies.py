"""Finding the one JSON value in a model's reply text. Pure functions.

Models wrap JSON in prose, in ```json fences, or write Python-literal dicts
with single quotes. :func:`extract_json` accepts all of these (``ast.literal_eval``
for the latter: never ``eval``) and raises :class:`ReplyError` with a short
reason, fit to be sent back to the model in a re-ask.
"""

from __future__ import annotations

import ast
import math
import re
from typing import Any

import orjson

from ..async_client.errors import UnusableReply


class ReplyError(UnusableReply):
    """A reply that cannot be used; ``str(err)`` is a short reason.

    An :class:`~liveroom.async_client.errors.UnusableReply` (and so a
    ``ValueError``), so the engine re-asks without knowing this module.
    """


_FENCE = re.compile(r"```[a-zA-Z]*\s*\n?(.*?)```", re.S)
_OPEN = {"{": "}", "[": "]"}


def _balanced(text: str, start: int) -> str | None:
    """The bracketed span opening at ``start``, skipping quoted strings."""
    stack: list[str] = []
    quote: str | None = None
    i = start
    while i < len(text):
        ch = text[i]
        if quote:
            if ch == "\\":
                i += 1
            elif ch == quote:
                quote = None
        elif ch in "\"'":
            quote = ch
        elif ch in _OPEN:
            stack.append(_OPEN[ch])
        elif ch in "}]":
            if not stack or stack.pop() != ch:
                return None
            if not stack:
                return text[start : i + 1]
        i += 1
    return None


def _load(candidate: str) -> Any:
    try:
        return orjson.loads(candidate)
    except orjson.JSONDecodeError:
        pass
    try:  # Python literal: single quotes, True/False/None
        return ast.literal_eval(candidate)
    except (ValueError, SyntaxError, MemoryError, RecursionError, TypeError):
        return None


def extract_json(text: str) -> dict | list:
    """The first JSON object or list in ``text``."""
    text = text.strip()
    if not text:
        raise ReplyError("empty reply")
    value = _load(text)
    if isinstance(value, (dict, list)):
        return value
    for block in _FENCE.findall(text):
        value = _load(block.strip())
        if isinstance(value, (dict, list)):
            return value
    for m in re.finditer(r"[{\[]", text):
        span = _balanced(text, m.start())
        if span is not None:
            value = _load(span)
            if isinstance(value, (dict, list)):
                return value
    raise ReplyError("no JSON object found in the reply")


def as_score(value: Any, key: str) -> int:
    """An integer score 1..5 from an int, an integral float or a numeric string."""
    if isinstance(value, str):
        s = value.strip()
        try:
            value = float(s) if s else None
        except ValueError:
            raise ReplyError(f"'{key}' must be an integer 1..5, got {value!r}") from None
    if (
        isinstance(value, bool) or not isinstance(value, (int, float))
        or (isinstance(value, float) and not math.isfinite(value))  # int(inf) would raise OverflowError
    ):
        raise ReplyError(f"'{key}' must be an integer 1..5, got {value!r}")
    if not 1 <= value <= 5 or value != int(value):
        shown = f"{value:g}" if isinstance(value, float) else str(value)[:20]
        raise ReplyError(f"'{key}' must be an integer 1..5, got {shown}")
    return int(value)


def pick(obj: dict, keys: tuple[str, ...]) -> Any:
    """The value of the first of ``keys`` present in ``obj``; ReplyError naming ``keys[0]``."""
    for k in keys:
        if k in obj:
            return obj[k]
    raise ReplyError(f"missing key '{keys[0]}'")
