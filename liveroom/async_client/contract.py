"""What the engine and its callers share: the :class:`Job` it is given, the parts a caller plugs
in (the :class:`Client` that sends, the :class:`Task` that reads replies, an :class:`Admission`
gate), how hard it pushes (:class:`EngineConfig`) and the counts of a run (:class:`Stats`).

The engine knows nothing of what it asks: a job is an id, a run-directory group, a request body,
meta fields for the record and a token estimate; what a reply means is the task's call.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from .concurrency import ConcurrencyLimit
from .limits import Outage
from .record import KEEP_CHARS, Record
from .transport import Reply


@dataclass(frozen=True)
class Job:
    id: str
    group: str                # the run directory file the record goes to
    payload: dict[str, Any]   # the full chat-completions body
    meta: dict[str, Any]      # copied into the record
    tokens: int               # estimate for the token limit: prompt + max_tokens


class Client(Protocol):
    url: str  # where requests go, for messages

    async def complete(self, payload: dict[str, Any]) -> Reply:
        """One reply, or raise Retryable, Rejected or Fatal."""


class Task(Protocol):
    def validate(self, job: Job, text: str) -> Any:
        """Scores from a reply's text, or raise UnusableReply with a short reason."""

    def reask(self, job: Job, payload: dict[str, Any], text: str, reason: str) -> dict[str, Any]:
        """The payload asking again after an unusable reply."""


@runtime_checkable
class ReadsProbabilities(Protocol):
    """A task whose jobs may ask ``logprobs: true``: what it reads from a reply's token probabilities."""

    def probabilities(self, job: Job, text: str, logprobs: Any, scores: Any) -> bool:
        """Add what ``logprobs`` (the reply's, None when it has none) says to ``scores``; False when it
        cannot be read (the scores stay as they are)."""


class Admission(Protocol):
    """A gate the caller sets on sending (a budget), asked for each job as it is about to be sent."""

    def reserve(self, job: Job) -> str | asyncio.Event | None:
        """None: ``job`` may be sent (what it may cost is held until :meth:`release`); an Event: not
        now, ask again once it is set (a job in flight was released); a str: why the run stops."""

    def release(self, job: Job, record: Record) -> None:
        """``job`` is done: ``record`` is written (and passed to ``on_record``)."""


@dataclass
class EngineConfig:
    """How hard the engine pushes and how long it keeps trying."""

    concurrency: int = 64
    max_retries: int = 6        # transport retries per send
    max_reasks: int = 2         # re-asks after an unusable reply, counted apart
    backoff_initial: float = 1.0
    backoff_max: float = 60.0
    grace: float = 5.0          # seconds in-flight requests get after stop()
    give_up_after: float = 600.0  # seconds an endpoint that worked may stay unreachable
    probe_every: float = 5.0    # seconds between tries while it is unreachable
    first_failures: int = 3     # failed connections, with no answer yet, that mean a dead endpoint
    reask_chars: int = 4096     # at most this much of a bad reply is sent back in a re-ask
    keep_chars: int = KEEP_CHARS  # at most this much of a reply is kept in its record
    adaptive: bool = True       # the limit moves between 1 and concurrency; False: always concurrency
    reask_max_tokens: int | None = None  # max_tokens of a re-ask; None: the job's own
    pool: int = 4               # workers per slot of the ceiling: jobs waiting for a retry hold none


@dataclass
class Stats:
    """Counts of a run so far, read by progress and the final summary."""

    total: int = 0              # jobs this run set out to do
    ok: int = 0
    failed: int = 0
    sent: int = 0               # HTTP attempts
    retries: int = 0
    throttled: int = 0          # 429s
    invalid: int = 0            # unusable replies (each re-ask counts)
    filtered: int = 0           # refused by the provider's content filter (counted in failed too)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    started: float = field(default_factory=time.monotonic)
    outage: Outage | None = None  # the endpoint's state, for the progress line
    limit: ConcurrencyLimit | None = None  # the live concurrency limit, for the progress line
    endpoints: Callable[[], str] | None = None  # each endpoint of a pool, for the progress line

    @property
    def done(self) -> int:
        return self.ok + self.failed
