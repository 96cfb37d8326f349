"""Request and token rate limits, and the cool-down all workers share.

* requests per minute: asyncio-throttle with one slot per ``60/rpm`` seconds,
  so sends are spread evenly (never a burst of ``rpm`` at the top of a minute);
* tokens per minute: a bucket refilled at ``tpm/60`` per second holding at
  most one second's worth (so no 60-s window sees more than the limit
  plus one second's tokens), charged with an estimate before a call and
  corrected by the ``usage`` the server returns;
* a 429 trips the shared :class:`CoolDown`, pausing every worker;
* an endpoint that worked and stopped answering is an :class:`Outage`: every
  worker waits for it together while one at a time probes.
"""

from __future__ import annotations

import asyncio
import time

from asyncio_throttle import Throttler


class CoolDown:
    """A moment before which no worker sends; any worker may push it later."""

    def __init__(self) -> None:
        self._until = 0.0

    def trip(self, seconds: float) -> None:
        """Nobody sends for ``seconds`` from now (or until a later end already set)."""
        self._until = max(self._until, time.monotonic() + seconds)

    async def wait(self) -> None:
        """Return once the cool-down is over."""
        while (left := self._until - time.monotonic()) > 0:
            await asyncio.sleep(left)


class Outage:
    """An endpoint that stopped answering: while it lasts, one caller at a time
    is let through every ``probe_every`` seconds (its send is the probe) and the
    rest wait until it ends."""

    def __init__(self, probe_every: float = 5.0) -> None:
        self.probe_every = probe_every
        self.since: float | None = None  # monotonic time it began; None while the endpoint answers
        self.last_error = ""
        self._probe = asyncio.Lock()
        self._up = asyncio.Event()
        self._up.set()

    def begin(self, error: str) -> None:
        """A send could not connect: the outage begins (or goes on)."""
        if self.since is None:
            self.since = time.monotonic()
            self._up.clear()
        self.last_error = error

    def end(self) -> None:
        """The endpoint answered: everyone waiting goes on."""
        if self.since is not None:
            self.since = None
            self._up.set()

    @property
    def seconds(self) -> float:
        """How long the outage has lasted so far (0 when there is none)."""
        return time.monotonic() - self.since if self.since is not None else 0.0

    async def wait(self) -> None:
        """Return at once while the endpoint answers; during an outage, as the next probe or once it ends."""
        while self.since is not None:
            if not self._probe.locked():
                async with self._probe:
                    await asyncio.sleep(self.probe_every)
                return
            await self._up.wait()


class TokenBucket:
    """Tokens refilled at ``per_minute / 60`` a second, holding ``burst_seconds`` worth."""

    def __init__(self, per_minute: float, burst_seconds: float = 1.0) -> None:
        self.rate = per_minute / 60.0
        self.capacity = max(1.0, self.rate * burst_seconds)
        self._level = self.capacity
        self._stamp = time.monotonic()
        self._lock = asyncio.Lock()

    def _refill(self) -> None:
        now = time.monotonic()
        self._level = min(self.capacity, self._level + (now - self._stamp) * self.rate)
        self._stamp = now

    async def take(self, tokens: float) -> None:
        """Wait until ``tokens`` (at most a full bucket) are there, then charge them."""
        need = min(tokens, self.capacity)  # a request larger than the bucket waits for a full one
        async with self._lock:
            self._refill()
            while self._level < need:
                # short naps: replies in flight hand back what their estimate over-charged
                await asyncio.sleep(min(0.05, (need - self._level) / self.rate))
                self._refill()
            self._level -= tokens

    def correct(self, delta: float) -> None:
        """Charge ``delta`` more tokens (or give back, if negative) after the fact."""
        self._refill()
        self._level = min(self.capacity, self._level - delta)


class Limits:
    """Everything a worker waits for before a send."""

    def __init__(self, rpm: float | None = None, tpm: float | None = None) -> None:
        self.cooldown = CoolDown()
        self._throttler: Throttler | None = None
        if rpm:
            period = 60.0 / rpm
            self._throttler = Throttler(rate_limit=1, period=period, retry_interval=min(0.01, period / 20))
        self._lock = asyncio.Lock()  # one poller at a time instead of every worker
        self.tokens = TokenBucket(tpm) if tpm else None

    async def acquire(self, tokens: float) -> None:
        """Wait for the cool-down, a request slot and ``tokens`` (an estimate)."""
        await self.cooldown.wait()
        if self._throttler is not None:
            async with self._lock:
                await self._throttler.acquire()
        if self.tokens is not None:
            await self.tokens.take(tokens)
        await self.cooldown.wait()

    def settle(self, estimated: float, used: float | None) -> None:
        """Correct the token charge by what the server counted, when it said."""
        if self.tokens is not None and used is not None:
            self.tokens.correct(used - estimated)
