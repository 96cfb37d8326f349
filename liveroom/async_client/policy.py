"""The retry policy: whether a failed send goes again, and how long it, and everyone, wait first.

Decided here and nowhere else, from facts: what the transport read from the answer (a
:class:`~.errors.Retryable`'s ``status``, ``retry_after``, ``signal``) and what the live
concurrency limit made of it (a :class:`Failure`'s ``over``). Each rule is one small class
in tenacity's style (a callable of tenacity's ``RetryCallState``), composed by
:class:`RetryPolicy`:

* :class:`wait_retry_after`: the server's ``Retry-After`` (``retry-after-ms``) when it said;
* :class:`wait_held_back`: none when the live limit, cut for this 429, holds the job back
  (it goes again as soon as a slot frees);
* else exponential backoff with jitter;
* :class:`pause_everyone`: a ``rate`` 429 that the live limit took for the provider being
  over its limit, with a ``Retry-After``, says the provider's window is full: every worker
  waits that long. A scattered 429 delays its own job only.

The exceptions are read, never changed. :meth:`RetryPolicy.retrying` is tenacity's own loop
over these parts (for what raises :class:`~.errors.Retryable`: the batch API client);
:meth:`RetryPolicy.again` is the engine's, entered after a first failure it holds as a value,
so that the send that succeeds at once, most of them, costs nothing of tenacity's.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential_jitter,
)
from tenacity.wait import wait_base

from .errors import Retryable
from .limits import CoolDown

MAX_WAIT = 600.0   # seconds one request waits on a Retry-After, at most
MAX_PAUSE = 600.0  # seconds a full provider window may pause every worker, at most

T = TypeVar("T")
Hook = Callable[[RetryCallState], None]


@dataclass(frozen=True, slots=True)
class Failure:
    """A send worth another try, as it was reported: the transport's error, and the live
    concurrency limit's verdict on it when it was a 429."""

    error: Retryable
    over: bool = False      # the live limit took this 429 for the provider being over its limit
    adaptive: bool = False  # the live limit moves (it was cut for it), not ``--fixed-concurrency``


def failure_of(state: RetryCallState) -> Failure | None:
    """The failure an attempt ended in: a :class:`Failure` it returned (the engine's) or a
    :class:`~.errors.Retryable` it raised (nothing known of the limit); None for anything else."""
    outcome = state.outcome
    if outcome is None:
        return None
    if outcome.failed:
        error = outcome.exception()
        return Failure(error) if isinstance(error, Retryable) else None
    value = outcome.result()
    return value if isinstance(value, Failure) else None


class wait_retry_after(wait_base):
    """The server's ``Retry-After`` when the failure carries one (at most ``cap``), else ``fallback``."""

    def __init__(self, fallback: wait_base, cap: float = MAX_WAIT) -> None:
        self.fallback = fallback
        self.cap = cap

    def __call__(self, retry_state: RetryCallState) -> float:
        failure = failure_of(retry_state)
        after = failure.error.retry_after if failure is not None else None
        return min(after, self.cap) if after is not None else self.fallback(retry_state)


class wait_held_back(wait_base):
    """No wait when the live limit took the 429 for the provider being over its limit and was
    cut for it: the cut limit holds the job back until a slot frees, a backoff on top would
    only leave that slot empty. Else ``fallback``."""

    def __init__(self, fallback: wait_base) -> None:
        self.fallback = fallback

    def __call__(self, retry_state: RetryCallState) -> float:
        failure = failure_of(retry_state)
        if failure is not None and failure.over and failure.adaptive:
            return 0.0
        return self.fallback(retry_state)


class pause_everyone:
    """tenacity's ``after`` hook: a ``rate`` 429 that the live limit took for the provider being
    over its limit, with a ``Retry-After``, says the provider's window is full: nobody sends for
    that long (at most :data:`MAX_PAUSE`), through the shared ``cooldown``. Run after each failed
    attempt, the last one too: the window is full whether or not this job tries again."""

    def __init__(self, cooldown: CoolDown) -> None:
        self.cooldown = cooldown

    def __call__(self, retry_state: RetryCallState) -> None:
        failure = failure_of(retry_state)
        if failure is not None and failure.over and failure.error.signal == "rate" and failure.error.retry_after:
            self.cooldown.trip(min(failure.error.retry_after, MAX_PAUSE))


class RetryPolicy:
    """Up to ``max_retries`` retries of a :class:`~.errors.Retryable` failure, each after the wait
    the rules above decide (backoff from ``initial`` doubling up to ``maximum``, with ``initial``
    of jitter); with a ``cooldown``, a full provider window pauses everyone. ``before_sleep`` is
    told of each retry (a count)."""

    def __init__(self, max_retries: int, initial: float, maximum: float, cooldown: CoolDown | None = None,
                 before_sleep: Hook | None = None) -> None:
        self.stop = stop_after_attempt(max_retries + 1)
        self.wait = wait_retry_after(wait_held_back(wait_exponential_jitter(multiplier=initial, max=maximum,
                                                                            jitter=initial)))
        self.after: Hook | None = pause_everyone(cooldown) if cooldown is not None else None
        self.before_sleep = before_sleep
        self._tenacity = self.retrying()  # what :meth:`again`'s state names as its owner, nothing more

    def retrying(self, sleep: Callable[[float], Awaitable[None]] | None = None) -> AsyncRetrying:
        """tenacity's loop over these parts, retrying what raises :class:`~.errors.Retryable`;
        ``sleep`` (default ``asyncio.sleep``) lets a caller cut a wait short."""
        return AsyncRetrying(stop=self.stop, wait=self.wait, retry=retry_if_exception_type(Retryable),
                             after=self.after or (lambda state: None), before_sleep=self.before_sleep,
                             reraise=True, sleep=sleep or asyncio.sleep)

    async def again(self, first: Failure, send: Callable[[], Awaitable[T | Failure]],
                    sleep: Callable[[float], Awaitable[None]]) -> T | Failure:
        """After ``first`` (a send's first attempt), ``send`` again until it returns anything but a
        :class:`Failure` or the policy gives up (its last failure returned); ``sleep`` waits
        between tries. What ``send`` raises passes through untouched."""
        state = RetryCallState(self._tenacity, fn=None, args=(), kwargs={})
        outcome: T | Failure = first
        while isinstance(outcome, Failure):
            state.set_result(outcome)
            if self.after is not None:
                self.after(state)
            if self.stop(state):
                break
            seconds = self.wait(state)
            if self.before_sleep is not None:
                self.before_sleep(state)
            await sleep(seconds)
            state.prepare_for_next_attempt()
            outcome = await send()
        return outcome


def retry_policy(max_retries: int, initial: float, maximum: float, before_sleep: Hook | None = None,
                 sleep: Callable[[float], Awaitable[None]] | None = None) -> AsyncRetrying:
    """tenacity's loop with the policy's rules and no cool-down (a caller with no live limit)."""
    return RetryPolicy(max_retries, initial, maximum, before_sleep=before_sleep).retrying(sleep)
