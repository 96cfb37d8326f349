"""Request and token rate limits, and the cool-down all workers share.

* requests per minute: asyncio-throttle with one slot per ``60/rpm`` seconds,
  so sends are spread evenly (never a burst of ``rpm`` at the top of a minute);
* tokens per minute: a bucket refilled at ``tpm/60`` per second holding at
  most one second's worth (so no 60-s window sees more than the limit
  plus one second's tokens), charged with an estimate before a call and
  corrected by the ``usage`` the server returns;
* the server's own window, from ``x-ratelimit-remaining-*`` and
  ``x-ratelimit-reset-*`` headers (:class:`~.window.Window`, OpenAI's format):
  :class:`Allowance` lets through what it says is left (requests, estimated
  tokens) and holds every send back until the reset once it is used up, then
  lets one request probe until the next answer says more;
* the shared :class:`CoolDown` pauses every worker: the retry policy trips it
  (:class:`~.policy.pause_everyone`) only for a global window (a share of 429s
  that says the provider's window is full, with its ``Retry-After``), never for
  one scattered 429;
* an endpoint that worked and stopped answering is an :class:`Outage`: every
  worker waits for it together while one at a time probes.

``--rpm`` / ``--tpm`` stay caps the user sets; the headers only ever hold back more.
"""

from __future__ import annotations

import asyncio
import time

from asyncio_throttle import Throttler

from .window import Window


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


def duration(seconds: float) -> str:
    """``2m10s``, or ``45s`` under a minute."""
    s = int(seconds)
    return f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"


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


class Allowance:
    """Requests (or tokens) the server said are left until its reset.

    Sends are charged against it; once too little is left, every send waits
    for the reset, and then one goes alone (a probe) until an answer says how
    much is left again.
    """

    __slots__ = ("left", "until", "interval")

    def __init__(self) -> None:
        self.left: float | None = None  # None: nothing known, nothing held back
        self.until = 0.0                # monotonic time of the reset
        self.interval = 1.0             # the last reset said, for the next probe

    def update(self, left: int | None, reset: float | None, now: float) -> None:
        if left is None:
            return
        self.left = float(left)
        if reset is not None:
            self.interval = max(0.001, reset)
        self.until = now + self.interval

    def wait(self, amount: float, now: float) -> float:
        """Seconds before ``amount`` may go (0: now)."""
        if self.left is None or self.left >= amount or now >= self.until:
            return 0.0
        return self.until - now

    def charge(self, amount: float, now: float) -> None:
        if self.left is None:
            return
        if self.left < amount:  # the reset passed: this one probes, the next waits for its answer
            self.left, self.until = 0.0, now + self.interval
        else:
            self.left -= amount


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
        self._requests_left: Allowance | None = None  # made when an answer first carries the headers
        self._tokens_left = Allowance()

    async def acquire(self, tokens: float) -> None:
        """Wait for the cool-down, a request slot and ``tokens`` (an estimate)."""
        await self.cooldown.wait()
        if self._throttler is not None:
            async with self._lock:
                await self._throttler.acquire()
        if self.tokens is not None:
            await self.tokens.take(tokens)
        if self._requests_left is not None:
            await self._allowed(self._requests_left, tokens)
        await self.cooldown.wait()

    async def _allowed(self, requests: Allowance, tokens: float) -> None:
        """Wait until the server's window has a request and ``tokens`` left, then charge them."""
        while True:
            now = time.monotonic()
            wait = max(requests.wait(1, now), self._tokens_left.wait(tokens, now))
            if wait <= 0:
                requests.charge(1, now)
                self._tokens_left.charge(tokens, now)
                return
            await asyncio.sleep(min(wait, 1.0))  # an answer may say more is left before then

    def observe(self, window: Window | None) -> None:
        """What an answer's rate-limit headers said (None: it had none, nothing is held back on them)."""
        if window is None:
            if self._requests_left is not None:  # a server that stopped sending them
                self._requests_left.left = self._tokens_left.left = None
            return
        if self._requests_left is None:
            self._requests_left = Allowance()
        now = time.monotonic()
        self._requests_left.update(window.requests, window.requests_reset, now)
        self._tokens_left.update(window.tokens, window.tokens_reset, now)

    def settle(self, estimated: float, used: float | None) -> None:
        """Correct the token charge by what the server counted, when it said."""
        if self.tokens is not None and used is not None:
            self.tokens.correct(used - estimated)
