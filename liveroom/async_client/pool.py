"""Several endpoints of one model in one run: each its own limits, faults that stay its own.

An :class:`Endpoint` is everything the engine keeps per place it sends to: its client (and so
its base URL, key and provider error-code table), its live :class:`~.concurrency.ConcurrencyLimit`
(ceiling ``max_concurrency``, default ``--concurrency``), its :class:`~.limits.Limits` (rpm,
tpm, the server's rate-limit window, the cool-down) and its :class:`~.limits.Outage`. Nothing
of one endpoint holds another back. A run with one endpoint is a pool of one: the same code
path, and then nothing below ever moves a job.

**Which endpoint a job goes to.** Jobs are pulled, not pushed: each endpoint has its own
workers, and a worker asks for the next job only once it holds a slot under its endpoint's
live limit. So only an endpoint with room under its own live limit gets a job, an endpoint
gets jobs exactly as fast as it finishes them (its limit over its latency, its observed
throughput), and no job ever waits at an endpoint that is full while another has room. A cut
limit (a ``1302`` cap signal) sends fewer jobs there at once.

When several endpoints have room and there are fewer jobs than room (a slow input, a run's
last jobs, a service's forecasts), :class:`Dispatch` gives each job to the endpoint whose load
after taking it, relative to its live limit and divided by its ``weight``, is least:
``(jobs it holds + 1) / (live limit x weight)``, the first declared on a tie. With the default
weight 1 that is the least loaded endpoint relative to its limit; ``weight = 3`` fills an
endpoint to three times the share of its limit before another gets the job (a cheaper or
nearer endpoint first). While jobs are plenty every endpoint with room gets one, weight or
not: to send less to an endpoint, give it a lower ``max_concurrency``.

**A retry** after a 429 or a dropped answer waits on its own endpoint (its ``Retry-After`` is
that endpoint's), holding no slot. A job goes to another endpoint (:class:`Moved`, ahead of
new jobs, its attempts and re-ask carried with it) when its endpoint cannot answer it:

* **retired**: a fatal answer (bad key, arrears ``1113``, ``insufficient_quota``,
  ``Arrearage``: the provider's table in :mod:`.providers` says which) retires that endpoint
  with one line naming it and the answer; its workers end, its jobs go to the others. The run
  stops (exit 2) only when none is left, with one line naming the last endpoint and its answer.
* **waiting**: an endpoint that answered and stops answering (connections refused) is in an
  outage; while another endpoint is up, its jobs in flight go there, its workers wait (holding
  no slot, so a job of its back from a retry wait gets one and is moved at once) and one of
  them sends a job every ``probe_every`` seconds as the probe; it rejoins when one answers.
  Only when every endpoint left is down does the run wait as one endpoint does
  (``give_up_after``, then it stops, to be resumed).

The progress line and the end line show each endpoint: its live limit, its rate, its 429s and
its state (``ok``, ``waiting``, ``retired``).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from .concurrency import ConcurrencyLimit
from .contract import Client
from .limits import Limits, Outage

T = TypeVar("T")


class Moved(Exception):
    """This job goes to another endpoint: its own is retired or stopped answering."""


@dataclass(eq=False)
class Endpoint:
    """One endpoint of the pool; ``name`` goes into each record it answers ("" for a lone
    endpoint given by ``--base-url``: its records stay as they always were)."""

    name: str
    client: Client
    limits: Limits
    limiter: ConcurrencyLimit
    outage: Outage
    weight: float = 1.0           # its share when several endpoints have room (see above)
    retired: str | None = None    # the fatal answer that retired it
    done: int = 0                 # records it wrote
    # its sending.Sender, made per run by the engine (typed Any: sending imports this module)
    sender: Any = field(default=None, repr=False)

    @property
    def state(self) -> str:
        if self.retired is not None:
            return "retired"
        return "waiting" if self.outage.since is not None else "ok"


class Pool:
    """The endpoints of a run and the decisions that involve more than one of them."""

    def __init__(self, endpoints: list[Endpoint]) -> None:
        self.endpoints = endpoints
        self.started = time.monotonic()

    def __len__(self) -> int:
        return len(self.endpoints)

    def up_besides(self, endpoint: Endpoint) -> bool:
        """Whether another endpoint can take a job now (not retired, answering)."""
        return any(e is not endpoint and e.retired is None and e.outage.since is None for e in self.endpoints)

    def check(self, endpoint: Endpoint, probe: bool) -> None:
        """Before a send from ``endpoint``: :class:`Moved` when the job should go elsewhere."""
        if endpoint.retired is not None or (endpoint.outage.since is not None and not probe
                                            and self.up_besides(endpoint)):
            raise Moved

    def retire(self, endpoint: Endpoint, reason: str) -> bool:
        """``endpoint`` gave a fatal answer; True while another endpoint is left."""
        if endpoint.retired is None:
            endpoint.retired = reason
        return any(e.retired is None for e in self.endpoints)

    def choose(self, idle: dict[Endpoint, int]) -> Endpoint:
        """Of the endpoints with ``idle`` workers (each holding a slot, waiting for a job), the one
        the next job goes to: least ``(jobs it holds + 1) / (live limit x weight)``, an endpoint
        not retired first, the first declared on a tie."""
        def load(e: Endpoint) -> tuple[bool, float]:
            holding = e.limiter.active - idle[e]
            return e.retired is not None, (holding + 1) / (max(e.limiter.limit, 1.0) * e.weight)
        return min((e for e in self.endpoints if idle.get(e)), key=load)

    def describe(self) -> str:
        """``a limit 8/8 39.8 req/s 429s 2 ok, b ...`` for the progress and end lines."""
        elapsed = max(time.monotonic() - self.started, 1e-9)
        parts = []
        for e in self.endpoints:
            throttled = e.sender.throttled if e.sender is not None else 0
            parts.append(f"{e.name} {e.limiter.describe()} {e.done / elapsed:.1f} req/s 429s {throttled} {e.state}")
        return "endpoints: " + ", ".join(parts)


class Dispatch(Generic[T]):
    """Hands the run's new jobs, one at a time, to the workers waiting for one (each holding a
    slot): to the endpoint :meth:`Pool.choose` names. Only a pool of several endpoints has one."""

    def __init__(self, pool: Pool, queue: asyncio.Queue[T]) -> None:
        self.pool, self.queue = pool, queue
        self.waiting: dict[Endpoint, deque[asyncio.Future[T]]] = {e: deque() for e in pool.endpoints}
        self._someone = asyncio.Event()

    async def take(self, endpoint: Endpoint) -> T:
        """The next job for a worker of ``endpoint``."""
        fut: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self.waiting[endpoint].append(fut)
        self._someone.set()
        try:
            return await fut
        finally:
            if fut.cancelled():  # the worker was cancelled waiting (a stop): it waits no more
                with contextlib.suppress(ValueError):
                    self.waiting[endpoint].remove(fut)

    def retire(self, endpoint: Endpoint) -> None:
        """``endpoint`` is retired: its workers waiting for a job get None (and end), giving their slots
        to its jobs back from a retry wait, which then go elsewhere."""
        waiting = self.waiting[endpoint]
        while waiting:
            fut = waiting.popleft()
            if not fut.done():
                fut.set_result(None)  # type: ignore[arg-type]

    async def run(self) -> None:
        """Until cancelled (the run's end): each job off the queue to the chosen worker."""
        item: T | None = None
        held = False
        while True:
            idle = {e: len(w) for e, w in self.waiting.items() if w}
            if not idle:  # nobody waits: a job in hand stays in hand
                self._someone.clear()
                await self._someone.wait()
                continue
            if not held:
                item, held = await self.queue.get(), True
                continue  # the waiting may have changed meanwhile
            fut = self.waiting[self.pool.choose(idle)].popleft()
            if fut.done():  # its worker was cancelled (a stop) before it could leave the line
                continue
            fut.set_result(item)  # type: ignore[arg-type]
            held = False
