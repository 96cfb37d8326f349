"""Sending one job's request until it is answered: the path every attempt takes.

Each attempt waits for the endpoint (:class:`~.limits.Outage`) and the rate limits
(:class:`~.limits.Limits`), is counted on the live concurrency limit while it is out,
and ends in a :class:`~.transport.Reply` or, worth another try, a
:class:`~.policy.Failure`: the transport's error with the live limit's verdict on it.
What happens next is the retry policy's call (:class:`~.policy.RetryPolicy`); while a
job waits for its retry its slot is lent to another job (:meth:`~.concurrency.Slot.park`).

A failed connection is the endpoint's, not the request's: before anything has answered,
``first_failures`` of them in a row mean the endpoint is wrong
(:class:`~.errors.Unreachable`); after, they are an outage every worker waits out
together, for at most ``give_up_after`` seconds. In a pool (:mod:`.pool`) where another
endpoint is up, the job goes there instead (:class:`~.pool.Moved`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tenacity import RetryCallState

from .concurrency import ConcurrencyLimit, Slot
from .contract import Client, EngineConfig, Job, Stats
from .errors import CallError, Retryable, Unreachable
from .limits import Limits, Outage, duration
from .policy import Failure, RetryPolicy
from .pool import Endpoint, Moved, Pool
from .record import Record, cut
from .transport import Reply


class Stopped(Exception):
    """The run is stopping: this job is left for the next run (no record)."""


@dataclass(slots=True)
class Draft:
    """What the record of a job being asked will say: the sender counts its attempts, the engine the rest."""

    job: Job
    started: float = field(default_factory=time.monotonic)
    attempts: int = 0          # HTTP attempts, every retry and re-ask included
    reasks: int = 0
    usage: dict[str, int] = field(default_factory=dict)
    text: str | None = None    # the last reply
    model: str | None = None   # the model that gave it
    payload: dict[str, Any] | None = None  # what is asked now (a re-ask's); None: the job's own
    endpoint: str | None = None  # the name of the endpoint that gave the last reply
    probe: bool = False        # sent to an endpoint in an outage to see whether it answers again

    def record(self, status: str, keep_chars: int, scores: Any = None, error: str | None = None) -> Record:
        return Record(self.job.id, status, self.job.meta, scores, cut(self.text, keep_chars), self.usage,
                      self.attempts, self.reasks, round((time.monotonic() - self.started) * 1000, 1), error,
                      round(time.time(), 3), self.model, self.endpoint or None)


class Sender:
    """Sends requests for one run's workers; ``sending`` holds the workers waiting on an answer
    (those a stop gives its grace). In a pool, one sender per endpoint (``endpoint`` of ``pool``)."""

    def __init__(self, client: Client, limits: Limits, limiter: ConcurrencyLimit, outage: Outage,
                 config: EngineConfig, stats: Stats, stopping: asyncio.Event, stop: Callable[[str], None],
                 pool: Pool | None = None, endpoint: Endpoint | None = None) -> None:
        self.client, self.limits, self.limiter, self.outage, self.stats = client, limits, limiter, outage, stats
        # the pool, when another endpoint may take a job this one cannot answer
        self.pool: Pool | None = pool if pool is not None and endpoint is not None and len(pool) > 1 else None
        self.endpoint: Endpoint | None = endpoint
        self.throttled = 0  # this endpoint's 429s
        self.first_failures, self.give_up_after = config.first_failures, config.give_up_after
        self.policy = RetryPolicy(config.max_retries, config.backoff_initial, config.backoff_max,
                                  limits.cooldown, self._counted)
        self.sending: set[asyncio.Task[Any]] = set()
        self._stopping, self._stop = stopping, stop
        self._answered = False      # some request got an HTTP answer (any status)
        self._connect_failures = 0  # failed connections before that

    async def send(self, payload: dict[str, Any], tokens: int, slot: Slot, draft: Draft) -> Reply | Failure:
        """A reply, or the last failure once the policy gives up; raises what ends the request
        (:class:`~.errors.Rejected`) or the run (:class:`~.errors.Fatal`, :class:`Stopped`).
        Most sends succeed at once: the policy is entered only after a first failure."""
        outcome = await self._attempt(payload, tokens, draft)
        if isinstance(outcome, Failure):
            outcome = await self.policy.again(outcome, lambda: self._attempt(payload, tokens, draft),
                                              lambda seconds: self._nap(seconds, slot))
        return outcome

    def _counted(self, state: RetryCallState) -> None:
        self.stats.retries += 1

    async def _nap(self, seconds: float, slot: Slot) -> None:
        """A retry's wait, its slot lent to another job; cut short (and the job left) when the run stops."""
        slot.park()
        try:
            await asyncio.wait_for(self._stopping.wait(), seconds)
        except asyncio.TimeoutError:
            await slot.resume()
            return
        raise Stopped

    async def _attempt(self, payload: dict[str, Any], tokens: int, draft: Draft) -> Reply | Failure:
        while True:
            if self.pool is not None:
                self.pool.check(self.endpoint, draft.probe)  # type: ignore[arg-type]
            await self.outage.wait()
            await self.limits.acquire(tokens)
            if self._stopping.is_set():
                raise Stopped
            draft.attempts += 1
            self.stats.sent += 1
            me = asyncio.current_task()
            assert me is not None
            self.sending.add(me)
            stamp = self.limiter.send()
            try:
                reply = await self.client.complete(payload)
            except Retryable as e:
                failure = self._refused(stamp, e)
                if e.connection and self._unanswered(e, draft):
                    continue
                if not e.connection:
                    self._got_answer()
                return failure
            except BaseException as e:  # another answer (CallError), or cancelled by the stop
                self.limiter.other(stamp)
                if isinstance(e, CallError):
                    self._got_answer()
                raise
            finally:
                self.sending.discard(me)
            self.limiter.ok(stamp)
            self.limits.observe(reply.window)
            self._got_answer()
            self.limits.settle(tokens, reply.usage.get("total_tokens"))
            return reply

    def _refused(self, stamp: int, e: Retryable) -> Failure:
        """What a failure tells the limits: a 429 feeds the live limit, whose verdict goes with it,
        and its rate-limit headers the server's window."""
        if e.status != 429:
            self.limiter.other(stamp)
            return Failure(e)
        self.stats.throttled += 1
        self.throttled += 1
        over = self.limiter.throttled(stamp, e.signal == "cap")
        self.limits.observe(e.window)
        return Failure(e, over, self.limiter.adaptive)

    def _unanswered(self, e: Retryable, draft: Draft) -> bool:
        """A send that could not connect: True when it is an outage (wait, do not count it)."""
        if not self._answered:
            self._connect_failures += 1
            if self._connect_failures >= self.first_failures:
                raise Unreachable(f"cannot reach {self.client.url}: {e}; nothing has answered "
                                  "(check the base URL, OPENAI_BASE_URL and the network)")
            return False
        self.outage.begin(str(e))
        if self.pool is not None and self.pool.up_besides(self.endpoint):  # type: ignore[arg-type]
            draft.probe = False
            raise Moved
        if self.outage.seconds >= self.give_up_after:
            self._stop(f"endpoint unreachable for {duration(self.outage.seconds)} (last error: {e})")
            raise Stopped
        return True

    def _got_answer(self) -> None:
        self._answered = True
        self.outage.end()
