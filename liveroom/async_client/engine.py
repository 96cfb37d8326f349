"""A fixed pool of workers pulling jobs from a bounded queue.

The queue is fed lazily from an iterator, so memory stays flat however many
jobs there are. Each job is sent through the rate limits and the retry
policy; its reply is validated by the task and, when the task raises
:class:`~.errors.UnusableReply`, asked again with the reason; the outcome is
appended to the checkpoint as one :class:`~.record.Record`.

The engine knows nothing of what it asks: a job is an id, a checkpoint group,
a request body, meta fields for the record and a token estimate; what a reply
means, and which jobs are left to do, is the task's (and its planner's) call.

``stop()`` (wired to SIGINT/SIGTERM by the caller) stops taking jobs, lets
requests in flight finish for ``grace`` seconds and returns. A :class:`Fatal`
error (bad key, no quota) stops everything at once and is re-raised.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from tenacity import RetryCallState

from .checkpoint import Checkpoint
from .errors import Fatal, Rejected, Retryable, UnusableReply
from .limits import Limits
from .policy import retry_policy
from .record import ERROR, INVALID, OK, Record
from .transport import Reply


@dataclass(frozen=True)
class Job:
    id: str
    group: str                # checkpoint file the record goes to
    payload: dict[str, Any]   # the full chat-completions body
    meta: dict[str, Any]      # copied into the record
    tokens: int               # estimate for the token limit: prompt + max_tokens


class Client(Protocol):
    async def complete(self, payload: dict[str, Any]) -> Reply:
        """One reply, or raise Retryable, Rejected or Fatal."""


class Task(Protocol):
    def validate(self, job: Job, text: str) -> Any:
        """Scores from a reply's text, or raise UnusableReply with a short reason."""

    def reask(self, job: Job, payload: dict[str, Any], text: str, reason: str) -> dict[str, Any]:
        """The payload asking again after an unusable reply."""


@dataclass
class EngineConfig:
    """How hard the engine pushes and how long it keeps trying."""

    concurrency: int = 64
    max_retries: int = 6        # transport retries per send
    max_reasks: int = 2         # re-asks after an unusable reply, counted apart
    backoff_initial: float = 1.0
    backoff_max: float = 60.0
    grace: float = 5.0          # seconds in-flight requests get after stop()


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
    prompt_tokens: int = 0
    completion_tokens: int = 0
    started: float = field(default_factory=time.monotonic)

    @property
    def done(self) -> int:
        return self.ok + self.failed


