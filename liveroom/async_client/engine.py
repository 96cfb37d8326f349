"""A pool of workers pulling jobs from a bounded queue, under a live concurrency limit.

The queue is fed lazily from an iterator, so memory stays flat. A job starts when
:meth:`Engine._admit` lets it in (a slot under the AIMD :class:`~.concurrency.ConcurrencyLimit`);
waiting for a retry it lends its slot (``pool`` workers per slot leave room), so a scattered 429
delays that job only. Each job is sent through the rate limits and the retry policy; its reply is
validated by the task and, on :class:`~.errors.UnusableReply`, asked again with the reason (at most
``reask_chars`` of the bad reply); the outcome is appended as one :class:`~.record.Record`.

The engine knows nothing of what it asks: a job is an id, a checkpoint group,
a request body, meta fields for the record and a token estimate; what a reply
means, and which jobs are left to do, is the task's (and its planner's) call.

The run never hangs. ``stop()`` (wired to SIGINT/SIGTERM by the caller)
stops taking jobs and sending: requests in flight get ``grace`` seconds to
finish and be recorded, every other worker ends at once; a second call ends
everything. A :class:`Fatal` error (bad key, no quota, an endpoint never
reached), a failed write (:class:`~.run_dir.WriteFailed`) or any
unexpected exception in a worker, the job iterator or a callback stops the
run the same way and is raised from :meth:`Engine.run` as one line
(:class:`~.errors.RunFailed` for the unexpected). An endpoint that worked and
stops answering pauses every worker (:class:`~.limits.Outage`) without
failing requests; after ``give_up_after`` seconds the run stops, to be resumed.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from tenacity import RetryCallState

from ..errors import LiveroomError
from .concurrency import ConcurrencyLimit, Slot
from .errors import CallError, Filtered, NoContent, Rejected, Retryable, RunFailed, Unreachable, UnusableReply
from .limits import Limits, Outage
from .policy import retry_policy
from .record import ERROR, INVALID, KEEP_CHARS, OK, Record, cut
from .run_dir import RunDir
from .transport import Reply, served_as


@dataclass(frozen=True)
class Job:
    id: str
    group: str                # checkpoint file the record goes to
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


class Admission(Protocol):
    """A gate the caller sets on sending (a budget), asked for each job as it is about to be sent."""

    def reserve(self, job: Job) -> str | None:
        """None: ``job`` may be sent (what it may cost is held until :meth:`release`); else why the run stops."""

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

    @property
    def done(self) -> int:
        return self.ok + self.failed


class _Stopped(Exception):
    """The run is stopping: this job is left for the next run (no record)."""


def _warn(text: str) -> None:
    print(f"warning: {text}", file=sys.stderr, flush=True)


def duration(seconds: float) -> str:
    """``2m10s``, or ``45s`` under a minute."""
    s = int(seconds)
    return f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"


class Engine:
    """Runs jobs through a client with a task's validation, writing one record per job."""

    def __init__(self, client: Client, limits: Limits, checkpoint: RunDir, task: Task,
                 config: EngineConfig, on_record: Callable[[Record], None] | None = None,
                 on_warning: Callable[[str], None] | None = None, limiter: ConcurrencyLimit | None = None) -> None:
        self.client, self.limits, self.checkpoint, self.task, self.config = client, limits, checkpoint, task, config
        self.outage = Outage(config.probe_every)
        # the live limit; ``limiter`` shares one between engines (a service's forecasts, each its own engine)
        self.limiter = limiter or ConcurrencyLimit(config.concurrency, config.adaptive)
        self.stats = Stats(outage=self.outage, limit=self.limiter)
        self._pool = config.concurrency * max(1, config.pool)  # workers: room for jobs waiting to retry
        self.on_record: Callable[[Record], None] = on_record or (lambda record: None)
        self.on_warning: Callable[[str], None] = on_warning or _warn
        self.admission: Admission | None = None  # set by the caller: asked before each job is sent
        self.stopped: str | None = None
        self._stop = asyncio.Event()
        self._error: LiveroomError | None = None
        self._workers: list[asyncio.Task[None]] = []
        self._sending: set[asyncio.Task[Any]] = set()  # workers waiting on an answer: they get the grace
        self._answered = False      # some request got an HTTP answer (any status)
        self._connect_failures = 0  # failed connections before that
        self._model_warned = False

    def stop(self, reason: str = "stopped") -> None:
        """Stop taking jobs and sending; a second call also gives up on requests in flight."""
        again = self._stop.is_set()
        if self.stopped is None:
            self.stopped = reason
        self._stop.set()
        for w in self._workers:
            if again or w not in self._sending:
                w.cancel()

    def _fail(self, error: LiveroomError) -> None:
        """Stop the run because of ``error``, which :meth:`run` raises once the workers are done."""
        if self._error is None:
            self._error = error
        self.stop("error")

    async def run(self, jobs: Iterable[Job], total: int) -> Stats:
        """Do ``jobs`` (``total`` of them, for progress) until done, stopped or failed."""
        self.stats = Stats(total=total, outage=self.outage, limit=self.limiter)
        queue: asyncio.Queue[Job | None] = asyncio.Queue(maxsize=2 * self.config.concurrency)
        producer = asyncio.create_task(self._guarded(self._produce(jobs, queue), "reading the jobs"))
        workers = self._workers = [asyncio.create_task(self._guarded(self._worker(queue), "a worker"))
                                   for _ in range(self._pool)]
        all_done: asyncio.Future[Any] = asyncio.gather(*workers, return_exceptions=True)
        stopping: asyncio.Future[Any] = asyncio.create_task(self._stop.wait())
        try:
            await asyncio.wait({all_done, stopping}, return_when=asyncio.FIRST_COMPLETED)
            if self._stop.is_set():
                producer.cancel()
                await asyncio.wait(workers, timeout=self.config.grace)
                for w in workers:
                    w.cancel()
            await asyncio.gather(all_done, producer, return_exceptions=True)
        finally:
            stopping.cancel()
            producer.cancel()
            for w in workers:
                w.cancel()
        if self._error is not None:
            raise self._error
        return self.stats

    async def _guarded(self, work: Coroutine[Any, Any, None], what: str) -> None:
        """``work``, any exception it raises stopping the run with one line naming it."""
        try:
            await work
        except LiveroomError as e:  # Fatal, WriteFailed: already one line
            self._fail(e)
        except Exception as e:  # a bug or a failing callback: the run must not wait for it forever
            detail = " ".join(str(e).split())[:300]
            self._fail(RunFailed(f"the run stopped: unexpected {type(e).__name__} in {what}"
                                 + (f": {detail}" if detail else "")
                                 + "; the records written are whole: run the same command again to resume"))

    async def _produce(self, jobs: Iterable[Job], queue: asyncio.Queue[Job | None]) -> None:
        for job in jobs:
            await queue.put(job)
            if self._stop.is_set():
                return
        for _ in range(self._pool):
            await queue.put(None)

    async def _admit(self, slot: Slot) -> None:
        """Wait until one more job may start: the one place that decides when a job is let in.

        A slot under the live concurrency limit (kept from the worker's last job while the limit
        allows); the caller's :class:`Admission` (a budget) is asked next, once the job is known.
        """
        await slot.take()

    async def _worker(self, queue: asyncio.Queue[Job | None]) -> None:
        slot = Slot(self.limiter)
        try:
            await self._work(queue, slot)
        finally:  # cancelled too: a shared limit must not lose the slot
            slot.release()

    async def _work(self, queue: asyncio.Queue[Job | None], slot: Slot) -> None:
        while not self._stop.is_set():
            if not slot.held:  # kept from the last job: nothing to wait for
                await self._admit(slot)
            job = await queue.get()
            if job is None or self._stop.is_set():
                return
            refused = self.admission.reserve(job) if self.admission is not None else None
            if refused is not None:  # the job is left for a rerun, and the run stops as by stop()
                slot.release()  # before the sleep: the slot is not this worker's any more
                await asyncio.sleep(0)  # first let every worker start: one cancelled before it starts warns
                if not self._stop.is_set():
                    self.stop(refused)
                return
            try:
                record = await self._process(job, slot)
            except _Stopped:
                return
            slot.done()  # kept for the next job unless the limit dropped or a retried job waits
            self.checkpoint.write(job.group, record)
            if record.status == OK:
                self.stats.ok += 1
            else:
                self.stats.failed += 1
            self.on_record(record)
            if self.admission is not None:
                self.admission.release(job, record)

    # -- sending ---------------------------------------------------------------------
    def _before_sleep(self, rs: RetryCallState) -> None:
        self.stats.retries += 1

    async def _nap(self, seconds: float, slot: Slot) -> None:
        """A retry's wait, its slot lent to another job; cut short (and the job left) when the run stops."""
        slot.park()
        try:
            await asyncio.wait_for(self._stop.wait(), seconds)
        except asyncio.TimeoutError:
            await slot.resume()
            return
        raise _Stopped

    def _refused(self, stamp: int, e: Retryable) -> None:
        """What a failure tells the limits: a 429 feeds the concurrency limit, then the rate limits."""
        if e.status != 429:
            return self.limiter.other(stamp)
        self.stats.throttled += 1
        self.limits.refused(e, self.limiter.throttled(stamp, e.signal == "cap"), self.limiter.adaptive)

    def _unanswered(self, e: Retryable) -> bool:
        """A send that could not connect: True when it is an outage (wait, do not count it)."""
        if not self._answered:
            self._connect_failures += 1
            if self._connect_failures >= self.config.first_failures:
                raise Unreachable(f"cannot reach {self.client.url}: {e}; nothing has answered "
                                  "(check the base URL, OPENAI_BASE_URL and the network)")
            return False
        self.outage.begin(str(e))
        if self.outage.seconds >= self.config.give_up_after:
            self.stop(f"endpoint unreachable for {duration(self.outage.seconds)} (last error: {e})")
            raise _Stopped
        return True

    async def _attempt(self, payload: dict[str, Any], tokens: int, tries: list[int]) -> Reply:
        while True:
            await self.outage.wait()
            await self.limits.acquire(tokens)
            if self._stop.is_set():
                raise _Stopped
            tries[0] += 1
            self.stats.sent += 1
            me = asyncio.current_task()
            assert me is not None
            self._sending.add(me)
            stamp = self.limiter.send()
            try:
                reply = await self.client.complete(payload)
            except Retryable as e:
                self._refused(stamp, e)
                if e.connection and self._unanswered(e):
                    continue
                if not e.connection:
                    self._got_answer()
                raise
            except BaseException as e:  # another answer (CallError), or cancelled by the stop
                self.limiter.other(stamp)
                if isinstance(e, CallError):
                    self._got_answer()
                raise
            finally:
                self._sending.discard(me)
            self.limiter.ok(stamp)
            self.limits.observe(reply.window)
            self._got_answer()
            self.limits.settle(tokens, reply.usage.get("total_tokens"))
            return reply

    def _got_answer(self) -> None:
        self._answered = True
        self.outage.end()

    async def _send(self, payload: dict[str, Any], tokens: int, tries: list[int], slot: Slot) -> Reply:
        """One reply, through limits and retries; ``tries[0]`` counts the attempts.

        Most sends succeed at once, so the retry policy is entered only after a
        first failure, which it then counts as its first attempt.
        """
        try:
            return await self._attempt(payload, tokens, tries)
        except Retryable as e:
            failed: list[Retryable] = [e]
        policy = retry_policy(self.config.max_retries, self.config.backoff_initial,
                              self.config.backoff_max, self._before_sleep, lambda s: self._nap(s, slot))
        async for attempt in policy:
            with attempt:
                if failed:
                    raise failed.pop()
                return await self._attempt(payload, tokens, tries)
        raise AssertionError("unreachable")

    def _check_model(self, payload: dict[str, Any], served: str) -> None:
        """Warn once when the server names another model than the one asked for."""
        asked = payload.get("model")
        if self._model_warned or not served or not isinstance(asked, str) or served_as(served, asked):
            return
        self._model_warned = True
        self.on_warning(f"the server answered with model {served!r}, not {asked!r} "
                        "(each record keeps the model that answered it)")

    async def _process(self, job: Job, slot: Slot) -> Record:
        t0 = time.monotonic()
        payload, tries, reasks = job.payload, [0], 0
        usage: dict[str, int] = {}
        text: str | None = None
        model: str | None = None

        def record(status: str, scores: Any = None, error: str | None = None) -> Record:
            return Record(job.id, status, job.meta, scores, cut(text, self.config.keep_chars), usage, tries[0],
                          reasks, round((time.monotonic() - t0) * 1000, 1), error, round(time.time(), 3), model)

        while True:
            try:
                reply = await self._send(payload, job.tokens, tries, slot)
            except Retryable as e:
                return record(ERROR, error=f"{e} (gave up after {tries[0]} attempts)")
            except Rejected as e:  # a content filter's starts with content_filter: a rerun leaves it
                self.stats.filtered += isinstance(e, Filtered)
                return record(ERROR, error=str(e))
            text, model = reply.text, reply.model or None
            self._check_model(payload, reply.model)
            for k, v in reply.usage.items():
                usage[k] = usage.get(k, 0) + v
            self.stats.prompt_tokens += reply.usage.get("prompt_tokens", 0)
            self.stats.completion_tokens += reply.usage.get("completion_tokens", 0)
            try:
                if not text and reply.finish_reason == "length":
                    raise NoContent()
                return record(OK, scores=self.task.validate(job, text))
            except UnusableReply as e:
                self.stats.invalid += 1
                if reasks >= self.config.max_reasks or self._stop.is_set():
                    return record(INVALID, error=str(e))
                reasks += 1
                payload = self.task.reask(job, payload, text[:self.config.reask_chars], str(e))
                if self.config.reask_max_tokens:  # more room for a re-ask (a reasoning model's)
                    payload = {**payload, "max_tokens": self.config.reask_max_tokens}
