"""``--score-probs`` and ``--top-logprobs``: asking each score's token probabilities, declared once.

bin/score and bin/batch prepare take the flags (:func:`add_probability_arguments`);
:func:`requested_top_logprobs` reads them, and :func:`ask_probabilities` (what a
service calls too, with the K it wants) puts them in the model parameters as
each provider allows (:func:`~liveroom.async_client.providers.logprobs_for`,
docs/PROVIDERS.md section 7): K capped at the provider's most, or not asked at
all where the provider or model does not return them, each such decision one
line for the run to show at its start.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable
from dataclasses import replace

from ..async_client.providers import Provider, logprobs_for
from ..cliargs import non_negative_int
from ..errors import InputError
from .plan import ModelParams

DEFAULT_TOP_LOGPROBS = 5  # DashScope's most; OpenAI, DeepSeek and vLLM take 20


def add_probability_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--score-probs", action="store_true",
                   help="ask the token probabilities of every score (logprobs): each record keeps p(1..5), the "
                        "expected score and the digits' mass beside the sampled integer (docs/SCORES.md); a "
                        "server that returns none is named once and its records keep the integers")
    p.add_argument("--top-logprobs", type=non_negative_int, default=None, metavar="K",
                   help=f"alternatives per token asked with --score-probs (default: {DEFAULT_TOP_LOGPROBS}; "
                        "capped at the provider's most, docs/PROVIDERS.md section 7)")


def requested_top_logprobs(args: argparse.Namespace) -> int | None:
    """The K the flags ask for; None without ``--score-probs``."""
    top = getattr(args, "top_logprobs", None)
    if not getattr(args, "score_probs", False):
        if top is not None:
            raise InputError("--top-logprobs needs --score-probs")
        return None
    return DEFAULT_TOP_LOGPROBS if top is None else top


def ask_probabilities(params: ModelParams, top: int | None,
                      providers: Iterable[Provider | None]) -> tuple[ModelParams, list[str]]:
    """``params`` asking ``top`` token alternatives of every endpoint's ``providers`` (None: the lowest
    cap among them, or not at all when one returns none), and the lines that say what was changed."""
    if top is None:
        return replace(params, top_logprobs=None), []
    notes: list[str] = []
    for provider in {(p.name if p is not None else None): p for p in providers}.values():
        asked, note = logprobs_for(provider, params.model, top)
        if note:
            notes.append(note)
        if asked is None:
            return replace(params, top_logprobs=None), notes
        top = min(top, asked)
    return replace(params, top_logprobs=top), notes
