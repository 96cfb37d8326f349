"""A pool of workers pulling jobs from a bounded queue, under a live concurrency limit.

The queue is fed lazily from an iterator, so memory stays flat. A job starts when
:meth:`Engine._admit` lets it in (a slot under the AIMD :class:`~.concurrency.ConcurrencyLimit`);
waiting for a retry it lends its slot (``pool`` workers per slot leave room), so a scattered 429
delays that job only. Each job is sent by the :class:`~.sending.Sender` (the rate limits, the
outage wait, the retry policy of :mod:`.policy`); its reply is validated by the task and, on
:class:`~.errors.UnusableReply`, asked again with the reason (at most ``reask_chars`` of the bad
reply); the outcome is appended as one :class:`~.record.Record`. A job whose body asks ``logprobs``
has its reply's token probabilities read by the task too (:class:`~.contract.ReadsProbabilities`);
where a server returns none the scores stay as they are and the run says so once per endpoint.

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

The engine sends through a :class:`~.pool.Pool` of endpoints, one (``client``, ``limits``)
unless ``endpoints`` names several: each has its own workers, limits and outage, a fatal
answer retires one endpoint and a job it cannot answer goes to another (:mod:`.pool` says
how). The run's queue serves such a moved job ahead of new ones; the run is done when every
job the producer gave is recorded.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable, Coroutine, Iterable
from typing import Any

from ..errors import LiveroomError
from .concurrency import ConcurrencyLimit, Slot
from .contract import Admission, Client, EngineConfig, Job, ReadsProbabilities, Stats, Task
from .errors import Fatal, Filtered, NoContent, Rejected, RunFailed, UnusableReply
from .limits import Limits, Outage
from .policy import Failure
from .pool import Dispatch, Endpoint, Moved, Pool
from .record import ERROR, INVALID, OK, Record
from .run_dir import RunDir
from .sending import Draft, Sender, Stopped
from .transport import served_as

# the contract's names, which callers import from here with the engine
__all__ = ["Admission", "Client", "Endpoint", "Engine", "EngineConfig", "Job", "Stats", "Task"]



def _warn(text: str) -> None:
    print(f"warning: {text}", file=sys.stderr, flush=True)


class Engine:
    """Runs jobs through a client with a task's validation, writing one record per job."""

    def __init__(self, client: Client, limits: Limits, run_dir: RunDir, task: Task,
                 config: EngineConfig, on_record: Callable[[Record], None] | None = None,
                 on_warning: Callable[[str], None] | None = None, limiter: ConcurrencyLimit | None = None,
                 endpoints: list[Endpoint] | None = None) -> None:
        self.run_dir, self.task, self.config = run_dir, task, config
        # the live limit; ``limiter`` shares one between engines (a service's forecasts, each its own engine)
        self.pool = Pool(endpoints or [Endpoint("", client, limits, limiter or ConcurrencyLimit(
            config.concurrency, config.adaptive), Outage(config.probe_every))])
        first = self.pool.endpoints[0]
        self.client, self.limits, self.limiter, self.outage = first.client, first.limits, first.limiter, first.outage
        self.stats = self._new_stats()
        self.on_record: Callable[[Record], None] = on_record or (lambda record: None)
        self.on_warning: Callable[[str], None] = on_warning or _warn
        self.admission: Admission | None = None  # set by the caller: asked before each job is sent
        self.stopped: str | None = None
        self._stop = asyncio.Event()
        self._error: LiveroomError | None = None
        self._workers: list[asyncio.Task[None]] = []
        self._sending: set[asyncio.Task[Any]] = set()  # workers waiting on an answer, at every endpoint
        self._model_warned: set[str] = set()  # endpoints warned about the model they serve
        self._probs_warned: set[str] = set()  # endpoints warned that they return no token probabilities
        self._moved: asyncio.Queue[Draft] = asyncio.Queue()  # jobs moved off an endpoint, taken first
        self._dispatch: Dispatch[Job | None] | None = None  # several endpoints: which one gets a new job
        self._outstanding = 0  # jobs given by the producer and not yet recorded
        self._produced = False
        self._finished = asyncio.Event()

    def _new_stats(self, total: int = 0) -> Stats:
        many = len(self.pool) > 1 or self.pool.endpoints[0].name
        return Stats(total=total, outage=self.outage, limit=self.limiter,
                     endpoints=self.pool.describe if many else None)

    def _new_sender(self, endpoint: Endpoint) -> Sender:
        sender = Sender(endpoint.client, endpoint.limits, endpoint.limiter, endpoint.outage, self.config,
                        self.stats, self._stop, self.stop, self.pool, endpoint)
        sender.sending = self._sending
        return sender

    def stop(self, reason: str = "stopped") -> None:
        """Stop taking jobs and sending; a second call also gives up on requests in flight."""
        again = self._stop.is_set()
        if self.stopped is None:
            self.stopped = reason
        self._stop.set()
        for w in self._workers:
            if again or w not in self._sending:  # those waiting on an answer get the grace
                w.cancel()

    def _fail(self, error: LiveroomError) -> None:
        """Stop the run because of ``error``, which :meth:`run` raises once the workers are done."""
        if self._error is None:
            self._error = error
        self.stop("error")

    async def run(self, jobs: Iterable[Job], total: int) -> Stats:
        """Do ``jobs`` (``total`` of them, for progress) until done, stopped or failed."""
        self.stats = self._new_stats(total)
        self.pool.started = self.stats.started
        for endpoint in self.pool.endpoints:
            endpoint.sender = self._new_sender(endpoint)
        self._outstanding, self._produced = 0, False
        self._finished.clear()
        self._moved = asyncio.Queue()
        workers_per = [min(endpoint.limiter.ceiling, self.config.concurrency) * max(1, self.config.pool)
                       for endpoint in self.pool.endpoints]
        queue: asyncio.Queue[Job | None] = asyncio.Queue(maxsize=2 * self.config.concurrency)
        producer = asyncio.create_task(self._guarded(self._produce(jobs, queue, sum(workers_per)), "reading the jobs"))
        self._dispatch = Dispatch(self.pool, queue) if len(self.pool) > 1 else None
        helpers = [producer] if self._dispatch is None else [
            producer, asyncio.create_task(self._guarded(self._dispatch.run(), "handing out the jobs"))]
        workers = self._workers = [  # per endpoint: room for jobs waiting to retry
            asyncio.create_task(self._guarded(self._worker(queue, endpoint), "a worker"))
            for endpoint, n in zip(self.pool.endpoints, workers_per) for _ in range(n)]
        all_done: asyncio.Future[Any] = asyncio.create_task(self._finished.wait())
        stopping: asyncio.Future[Any] = asyncio.create_task(self._stop.wait())
        try:
            await asyncio.wait({all_done, stopping}, return_when=asyncio.FIRST_COMPLETED)
            for helper in helpers:  # done: the producer may wait to hand its last Nones to ended workers
                helper.cancel()
            if self._stop.is_set():
                await asyncio.wait(workers, timeout=self.config.grace)
            for w in workers:  # done: the rest wait for a moved job that will not come
                w.cancel()
            await asyncio.gather(*workers, *helpers, return_exceptions=True)
        finally:
            stopping.cancel()
            all_done.cancel()
            for helper in helpers:
                helper.cancel()
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

    async def _produce(self, jobs: Iterable[Job], queue: asyncio.Queue[Job | None], workers: int) -> None:
        for job in jobs:
            self._outstanding += 1
            await queue.put(job)
            if self._stop.is_set():
                return
        self._produced = True
        self._settled(0)
        for _ in range(workers):
            await queue.put(None)

    def _settled(self, jobs: int) -> None:
        """``jobs`` more are recorded; the run is done once the producer is and every job is recorded."""
        self._outstanding -= jobs
        if self._produced and self._outstanding == 0:
            self._finished.set()

    def _move(self, draft: Draft) -> None:
        """``draft``'s job goes to another endpoint: the next worker with a slot takes it before new jobs."""
        draft.probe = False
        self._moved.put_nowait(draft)

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

    async def _worker(self, queue: asyncio.Queue[Job | None], endpoint: Endpoint) -> None:
        slot = Slot(endpoint.limiter)
        try:
            await self._work(queue, slot, endpoint)
        finally:  # cancelled too: a shared limit must not lose the slot
            slot.release()

    async def _next(self, slot: Slot, endpoint: Endpoint) -> Draft | Job | None:
        """In a pool of several endpoints, the next job for a worker holding ``slot``: one moved from
        another endpoint first, then a new one as :class:`~.pool.Dispatch` hands it; once the new ones
        are all taken (None), moved ones only, waited for holding no slot."""
        if endpoint.retired is not None:  # its worker ends, its slot free for a job of its back from a retry
            return None
        if not self._moved.empty():
            return self._moved.get_nowait()
        assert self._dispatch is not None
        job = await self._dispatch.take(endpoint)
        if job is not None or endpoint.retired is not None:
            return job
        slot.release()  # a job waiting for a retry may need it
        draft = await self._moved.get()
        await self._admit(slot)
        return draft

    async def _work(self, queue: asyncio.Queue[Job | None], slot: Slot, endpoint: Endpoint) -> None:
        sender, many = endpoint.sender, len(self.pool) > 1
        assert sender is not None
        while not self._stop.is_set():
            probe = many and await self._probing(endpoint, slot)
            if not slot.held:  # kept from the last job: nothing to wait for
                await self._admit(slot)
            item = await (self._next(slot, endpoint) if many else queue.get())  # one endpoint: nothing is moved
            if item is None or self._stop.is_set():
                return
            if isinstance(item, Draft):  # moved from another endpoint: already let in
                draft = item
            else:
                refused = await self._reserve(item, slot) if self.admission is not None else None
                if refused is not None:  # the job is left for a rerun, and the run stops as by stop()
                    slot.release()  # before the sleep: the slot is not this worker's any more
                    await asyncio.sleep(0)  # first let every worker start: one cancelled before it starts warns
                    if not self._stop.is_set():
                        self.stop(refused)
                    return
                draft = Draft(item)
            if endpoint.retired is not None:  # retired while this worker waited: the job goes elsewhere
                self._move(draft)
                return
            draft.probe = probe
            try:
                record = await self._process(draft, slot, endpoint, sender)
            except Stopped:
                return
            except Moved:
                self._move(draft)
                continue
            except Fatal as e:  # the last endpoint's fatal answer stops the run
                first = endpoint.retired is None  # its other requests in flight may answer the same
                if not many:
                    raise
                if not self.pool.retire(endpoint, str(e)):  # one line naming it and its answer
                    raise type(e)(f"endpoint {endpoint.name} retired: {e}; no endpoint is left") from None
                if first:
                    self.on_warning(f"endpoint {endpoint.name} retired: {e}; the other endpoints go on")
                    if self._dispatch is not None:
                        self._dispatch.retire(endpoint)
                self._move(draft)
                return
            slot.done()  # kept for the next job unless the limit dropped or a retried job waits
            job = draft.job
            self.run_dir.write(job.group, record)
            endpoint.done += 1
            if record.status == OK:
                self.stats.ok += 1
            else:
                self.stats.failed += 1
            self.on_record(record)
            if self.admission is not None:
                self.admission.release(job, record)
            self._settled(1)

    async def _probing(self, endpoint: Endpoint, slot: Slot) -> bool:
        """Wait while ``endpoint`` is down (another carries the jobs); True when the next job is its probe.
        The wait holds no slot: a job of this endpoint back from a retry wait needs one to be moved."""
        if endpoint.outage.since is None:
            return False
        slot.park()
        await endpoint.outage.wait()
        return endpoint.outage.since is not None

    def _check_model(self, payload: dict[str, Any], served: str, endpoint: str) -> None:
        """Warn once (per endpoint) when the server names another model than the one asked for."""
        asked = payload.get("model")
        if endpoint in self._model_warned or not served or not isinstance(asked, str) or served_as(served, asked):
            return
        self._model_warned.add(endpoint)
        at = f"endpoint {endpoint}: " if endpoint else ""
        self.on_warning(f"{at}the server answered with model {served!r}, not {asked!r} "
                        "(each record keeps the model that answered it)")

    def _read_probabilities(self, job: Job, text: str, logprobs: Any, scores: Any, endpoint: str) -> None:
        """A job that asked ``logprobs``: the task reads them into ``scores``; where they are missing or
        unreadable the scores stay as they are and the run says so once per endpoint."""
        if not isinstance(self.task, ReadsProbabilities) or self.task.probabilities(job, text, logprobs, scores):
            return
        if endpoint not in self._probs_warned:
            self._probs_warned.add(endpoint)
            at = f"endpoint {endpoint}" if endpoint else "the server"
            self.on_warning(f"{at} returns no token probabilities for the scores (logprobs missing or not "
                            "readable): its records keep the sampled integers only")

    async def _process(self, draft: Draft, slot: Slot, endpoint: Endpoint, sender: Sender) -> Record:
        job, keep = draft.job, self.config.keep_chars
        payload = draft.payload or job.payload
        while True:
            try:
                reply = await sender.send(payload, job.tokens, slot, draft)
            except Rejected as e:  # a content filter's starts with content_filter: a rerun leaves it
                self.stats.filtered += isinstance(e, Filtered)
                return draft.record(ERROR, keep, error=str(e))
            if isinstance(reply, Failure):
                return draft.record(ERROR, keep, error=f"{reply.error} (gave up after {draft.attempts} attempts)")
            draft.text, draft.model, draft.endpoint = reply.text, reply.model or None, endpoint.name
            self._check_model(payload, reply.model, endpoint.name)
            for k, v in reply.usage.items():
                draft.usage[k] = draft.usage.get(k, 0) + v
            self.stats.prompt_tokens += reply.usage.get("prompt_tokens", 0)
            self.stats.completion_tokens += reply.usage.get("completion_tokens", 0)
            try:
                if not reply.text and reply.finish_reason == "length":
                    raise NoContent()
                scores = self.task.validate(job, reply.text)
                if job.payload.get("logprobs") is True:
                    self._read_probabilities(job, reply.text, reply.logprobs, scores, endpoint.name)
                return draft.record(OK, keep, scores=scores)
            except UnusableReply as e:
                self.stats.invalid += 1
                if draft.reasks >= self.config.max_reasks or self._stop.is_set():
                    return draft.record(INVALID, keep, error=str(e))
                draft.reasks += 1
                payload = self.task.reask(job, payload, reply.text[:self.config.reask_chars], str(e))
                if self.config.reask_max_tokens:  # more room for a re-ask (a reasoning model's)
                    payload = {**payload, "max_tokens": self.config.reask_max_tokens}
                draft.payload = payload  # a job moved to another endpoint goes on with the re-ask
