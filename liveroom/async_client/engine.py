"""A pool of workers pulling jobs from a bounded queue, under a live concurrency limit.

The queue is fed lazily from an iterator, so memory stays flat. A job starts when
:meth:`Engine._admit` lets it in (a slot under the AIMD :class:`~.concurrency.ConcurrencyLimit`);
waiting for a retry it lends its slot (``pool`` workers per slot leave room), so a scattered 429
delays that job only. Each job is sent by the :class:`~.sending.Sender` (the rate limits, the
outage wait, the retry policy of :mod:`.policy`); its reply is validated by the task and, on
:class:`~.errors.UnusableReply`, asked again with the reason (at most ``reask_chars`` of the bad
reply); the outcome is appended as one :class:`~.record.Record`.

The engine knows nothing of what it asks (:mod:`.contract`: a job, and the client and task a
caller plugs in); which jobs are left to do is the caller's (and its planner's) call.

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
from collections.abc import Callable, Coroutine, Iterable
from typing import Any

from ..errors import LiveroomError
from .concurrency import ConcurrencyLimit, Slot
from .contract import Admission, Client, EngineConfig, Job, Stats, Task
from .errors import Filtered, NoContent, Rejected, RunFailed, UnusableReply
from .limits import Limits, Outage
from .policy import Failure
from .record import ERROR, INVALID, OK, Record
from .run_dir import RunDir
from .sending import Draft, Sender, Stopped
from .transport import served_as

# the contract's names, which callers import from here with the engine
__all__ = ["Admission", "Client", "Engine", "EngineConfig", "Job", "Stats", "Task"]


def _warn(text: str) -> None:
    print(f"warning: {text}", file=sys.stderr, flush=True)


class Engine:
    """Runs jobs through a client with a task's validation, writing one record per job."""

    def __init__(self, client: Client, limits: Limits, run_dir: RunDir, task: Task,
                 config: EngineConfig, on_record: Callable[[Record], None] | None = None,
                 on_warning: Callable[[str], None] | None = None, limiter: ConcurrencyLimit | None = None) -> None:
        self.client, self.limits, self.run_dir, self.task, self.config = client, limits, run_dir, task, config
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
        self._sender = self._new_sender()
        self._model_warned = False

    def _new_sender(self) -> Sender:
        return Sender(self.client, self.limits, self.limiter, self.outage, self.config, self.stats, self._stop, self.stop)

    def stop(self, reason: str = "stopped") -> None:
        """Stop taking jobs and sending; a second call also gives up on requests in flight."""
        again = self._stop.is_set()
        if self.stopped is None:
            self.stopped = reason
        self._stop.set()
        for w in self._workers:
            if again or w not in self._sender.sending:  # those waiting on an answer get the grace
                w.cancel()

    def _fail(self, error: LiveroomError) -> None:
        """Stop the run because of ``error``, which :meth:`run` raises once the workers are done."""
        if self._error is None:
            self._error = error
        self.stop("error")

    async def run(self, jobs: Iterable[Job], total: int) -> Stats:
        """Do ``jobs`` (``total`` of them, for progress) until done, stopped or failed."""
        self.stats = Stats(total=total, outage=self.outage, limit=self.limiter)
        self._sender = self._new_sender()
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

    async def _reserve(self, job: Job, slot: Slot) -> str | None:
        """The caller's :class:`Admission` on ``job``: None once it may go (with a slot), else why the
        run stops. A job held back waits, its slot lent (a job in flight may need it for a retry),
        until a job in flight is released, and is asked again; a stop cancels the wait."""
        assert self.admission is not None
        while isinstance(verdict := self.admission.reserve(job), asyncio.Event):
            slot.park()
            await verdict.wait()
        if verdict is None:
            await slot.resume()  # let in already (its cost held): ahead of new jobs
        return verdict

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
            refused = await self._reserve(job, slot) if self.admission is not None else None
            if refused is not None:  # the job is left for a rerun, and the run stops as by stop()
                slot.release()  # before the sleep: the slot is not this worker's any more
                await asyncio.sleep(0)  # first let every worker start: one cancelled before it starts warns
                if not self._stop.is_set():
                    self.stop(refused)
                return
            try:
                record = await self._process(job, slot)
            except Stopped:
                return
            slot.done()  # kept for the next job unless the limit dropped or a retried job waits
            self.run_dir.write(job.group, record)
            if record.status == OK:
                self.stats.ok += 1
            else:
                self.stats.failed += 1
            self.on_record(record)
            if self.admission is not None:
                self.admission.release(job, record)

    def _check_model(self, payload: dict[str, Any], served: str) -> None:
        """Warn once when the server names another model than the one asked for."""
        asked = payload.get("model")
        if self._model_warned or not served or not isinstance(asked, str) or served_as(served, asked):
            return
        self._model_warned = True
        self.on_warning(f"the server answered with model {served!r}, not {asked!r} "
                        "(each record keeps the model that answered it)")

    async def _process(self, job: Job, slot: Slot) -> Record:
        draft, payload, keep = Draft(job), job.payload, self.config.keep_chars
        while True:
            try:
                reply = await self._sender.send(payload, job.tokens, slot, draft)
            except Rejected as e:  # a content filter's starts with content_filter: a rerun leaves it
                self.stats.filtered += isinstance(e, Filtered)
                return draft.record(ERROR, keep, error=str(e))
            if isinstance(reply, Failure):
                return draft.record(ERROR, keep, error=f"{reply.error} (gave up after {draft.attempts} attempts)")
            draft.text, draft.model = reply.text, reply.model or None
            self._check_model(payload, reply.model)
            for k, v in reply.usage.items():
                draft.usage[k] = draft.usage.get(k, 0) + v
            self.stats.prompt_tokens += reply.usage.get("prompt_tokens", 0)
            self.stats.completion_tokens += reply.usage.get("completion_tokens", 0)
            try:
                if not reply.text and reply.finish_reason == "length":
                    raise NoContent()
                return draft.record(OK, keep, scores=self.task.validate(job, reply.text))
            except UnusableReply as e:
                self.stats.invalid += 1
                if draft.reasks >= self.config.max_reasks or self._stop.is_set():
                    return draft.record(INVALID, keep, error=str(e))
                draft.reasks += 1
                payload = self.task.reask(job, payload, reply.text[:self.config.reask_chars], str(e))
                if self.config.reask_max_tokens:  # more room for a re-ask (a reasoning model's)
                    payload = {**payload, "max_tokens": self.config.reask_max_tokens}
