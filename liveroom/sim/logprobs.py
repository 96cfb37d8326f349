"""The simulator's token probabilities: a reply's scores drawn from a distribution, and its tokens.

A request that asks ``logprobs: true`` (``top_logprobs: K``) gets, instead of
the heuristic's mode, each score DRAWN from
:func:`~liveroom.sim.heuristic.score_distribution` of its unrounded score at
the request's temperature (a server's sampler), with a random generator seeded
by the simulator's seed and the conversation, so a rerun draws the same. The
reply's ``logprobs.content`` holds its tokens (keys, punctuation, each CJK
character, each digit: :func:`tokenize`); a score's digit token lists the K
likeliest digits of the RAW distribution (temperature 1, as vLLM and llama.cpp
report them) and two non-digit alternatives of tiny probability (``"0"`` and a
quote), so a reader must filter; every other token is near-certain. A reader
that renormalises the digits 1..5 among the alternatives gets back the raw
distribution exactly (the top K of it), which is what tests check.
"""

from __future__ import annotations

import bisect
import hashlib
import math
import random
import re
import struct
from itertools import accumulate
from typing import Any

from .heuristic import buy_latents, entry_latent, read_latent, score_distribution
from .prompt import BUY_STAGE, ENTRY_STAGE, READ_STAGE, Prompt

#: probability of each non-digit alternative of a score's token (the digits share the rest)
OTHER = 1e-4
OTHERS = ("0", '"')
SURE = -1e-5  # the logprob of every token that is not a score's digit
FILLER = (" ", "\n", ",", '"', "的")  # alternatives of a sure token, far less likely
_TOKEN = re.compile(r"[A-Za-z_]+|[0-9]|\s+|[^\x00-\x7f]|[^A-Za-z_0-9\s\x80-\U0010ffff]+")
SCORE_KEYS = ("want_to_enter", "want_to_buy", "impact")


def latents(prompt: Prompt) -> list[float]:
    """The unrounded heuristic score of each score of the stage's reply (buy: each item, showcase order)."""
    if prompt.stage == ENTRY_STAGE:
        return [entry_latent(prompt.persona, prompt.hour or 0, prompt.workday)]
    if prompt.stage == BUY_STAGE:
        return buy_latents(prompt.persona, list(prompt.prices))
    if prompt.stage == READ_STAGE:
        return [read_latent(prompt.persona, prompt.text)]
    raise ValueError(f"unknown stage {prompt.stage!r}")


def rng_for(seed: int, digest: bytes) -> random.Random:
    """The generator of one conversation's draws: the simulator's seed and the conversation's digest."""
    return random.Random(hashlib.blake2b(struct.pack("<q", seed) + digest, digest_size=8).digest())


def draw(latent: float, temperature: float, rng: random.Random) -> int:
    """A score 1..5 drawn from ``score_distribution(latent, temperature)``."""
    cum = list(accumulate(score_distribution(latent, temperature)))
    return min(5, 1 + bisect.bisect_right(cum, rng.random() * cum[-1]))


def tokenize(text: str) -> list[str]:
    """The simulator's tokens of ``text``: runs of letters, each digit, runs of spaces or punctuation,
    each other character; they join back to ``text``."""
    return _TOKEN.findall(text)


def _sure(token: str, top: int) -> dict[str, Any]:
    alts = [{"token": token, "logprob": SURE, "bytes": list(token.encode())}]
    alts += [{"token": f, "logprob": -12.0 - j, "bytes": list(f.encode())} for j, f in enumerate(FILLER[:top - 1])]
    return {"token": token, "logprob": SURE, "bytes": list(token.encode()), "top_logprobs": alts[:top]}


def _score(digit: str, latent: float, top: int) -> dict[str, Any]:
    """A score's digit token: the K likeliest digits of the raw distribution, then the non-digits."""
    raw = score_distribution(latent, 1.0)
    keep = 1.0 - OTHER * len(OTHERS)

    def lp(p: float) -> float:
        return math.log(p) if p > 0 else -9999.0  # OpenAI's value for "very unlikely"

    ranked = sorted(range(5), key=lambda k: -raw[k])[:top]
    alts = [{"token": str(k + 1), "logprob": lp(raw[k] * keep), "bytes": [ord(str(k + 1))]} for k in ranked]
    alts += [{"token": t, "logprob": math.log(OTHER), "bytes": list(t.encode())} for t in OTHERS]
    return {"token": digit, "logprob": lp(raw[int(digit) - 1] * keep), "bytes": [ord(digit)], "top_logprobs": alts}


def token_logprobs(content: str, latents_: list[float] | None, top: int) -> dict[str, Any]:
    """The ``logprobs`` object of a reply: each token of ``content``; the digit after each score key
    (in order) with ``latents_``'s distributions, or near-certain like the rest when ``latents_`` is None."""
    out = []
    tokens = tokenize(content)
    scores = iter(latents_ or ())
    after_key = False
    for token in tokens:
        if token in SCORE_KEYS:
            after_key = True
        elif after_key and token.isdigit() and latents_ is not None:
            after_key = False
            latent = next(scores, None)
            if latent is not None and "1" <= token <= "5":
                out.append(_score(token, latent, top))
                continue
        elif token.strip() and not set(token) <= set('":'):
            after_key = False
        out.append(_sure(token, top))
    return {"content": out, "refusal": None}