class Engine:
    """Runs jobs through a client with a task's validation, writing one record per job."""

    def __init__(self, client: Client, limits: Limits, checkpoint: Checkpoint, task: Task,
                 config: EngineConfig, on_record: Callable[[Record], None] | None = None) -> None:
        self.client, self.limits, self.checkpoint, self.task, self.config = client, limits, checkpoint, task, config
        self.stats = Stats()
        self.on_record: Callable[[Record], None] = on_record or (lambda record: None)
        self.stopped: str | None = None
        self._stop = asyncio.Event()
        self._fatal: Fatal | None = None
        self._workers: list[asyncio.Task[None]] = []

    def stop(self, reason: str = "stopped") -> None:
        """Stop taking jobs; a second call also gives up on requests in flight."""
        if self._stop.is_set():
            for w in self._workers:
                w.cancel()
        if self.stopped is None:
            self.stopped = reason
        self._stop.set()

    async def run(self, jobs: Iterable[Job], total: int) -> Stats:
        """Do ``jobs`` (``total`` of them, for progress) until done, stopped or fatal."""
        self.stats = Stats(total=total)
        queue: asyncio.Queue[Job | None] = asyncio.Queue(maxsize=2 * self.config.concurrency)
        producer = asyncio.create_task(self._produce(jobs, queue))
        workers = self._workers = [asyncio.create_task(self._worker(queue)) for _ in range(self.config.concurrency)]
        all_done: asyncio.Future[Any] = asyncio.gather(*workers)
        stopping: asyncio.Future[Any] = asyncio.create_task(self._stop.wait())
        try:
            await asyncio.wait({all_done, stopping}, return_when=asyncio.FIRST_COMPLETED)
            if self._stop.is_set():
                producer.cancel()
                if self._fatal is None:
                    await asyncio.wait(workers, timeout=self.config.grace)
                for w in workers:
                    w.cancel()
            await asyncio.gather(all_done, producer, return_exceptions=True)
        finally:
            stopping.cancel()
            for w in workers:
                w.cancel()
        if self._fatal is not None:
            raise self._fatal
        return self.stats

    async def _produce(self, jobs: Iterable[Job], queue: asyncio.Queue[Job | None]) -> None:
        for job in jobs:
            await queue.put(job)
            if self._stop.is_set():
                return
        for _ in range(self.config.concurrency):
            await queue.put(None)

    async def _worker(self, queue: asyncio.Queue[Job | None]) -> None:
        while True:
            job = await queue.get()
            if job is None or self._stop.is_set():
                return
            try:
                record = await self._process(job)
            except Fatal as e:
                self._fatal = e
                self.stop("fatal")
                return
            self.checkpoint.write(job.group, record)
            if record.status == OK:
                self.stats.ok += 1
            else:
                self.stats.failed += 1
            self.on_record(record)

    def _before_sleep(self, rs: RetryCallState) -> None:
        self.stats.retries += 1
        exc = rs.outcome.exception() if rs.outcome else None
        if isinstance(exc, Retryable) and exc.status == 429:
            self.stats.throttled += 1
            # every worker waits, not only this one
            self.limits.cooldown.trip(rs.upcoming_sleep)

    async def _attempt(self, payload: dict[str, Any], tokens: int, tries: list[int]) -> Reply:
        await self.limits.acquire(tokens)
        tries[0] += 1
        self.stats.sent += 1
        reply = await self.client.complete(payload)
        self.limits.settle(tokens, reply.usage.get("total_tokens"))
        return reply

    async def _send(self, payload: dict[str, Any], tokens: int, tries: list[int]) -> Reply:
        """One reply, through limits and retries; ``tries[0]`` counts the attempts.

        Most sends succeed at once, so the retry policy is entered only after a
        first failure, which it then counts as its first attempt.
        """
        try:
            return await self._attempt(payload, tokens, tries)
        except Retryable as e:
            failed: list[Retryable] = [e]
        policy = retry_policy(self.config.max_retries, self.config.backoff_initial,
                              self.config.backoff_max, self._before_sleep)
        async for attempt in policy:
            with attempt:
                if failed:
                    raise failed.pop()
                return await self._attempt(payload, tokens, tries)
        raise AssertionError("unreachable")

    async def _process(self, job: Job) -> Record:
        t0 = time.monotonic()
        payload, tries, reasks = job.payload, [0], 0
        usage: dict[str, int] = {}
        text: str | None = None

        def record(status: str, scores: Any = None, error: str | None = None) -> Record:
            return Record(job.id, status, job.meta, scores, text, usage, tries[0], reasks,
                          round((time.monotonic() - t0) * 1000, 1), error, round(time.time(), 3))

        while True:
            try:
                reply = await self._send(payload, job.tokens, tries)
            except Retryable as e:
                return record(ERROR, error=f"{e} (gave up after {tries[0]} attempts)")
            except Rejected as e:
                return record(ERROR, error=str(e))
            text = reply.text
            for k, v in reply.usage.items():
                usage[k] = usage.get(k, 0) + v
            self.stats.prompt_tokens += reply.usage.get("prompt_tokens", 0)
            self.stats.completion_tokens += reply.usage.get("completion_tokens", 0)
            try:
                return record(OK, scores=self.task.validate(job, text))
            except UnusableReply as e:
                self.stats.invalid += 1
                if reasks >= self.config.max_reasks:
                    return record(INVALID, error=str(e))
                reasks += 1
                payload = self.task.reask(job, payload, text, str(e))
