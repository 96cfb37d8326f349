"""Scores with their probabilities, read from a reply's token logprobs. Pure functions.

A chat completion asked with ``logprobs: true, top_logprobs: K`` carries, per
token of the reply, its text, its log probability and the K likeliest tokens
at that place (``choices[0].logprobs.content``: OpenAI's shape, which vLLM and
llama.cpp's ``llama-server`` copy; docs/PROVIDERS.md section 7). For each score
of a reply (entry's ``want_to_enter``, each item's ``want_to_buy``, read's
``impact``) the token that holds its digit is the one found AFTER its key in
the text the tokens spell: that text may hold more than the message content
(a code fence, a ``<think>`` draft: the last occurrences of the key are the
answer's), a buy reply's item number comes before its score, and a tokenizer
may glue a space, a quote or a colon to the digit. Among that token's
alternatives the digits 1..5 are read (spaces, quotes, colons and commas
stripped; ``0`` and ``6``-``9``, which a server reporting probabilities before
its grammar shows, are left out), a digit not among them has probability 0,
and the five are renormalised: p(1..5), the expected score sum k p(k), and
the mass the digits held before renormalising.

The keys a record's ``scores`` get are those of :mod:`liveroom.data.layout`
(``<f>_expected``, ``<f>_probs``, ``<f>_mass``; a buy reply ``items_*``, its
``state_*`` the items' mean and its ``action_*`` the first item's). When any
score's token cannot be found (no logprobs, another key, a digit that is not
the parsed score) the reply gets none of them and keeps its integers.
"""

from __future__ import annotations

import bisect
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import accumulate
from statistics import fmean
from typing import Any

from ..data.layout import EXPECTED, MASS, PROBS, SCORE_LEVELS
from .answers import buy_order

_STRIP = " \t\r\n\"':,}"
#: each stage's score key in the reply and the feature its integer fills (buy: per item)
SCORE_KEYS: dict[str, tuple[str, str]] = {"entry": ("want_to_enter", "entry"), "buy": ("want_to_buy", "items"),
                                          "read": ("impact", "read")}


@dataclass(frozen=True)
class ScoreProbs:
    """One score's probabilities: p(1)..p(5) renormalised, the expected score and the digits' mass."""

    probs: tuple[float, ...]
    expected: float
    mass: float


def digit_of(token: str) -> int | None:
    """The digit a token stands for (``"4"``, ``" 4"``, ``'"4'``, ``":4"``, ``"4,"``, ``"4}"``); None for any other."""
    core = token.strip(_STRIP)
    return int(core) if len(core) == 1 and "0" <= core <= "9" else None


def distribution(alternatives: Sequence[tuple[str, float]]) -> ScoreProbs | None:
    """The score distribution of one place from its (token, logprob) alternatives; None when no
    digit 1..5 is among them. Tokens standing for the same digit add up."""
    p = [0.0] * len(SCORE_LEVELS)
    for token, logprob in alternatives:
        d = digit_of(token)
        if d is not None and 1 <= d <= len(SCORE_LEVELS) and math.isfinite(logprob):
            p[d - 1] += math.exp(min(logprob, 0.0))
    mass = sum(p)
    if mass <= 0.0:
        return None
    probs = tuple(v / mass for v in p)
    return ScoreProbs(probs, sum(k * v for k, v in zip(SCORE_LEVELS, probs)), min(mass, 1.0))


def _entries(logprobs: Any) -> list[Any] | None:
    """The token entries of a choice's ``logprobs`` object; None when it has none."""
    content = logprobs.get("content") if isinstance(logprobs, dict) else None
    if not isinstance(content, list) or not content:
        return None
    return content


def _alternatives(entry: Mapping[str, Any]) -> list[tuple[str, float]]:
    """(token, logprob) of a place's chosen token and of its top alternatives (OpenAI need not list
    the chosen token among them)."""
    out = []
    for item in (entry, *(entry.get("top_logprobs") or ())):
        if type(item) is dict:
            token, logprob = item.get("token"), item.get("logprob")
            if isinstance(token, str) and isinstance(logprob, (int, float)) and not isinstance(logprob, bool):
                out.append((token, float(logprob)))
    seen: dict[str, float] = {}
    for token, logprob in out:  # the chosen token again among the alternatives counts once
        seen.setdefault(token, logprob)
    return list(seen.items())


def _key_pattern(key: str) -> re.Pattern[str]:
    return re.compile(rf"{re.escape(key)}[\"']?\s*:\s*[\"']?\s*([0-9])")


_PATTERNS = {key: _key_pattern(key) for key, _ in SCORE_KEYS.values()}


def find_scores(logprobs: Any, key: str, count: int) -> list[tuple[int, ScoreProbs]] | None:
    """(digit, its distribution) of the last ``count`` values of ``key`` in the token stream, in
    stream order; None when the stream has fewer or a digit's token has no digit 1..5 among its
    alternatives."""
    entries = _entries(logprobs)
    if entries is None or count <= 0:
        return None
    raw = [e.get("token") if type(e) is dict else None for e in entries]
    tokens: list[str] = [t if type(t) is str else "" for t in raw]
    text = "".join(tokens)
    starts = list(accumulate(map(len, tokens)))  # where each token ends
    pattern = _PATTERNS.get(key) or _key_pattern(key)
    found = [m.start(1) for m in pattern.finditer(text)][-count:]
    if len(found) < count:
        return None
    out = []
    for at in found:
        place = bisect.bisect_right(starts, at)  # the token whose end is past the digit
        probs = distribution(_alternatives(entries[place]))
        if probs is None:
            return None
        out.append((int(text[at]), probs))
    return out


def _keys(feature: str, s: ScoreProbs) -> dict[str, Any]:
    return {feature + EXPECTED: s.expected, feature + PROBS: list(s.probs), feature + MASS: s.mass}


def _mean(items: Sequence[ScoreProbs]) -> ScoreProbs:
    probs = tuple(fmean(p.probs[k] for p in items) for k in range(len(SCORE_LEVELS)))
    return ScoreProbs(probs, fmean(p.expected for p in items), fmean(p.mass for p in items))


def score_probabilities(stage: str, text: str, logprobs: Any, scores: Mapping[str, Any],
                        n_items: int = 0) -> dict[str, Any] | None:
    """The probability keys (layout's) for the parsed ``scores`` of a reply of ``stage`` whose content
    is ``text``; None when the reply's tokens do not give every score's distribution (its digit the
    parsed score)."""
    key, feature = SCORE_KEYS[stage]
    if stage != "buy":
        found = find_scores(logprobs, key, 1)
        if found is None or found[0][0] != scores.get(feature):
            return None
        return _keys(feature, found[0][1])
    try:
        order = buy_order(text, n_items)  # showcase item of each entry in reply order (None: not used)
    except ValueError:
        return None
    found = find_scores(logprobs, key, len(order))
    ints = scores.get("scores")
    if found is None or not isinstance(ints, list) or len(ints) != n_items:
        return None
    by_item: dict[int, ScoreProbs] = {}
    for item, (digit, probs) in zip(order, found):
        if item is not None:
            if digit != ints[item - 1]:
                return None
            by_item[item] = probs
    if sorted(by_item) != list(range(1, n_items + 1)):
        return None
    items = [by_item[i] for i in range(1, n_items + 1)]
    return {f"items{EXPECTED}": [p.expected for p in items], f"items{PROBS}": [list(p.probs) for p in items],
            f"items{MASS}": [p.mass for p in items], **_keys("state", _mean(items)), **_keys("action", items[0])}
