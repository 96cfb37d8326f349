"""Finding the one JSON value in a model's reply text. Pure functions.

Models wrap JSON in prose, in ```json fences, or write Python-literal dicts
with single quotes. :func:`extract_json` accepts all of these (``ast.literal_eval``
for the latter: never ``eval``) and raises :class:`ReplyError` with a short
reason, fit to be sent back to the model in a re-ask.

Reasoning models put their thoughts in the content (docs/PROVIDERS.md section
5): a leading ``<think>...</think>`` block (GLM-Z1, vLLM or llama.cpp without
a reasoning parser), only its ``...</think>`` end (DeepSeek-R1, whose opening
tag is in the template), GLM-4.5V's ``<|begin_of_box|>`` markers. They are
dropped first (:func:`strip_reasoning`), so a JSON-looking draft inside them
is never taken for the answer.

It takes linear time whatever the reply's shape (a looping model's 20,000
``{`` must not stall the event loop): a reply over :data:`MAX_REPLY_CHARS` is
refused before any parsing, the bracketed spans are found in at most
:data:`PASSES` passes over the text, and the spans tried may together be at
most a few times the reply's length.
"""

from __future__ import annotations

import ast
import itertools
import math
import re
from collections.abc import Iterator
from typing import Any

import orjson

from ..async_client.errors import UnusableReply


class ReplyError(UnusableReply):
    """A reply that cannot be used; ``str(err)`` is a short reason.

    An :class:`~liveroom.async_client.errors.UnusableReply` (and so a
    ``ValueError``), so the engine re-asks without knowing this module.
    """


MAX_REPLY_CHARS = 65536  # a longer reply is unusable (a usable one is well under 1 KB)
LITERAL_CHARS = 8192     # a longer candidate is not tried as a Python literal (ast is slow on big input)
ATTEMPTS = 32            # candidates (fenced blocks, spans) tried at most
PASSES = 3               # scans for spans: one, and a new one where a quote never closed
STEPS = 10_000           # brackets and quotes read per scan (a reply with JSON in prose has a few dozen)
_TOKEN = re.compile(r"[{\[]+|[}\]]|[\"']")  # runs of openers, a closer, a quote
_REST_OF = {q: re.compile(rf"(?:[^{q}\\]|\\.)*{q}", re.S) for q in "\"'"}  # a string's rest, its quote included
_OPENER = {"}": "{", "]": "["}
_LANG = re.compile(r"[a-zA-Z]*")


def _scan(text: str, begin: int, spans: set[tuple[int, int]]) -> int | None:
    """Add the (start, end) of every balanced span found from ``begin`` to ``spans``, in one pass.

    Quotes count only inside brackets (prose may hold an apostrophe) and a
    string is skipped whole; a closer that does not match forgets what is
    open; at most :data:`STEPS` brackets and quotes are read. Returns where to
    scan again when a quote never closed, which may have hidden later spans.
    """
    stack: list[int] = []
    pos = begin
    for _ in range(STEPS):
        m = _TOKEN.search(text, pos)
        if m is None:
            break
        i, pos = m.start(), m.end()
        ch = text[i]
        if ch in "{[":
            stack.extend(range(i, pos))
        elif ch in "}]":
            if stack:
                if text[stack[-1]] != _OPENER[ch]:
                    stack.clear()
                else:
                    spans.add((stack.pop(), pos))
        elif stack:  # a quote inside brackets: jump past its string
            rest = _REST_OF[ch].match(text, pos)
            if rest is None:
                return stack[0] + 1
            pos = rest.end()
    return None


def _spans(text: str) -> list[tuple[int, int]]:
    """Every balanced bracketed span of ``text``, by start."""
    spans: set[tuple[int, int]] = set()
    begin: int | None = 0
    for _ in range(PASSES):
        if begin is None:
            break
        begin = _scan(text, begin, spans)
    return sorted(spans)


def _fenced(text: str) -> list[str]:
    """The contents of the ``` fenced blocks (a language tag after the opening fence dropped)."""
    parts = text.split("```", 2 * ATTEMPTS)
    blocks = parts[1:-1:2][:ATTEMPTS]  # between an opening and a closing fence
    return [b[_LANG.match(b).end():].strip() for b in blocks]  # type: ignore[union-attr]


def _load(candidate: str) -> Any:
    try:
        return orjson.loads(candidate)
    except orjson.JSONDecodeError:
        pass
    if len(candidate) > LITERAL_CHARS:
        return None
    try:  # Python literal: single quotes, True/False/None
        return ast.literal_eval(candidate)
    except (ValueError, SyntaxError, MemoryError, RecursionError, TypeError):
        return None


def _candidates(text: str) -> Iterator[str]:
    """The fenced blocks, then the bracketed spans by start: at most :data:`ATTEMPTS`,
    the spans holding together at most a few times the text's length."""
    blocks = _fenced(text)
    yield from blocks[:ATTEMPTS]
    budget = 4 * len(text) + 4096
    for start, end in _spans(text)[:max(0, ATTEMPTS - len(blocks))]:
        budget -= end - start
        if budget < 0:
            return
        yield text[start:end]


THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
_BOXES = ("<|begin_of_box|>", "<|end_of_box|>")


def strip_reasoning(text: str) -> str:
    """``text`` without a leading ``<think>...</think>`` block (or a bare ``...</think>`` prefix)
    and without GLM-4.5V's box markers; a ``<think>`` never closed leaves nothing."""
    if THINK_CLOSE in text:
        head = text.lstrip()
        if head.startswith(THINK_OPEN) or THINK_OPEN not in text:  # the block, or its end alone (DeepSeek)
            text = text[text.index(THINK_CLOSE) + len(THINK_CLOSE):]
    elif text.lstrip().startswith(THINK_OPEN):
        return ""  # the reply was all reasoning, cut by max_tokens
    if "<|" in text:
        for marker in _BOXES:
            text = text.replace(marker, "")
    return text


def extract_json(text: str) -> dict | list:
    """The first JSON object or list in ``text``, reasoning dropped first (:func:`strip_reasoning`)."""
    if "<" in text:  # one cheap scan: most replies hold no tag at all
        reasoned = strip_reasoning(text)
        if not reasoned.strip() and text.strip():
            raise ReplyError("the reply holds only reasoning (<think> ...), no answer after it")
        text = reasoned
    if len(text) > MAX_REPLY_CHARS:
        raise ReplyError(f"reply too long ({len(text)} characters, at most {MAX_REPLY_CHARS})")
    text = text.strip()
    if not text:
        raise ReplyError("empty reply")
    for candidate in itertools.chain((text,), _candidates(text)):
        value = _load(candidate)
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
