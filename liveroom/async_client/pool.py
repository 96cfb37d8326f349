"""Several endpoints of one model in one run: each its own limits, faults that stay its own.

An :class:`Endpoint` is everything the engine keeps per place it sends to: its client (and so
its base URL, key and provider error-code table), its live :class:`~.concurrency.ConcurrencyLimit`
(ceiling ``max_concurrency``, default ``--concurrency``), its :class:`~.limits.Limits` (rpm,
tpm, the server's rate-limit window, the cool-down) and its :class:`~.limits.Outage`. Nothing
of one endpoint holds another back. A run with one endpoint is a pool of one: the same code
path, and then nothing below ever moves a job.

**Which endpoint a job goes to.** Jobs are pulled, not pushed: each endpoint has its own
workers, and a worker takes the next job off the run's one queue only once it holds a slot
under its endpoint's live limit. So a job goes to the first endpoint with room under its own
live limit, an endpoint gets jobs exactly as fast as it finishes them (its limit over its
latency, its observed throughput), and no job ever waits at an endpoint that is full while
another has room. Nothing is estimated, and a cut limit (a ``1302`` cap signal) sends fewer
jobs there at once.

**A retry** after a 429 or a dropped answer waits on its own endpoint (its ``Retry-After`` is
that endpoint's), holding no slot. A job goes to another endpoint (:class:`Moved`, ahead of
new jobs, its attempts and re-ask carried with it) when its endpoint cannot answer it:

* **retired**: a fatal answer (bad key, arrears ``1113``, ``insufficient_quota``,
  ``Arrearage``: the provider's table in :mod:`.providers` says which) retires that endpoint
  with one line naming it and the answer; its workers end, its jobs go to the others. The run
  stops (exit 2, the last fatal answer) only when none is left.
* **waiting**: an endpoint that answered and stops answering (connections refused) is in an
  outage; while another endpoint is up, its jobs in flight go there, its workers wait and one
  of them sends a job every ``probe_every`` seconds as the probe; it rejoins when one answers.
  Only when every endpoint left is down does the run wait as one endpoint does
  (``give_up_after``, then it stops, to be resumed).

The progress line and the end line show each endpoint: its live limit, its rate, its 429s and
its state (``ok``, ``waiting``, ``retired``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from .concurrency import ConcurrencyLimit
from .contract import Client
from .limits import Limits, Outage


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

    def describe(self) -> str:
        """``a limit 8/8 39.8 req/s 429s 2 ok, b ...`` for the progress and end lines."""
        elapsed = max(time.monotonic() - self.started, 1e-9)
        parts = []
        for e in self.endpoints:
            throttled = e.sender.throttled if e.sender is not None else 0
            parts.append(f"{e.name} {e.limiter.describe()} {e.done / elapsed:.1f} req/s 429s {throttled} {e.state}")
        return "endpoints: " + ", ".join(parts)
