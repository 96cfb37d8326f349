"""The live concurrency limit: how many jobs may have a request out at once.

``--concurrency N`` is the ceiling; the limit moves between 1 and N by AIMD,
as TCP and Netflix's concurrency-limits ``AIMDLimit`` do:

* it starts at N, so a server without limits gets all of N from the first second;
* **additive increase**: each clean reply adds ``1/limit`` while the limit is
  what holds sends back (as many jobs out as it allows): +1 per round trip;
  within 1 of the limit that was last cut it adds a :data:`PROBE` th of that,
  so a fixed cap is probed once every few round trips, not every other one;
* **multiplicative decrease**: a cap signal cuts it to ``BETA`` (0.9) of itself,
  at most once per round trip: a signal from a request sent before the last
  cut is old news and cuts nothing more;
* every cap signal also **clamps** the limit to the requests still out, which
  are what the server took: a server that refuses at once would otherwise be
  asked again at once, hundreds of times a second, while the cuts come one
  per round trip.

A cap signal is a concurrency code (Zhipu ``1302``: too many in flight), or a
``rate`` 429 (a rate-limit code, or a 429 without a code) whose share rises
with the load: two in a row sent with more requests out than any of the
last :data:`RECENT` clean replies had (while those reached the limit), or 429s at
least :data:`OVER` of the last :data:`RECENT` answers. Random rejections at a
steady share (10% of answers reach 10 of 16 with a chance under one in a
million) move nothing: each such request waits its ``Retry-After`` holding no
slot, and the run goes on. ``fixed`` (``--fixed-concurrency``) keeps the
limit at N whatever comes.

A job holds a :class:`Slot` from the moment it is let in until its record is
written, except while it waits for a retry: then its slot goes to another job,
and it comes back ahead of new jobs. A worker keeps its slot from one job to
the next while the limit allows (no hand-over per job). The bookkeeping per request is a few
integer operations (the recent answers are the bits of one int).
"""

from __future__ import annotations

import asyncio
from collections import deque

BETA = 0.9     # a cut keeps this share of the limit
PROBE = 4      # round trips per slot of increase near the limit last cut
RECENT = 16    # answers the 429 share is taken over
OVER = 10      # 429s among them that say the server is over its limit
_MASK = (1 << RECENT) - 1
_LEVEL = 20    # a stamp is the send's number << _LEVEL | the requests out with it


