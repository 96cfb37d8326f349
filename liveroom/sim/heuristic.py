"""The simulator's answers: a transparent heuristic, not a language model.

Each stage's 1..5 score is a small, documented function of what the prompt
shows: the persona, the hour and kind of day (traffic), the item prices
against the persona's budget (interest), and the selling words in the
transcript (desire). The synthetic-data generator uses the same functions, so
features scored through the simulator carry the signal planted in the targets.

Persona keys outside the default eight get a neutral profile.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Profile:
    budget: float      # yuan this persona spends on one item without thinking twice
    evening: float     # liking for 19:00-24:00 rooms
    morning: float     # liking for 06:00-12:00 rooms
    busy: float        # how much a workday's office hours keep this persona away
    persuadable: float # how strongly selling words move this persona


PROFILES: dict[str, Profile] = {
    "Z": Profile(200, 1.2, -0.4, 0.6, 1.2),
    "exquisite_mother": Profile(1500, 0.6, 0.6, 0.6, 0.8),
    "new_white": Profile(1200, 1.0, -0.2, 1.4, 0.6),
    "deep_middle": Profile(3000, 0.4, 0.2, 1.0, 0.4),
    "city_blue": Profile(250, 0.8, -0.2, 1.2, 1.0),
    "city_old": Profile(600, -0.6, 1.2, 0.0, 1.0),
    "town_youth": Profile(120, 1.0, 0.0, 0.4, 1.4),
    "town_old": Profile(100, -0.4, 1.0, 0.2, 1.2),
}
NEUTRAL = Profile(500, 0.5, 0.5, 0.5, 1.0)

POSITIVE_WORDS = ("优惠", "便宜", "划算", "正品", "包邮", "限时", "福利", "秒杀", "赠", "送")
NEGATIVE_WORDS = ("涨价", "贵", "没货", "售罄", "不退", "不保")


def _clip(x: float) -> int:
    return int(min(5, max(1, round(x))))


def entry_score(persona: str, hour: int, workday: bool) -> int:
    """Traffic, the 1..5 score: :func:`entry_latent` rounded into range."""
    return _clip(entry_latent(persona, hour, workday))


def entry_latent(persona: str, hour: int, workday: bool) -> float:
    """Traffic, unrounded: 3 at a neutral hour, up in the persona's favourite part of the
    day, down on a workday's office hours (09-18) for busy personas, down in
    the small hours (00-06) for everyone."""
    p = PROFILES.get(persona, NEUTRAL)
    x = 3.0
    if hour >= 19:
        x += p.evening
    elif 6 <= hour < 12:
        x += p.morning
    if workday and 9 <= hour < 18:
        x -= p.busy
    if hour < 6:
        x -= 1.5
    return x


def buy_scores(persona: str, prices: list[float]) -> list[int]:
    """Interest, the 1..5 score of each item: :func:`buy_latents` rounded into range."""
    return [_clip(x) for x in buy_latents(persona, prices)]


def buy_latents(persona: str, prices: list[float]) -> list[float]:
    """Interest, unrounded: 4 for an item at the persona's budget, one point less per
    doubling above it (to 1), a point more when it costs under a quarter."""
    budget = PROFILES.get(persona, NEUTRAL).budget
    out = []
    for price in prices:
        ratio = math.log2(max(price, 0.01) / budget)
        out.append(4.0 - max(ratio, 0.0) + (1.0 if ratio < -2 else 0.0))
    return out


def read_score(persona: str, text: str) -> int:
    """Desire, the 1..5 score: :func:`read_latent` rounded into range."""
    return _clip(read_latent(persona, text))


def read_latent(persona: str, text: str) -> float:
    """Desire, unrounded: 3 (no change) moved by persuadability x (selling words - warning
    words), each kind counted at most 3 times in the first 1,024 characters."""
    p = PROFILES.get(persona, NEUTRAL)
    text = text[:1024]
    pos = min(3, sum(text.count(w) for w in POSITIVE_WORDS))
    neg = min(3, sum(text.count(w) for w in NEGATIVE_WORDS))
    return 3.0 + p.persuadable * 0.6 * (pos - neg)


#: spread of the simulator's score distribution around its unrounded score (in score points)
SPREAD = 0.6


def score_distribution(x: float, temperature: float = 1.0) -> tuple[float, ...]:
    """The simulator's probabilities of the scores 1..5 for an unrounded heuristic score ``x``:
    p(k) proportional to exp(-(k - x)^2 / (2 SPREAD^2)), then sharpened by ``temperature`` as a
    sampler does (p^(1/T), renormalised; T = 0 puts all the mass on the mode, which is
    :func:`_clip` of ``x``). At T = 1 these are the raw probabilities a server reports as
    logprobs (vLLM and llama.cpp report them before temperature)."""
    if temperature <= 0:
        mode = _clip(x)
        return tuple(1.0 if k == mode else 0.0 for k in range(1, 6))
    logits = [-((k - x) ** 2) / (2 * SPREAD**2) / temperature for k in range(1, 6)]
    top = max(logits)
    w = [math.exp(v - top) for v in logits]
    total = sum(w)
    return tuple(v / total for v in w)
