"""What an answer's ``x-ratelimit-*`` headers said: a fact the transport reads
(:func:`~.transport.rate_window`), an error or a reply carries and the limits act on
(:class:`~.limits.Allowance`). Its own module so that each of them imports it and none
imports another for it."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Window:
    """What an answer's ``x-ratelimit-*`` headers said; None where a header was absent or unreadable."""

    requests: int | None = None        # x-ratelimit-remaining-requests
    requests_reset: float | None = None  # x-ratelimit-reset-requests, seconds
    tokens: int | None = None          # x-ratelimit-remaining-tokens
    tokens_reset: float | None = None    # x-ratelimit-reset-tokens, seconds