class ConcurrencyLimit:
    """The limit, the slots held under it and the requests out; shared by every worker of an engine
    (or of several: a service's forecasts, each its own engine, share one)."""

    def __init__(self, ceiling: int, adaptive: bool = True) -> None:
        self.ceiling = max(1, ceiling)
        self.adaptive = adaptive
        self.limit = float(self.ceiling)
        self.active = 0       # slots held
        self.sending = 0      # requests on the wire
        self.cuts = 0         # multiplicative decreases so far
        self._seq = 0         # numbers every send
        self._cut_at = 0      # sends numbered up to this one were out at the last cut
        self._refused = float("inf")  # the limit when the last cut came: probed slowly near it
        self._recent = 0      # one bit per recent answer, 1 for a 429
        self._ok_levels: deque[int] = deque(maxlen=RECENT)  # requests out with each recent clean reply
        self._streak = 0      # 429s in a row sent above every recent clean reply
        self._back: deque[asyncio.Future[None]] = deque()  # jobs back from a retry wait: served first
        self._new: deque[asyncio.Future[None]] = deque()

    @property
    def current(self) -> int:
        """The number of slots now: the limit, whole, at least 1."""
        return max(1, int(self.limit))

    # -- slots --------------------------------------------------------------------------
    async def enter(self, back: bool = False) -> None:
        """Wait for a slot; ``back``: a job returning from a retry wait, let in before new ones."""
        if self.active < self.current and not self._back and (back or not self._new):
            self.active += 1
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        (self._back if back else self._new).append(fut)
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():  # the slot was given as this task was cancelled
                self.leave()
            raise

    def leave(self) -> None:
        """Give a slot back."""
        self.active -= 1
        self._wake()

    def _wake(self) -> None:
        while self.active < self.current and (self._back or self._new):
            fut = (self._back or self._new).popleft()
            if not fut.done():  # a waiter cancelled meanwhile is skipped
                self.active += 1
                fut.set_result(None)

    # -- requests -----------------------------------------------------------------------
    def send(self) -> int:
        """A request goes out; its stamp, for :meth:`ok`, :meth:`throttled` or :meth:`other`."""
        self.sending += 1
        self._seq += 1
        return self._seq << _LEVEL | self.sending

    def ok(self, stamp: int) -> None:
        """A clean reply: one more slot per round trip while the limit is what holds sends back."""
        self.sending -= 1
        self._recent = (self._recent << 1) & _MASK
        self._ok_levels.append(stamp & (1 << _LEVEL) - 1)
        self._streak = 0
        if self.adaptive and self.limit < self.ceiling and self.active >= self.limit - 1:
            before = self.current
            step = 1.0 / self.limit if self.limit + 1.0 < self._refused else 1.0 / (PROBE * self.limit)
            self.limit = min(float(self.ceiling), self.limit + step)
            if self.current > before:
                self._wake()

    def throttled(self, stamp: int, cap: bool) -> bool:
        """A 429 (``cap``: a concurrency code); True when it says the server is over its limit."""
        self.sending -= 1
        self._recent = ((self._recent << 1) | 1) & _MASK
        over = cap or self._recent.bit_count() >= OVER or self._above(stamp & (1 << _LEVEL) - 1)
        if over and self.adaptive:
            if stamp >> _LEVEL > self._cut_at:  # sent after the last cut: at most one cut per round trip
                self._cut_at = self._seq
                self._refused = self.limit
                self.limit = max(1.0, self.limit * BETA)
                self.cuts += 1
            self.limit = max(1.0, min(self.limit, float(self.sending)))
        return over

    def _above(self, level: int) -> bool:
        """Whether this 429 and the answer before it both went out with more requests out than any
        recent clean reply had, while those filled the limit: refused where nothing is taken, a cap.
        (One alone may be a random 429 that happened to go out at the top.)"""
        if len(self._ok_levels) < RECENT:
            return False
        top = max(self._ok_levels)
        above = top >= self.current - 1 and level > top
        self._streak = self._streak + 1 if above else 0
        return self._streak >= 2

    def other(self, stamp: int) -> None:
        """Any other end of a request (an error, no answer): it says nothing about the limit."""
        self.sending -= 1

    def describe(self) -> str:
        """``limit 16/64`` for the progress line (``fixed 64`` when it never moves)."""
        return f"limit {self.current}/{self.ceiling}" if self.adaptive else f"fixed {self.ceiling}"


class Slot:
    """One job's place under a :class:`ConcurrencyLimit`: held while it may send, given up while
    it waits for a retry, so a scattered 429 costs that job its wait and nobody else anything."""

    __slots__ = ("limit", "held")

    def __init__(self, limit: ConcurrencyLimit) -> None:
        self.limit = limit
        self.held = False

    async def take(self) -> None:
        """Wait for a place (a new job)."""
        await self.limit.enter()
        self.held = True

    def park(self) -> None:
        """Give the place up for a retry wait."""
        if self.held:
            self.held = False
            self.limit.leave()

    async def resume(self) -> None:
        """A place again after a retry wait, ahead of new jobs."""
        if not self.held:
            await self.limit.enter(back=True)
            self.held = True

    def done(self) -> None:
        """A job is done: the worker keeps the place for its next job, unless the limit dropped
        below the places held or a job back from a retry waits for one."""
        limit = self.limit
        if self.held and (limit.active > limit.current or limit._back):
            self.park()

    def release(self) -> None:
        """The worker stops."""
        self.park()
