"""The retry policy, composed from tenacity's parts.

Retry :class:`~liveroom.async_client.errors.Retryable` failures up to
``max_retries`` times; wait what the server asked for (``Retry-After`` /
``retry-after-ms``) when it said, else exponential backoff with jitter.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential_jitter,
)
from tenacity.wait import wait_base

from .errors import Retryable


class wait_retry_after(wait_base):
    """The server's ``retry_after`` when the failure carries one, else ``fallback``."""

    def __init__(self, fallback: wait_base, cap: float):
        self.fallback = fallback
        self.cap = cap

    def __call__(self, retry_state: RetryCallState) -> float:
        outcome = retry_state.outcome
        after = getattr(outcome.exception(), "retry_after", None) if outcome else None
        return min(after, self.cap) if after is not None else self.fallback(retry_state)


def retry_policy(
    max_retries: int,
    initial: float,
    maximum: float,
    before_sleep: Callable[[RetryCallState], None] | None = None,
    sleep: Callable[[float], Awaitable[None]] | None = None,
) -> AsyncRetrying:
    """The policy; ``sleep`` (default ``asyncio.sleep``) lets a caller cut a wait short when it stops."""
    return AsyncRetrying(
        stop=stop_after_attempt(max_retries + 1),
        wait=wait_retry_after(wait_exponential_jitter(multiplier=initial, max=maximum, jitter=initial), cap=600.0),
        retry=retry_if_exception_type(Retryable),
        before_sleep=before_sleep,
        reraise=True,
        sleep=sleep or asyncio.sleep,
    )
