"""``bin/batch prepare``: the request files for what is not done yet.

Each request line is ``{"custom_id", "method": "POST", "url", "body"}``, the
body being exactly what direct mode sends; beside it a meta line keeps the
record fields import needs. Files are written as ``.tmp``, fsynced, and only
then renamed into place and named in the state, so a crash leaves the run as
it was. Unsubmitted files of an earlier prepare are replaced; requests in
files submitted and not yet finished are left out (they are on their way).

A request whose earlier replies were unusable (its ``invalid`` records in
the checkpoint, from any import or from ``bin/score``) is sent as direct
mode's re-ask: the conversation with each bad reply and its reason appended
(:meth:`~liveroom.scoring.plan.StageTask.reask`), up to ``max_reasks``
re-asks; after that it is left out, for ``bin/score`` to ask afresh.

With ``shards`` (``--shards N``) the requests go into N files whose sizes
differ by at most one line (:func:`even_sizes`), for N machines that each run
one; the provider's file limits still hold, and a file they would cut is
refused. A provider without a Batch API (vLLM: the files go to ``vllm
run-batch``) has nothing submitted, so every prepare replaces every file of
the previous one, numbered on after them so that a new round never takes the
name of an output file brought back from an earlier one.

Which requests go out (:func:`batch_requests`), what a line is
(:func:`request_line`) and where a file ends (:class:`FileSplit`) are decided
once, for prepare and for its dry run (:class:`Preview`, which writes nothing).
"""

from __future__ import annotations

import hashlib
import os
import re
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO, Iterable, Iterator

import orjson

from ...async_client.engine import EngineConfig, Job
from ...async_client.record import Record
from ...async_client.run_dir import RunDir
from ...errors import InputError
from ..plan import DoneTable, Plan, StageTask, plan_jobs, scan_done
from .state import BatchState, Shard, batch_dir, load_state, locked, pending_ids, save_state

DEFAULT_ENDPOINT = "/v1/chat/completions"


@dataclass(frozen=True)
class ShardLimits:
    """What goes in each request file."""

    endpoint: str = DEFAULT_ENDPOINT  # the 'url' of each line and the batch endpoint
    max_requests: int = 50000
    max_bytes: int = 200_000_000
    max_line_bytes: int | None = None  # a request line over it is refused; None: no limit
    shards: int | None = None  # so many files of equal size (one line more or less); None: as the limits split


@dataclass
class PrepareResult:
    dir: Path  # RUN_DIR/batch
    written: list[Shard] = field(default_factory=list)
    replaced: int = 0  # earlier unsubmitted files replaced
    pending: int = 0  # requests left out: in submitted batches not fetched yet
    reasks: int = 0  # requests sent as a re-ask after an unusable reply
    exhausted: int = 0  # requests left out: still unusable after max_reasks re-asks

    @property
    def requests(self) -> int:
        return sum(s.requests for s in self.written)


def prepare(run_dir: Path, plan: Plan, limits: ShardLimits, include_submitted: bool = False,
            max_reasks: int = EngineConfig.max_reasks, provider: str | None = None,
            number_on: bool = False) -> PrepareResult:
    """Write the request files of every request not yet ok (nor on its way) and name them in the state;
    ``number_on``: the new files are numbered after every file of the state, not only the submitted ones."""
    run_dir = Path(run_dir)
    records = RunDir(run_dir)
    with locked(run_dir):  # one writer: not while bin/score or another bin/batch works on the run
        plan.manifest = records.check(plan.manifest)
        state = load_state(run_dir)  # unreadable: refused before anything is written
        kept = [s for s in state.shards if s.submitted]
        dropped = [s for s in state.shards if not s.submitted]
        d = batch_dir(run_dir)
        result = PrepareResult(d)
        jobs = batch_requests(run_dir, plan, scan_done(plan, records), state, include_submitted, max_reasks, result)
        written = write_shards(d, jobs, _next_number(state.shards if number_on else kept), limits)
        records.open(plan.manifest)  # the manifest bin/score would write
        records.close()
        _put_in_place(d, dropped, written)
        state.shards = kept + written
        state.provider = provider or state.provider
        save_state(run_dir, state)
    result.written, result.replaced = written, len(dropped)
    return result


def batch_requests(run_dir: Path, plan: Plan, done: DoneTable, state: BatchState, include_submitted: bool,
                   max_reasks: int, result: PrepareResult) -> Iterator[Job]:
    """The requests prepare writes, in order: those ``done`` lacks, less those on their way in files
    submitted and not finished (unless ``include_submitted``), each sent as the re-ask that follows its
    unusable replies; ``result`` counts what is left out and the re-asks. ``done`` is changed."""
    n_done = done.count()
    if not include_submitted:  # on their way in submitted batches: not asked again
        pending = [i.encode() for i in pending_ids(run_dir, state)]
        for s in plan.stages:
            done.add(s.name, pending)
    result.pending = done.count() - n_done
    history = RunDir(run_dir).invalid(s.name for s in plan.stages)
    return _reasked(plan_jobs(plan, done)[0], history, max_reasks, result)


def _reasked(jobs: Iterable[Job], history: dict[str, list[Record]], max_reasks: int,
             result: PrepareResult) -> Iterator[Job]:
    """The jobs, each with unusable replies before sent as the re-ask that follows them (as direct mode
    asks it); those re-asked ``max_reasks`` times already are left out."""
    task = StageTask()
    for job in jobs:
        tries = history.get(job.id)
        if not tries:
            yield job
            continue
        if len(tries) > max_reasks:
            result.exhausted += 1
            continue
        payload = job.payload
        for rec in tries:
            payload = task.reask(job, payload, rec.reply or "", rec.error or "unusable reply")
        result.reasks += 1
        yield replace(job, payload=payload)


def request_line(job: Job, endpoint: str) -> bytes:
    """The request line of ``job``: the body direct mode sends, as the Batch API takes it."""
    return orjson.dumps({"custom_id": job.id, "method": "POST", "url": endpoint, "body": job.payload}) + b"\n"


def even_sizes(n: int, shards: int) -> list[int]:
    """The sizes of ``n`` requests in ``shards`` files, larger ones first, differing by one line at most;
    never an empty file (fewer files when there are fewer requests)."""
    q, r = divmod(n, shards)
    return [q + 1] * r + [q] * (shards - r if q else 0)


class FileSplit:
    """Where the request files end: a new file whenever the next line would pass a limit of the current
    one, or with ``sizes`` (:func:`even_sizes`) whenever the current file has its size, a limit it passes
    then being refused; a line over a limit on its own is refused with the limit named."""

    def __init__(self, limits: ShardLimits, sizes: list[int] | None = None) -> None:
        self.limits, self.sizes = limits, sizes
        self.files = self._requests = self._bytes = 0
        if sizes and sizes[0] > limits.max_requests:
            raise InputError(f"--shards {limits.shards}: files of {sizes[0]} requests, over --max-requests "
                             f"{limits.max_requests}; give more shards")

    def add(self, job_id: str, size: int) -> bool:
        """Count a line of ``size`` bytes; True when it starts a new file."""
        lim = self.limits
        if size > lim.max_bytes:
            raise InputError(f"request {job_id} alone is {size} bytes, over --max-bytes {lim.max_bytes}")
        if lim.max_line_bytes is not None and size > lim.max_line_bytes:
            raise InputError(f"request {job_id} is {size} bytes, over --max-line-bytes "
                             f"{lim.max_line_bytes}, the provider's limit per line")
        if self.sizes is None:
            new = not self.files or self._requests >= lim.max_requests or self._bytes + size > lim.max_bytes
        else:
            new = not self.files or self._requests >= self.sizes[self.files - 1]
            if not new and self._bytes + size > lim.max_bytes:
                raise InputError(f"--shards {lim.shards}: file {self.files} of {self.sizes[self.files - 1]} "
                                 f"requests passes --max-bytes {lim.max_bytes}; give more shards")
        if new:
            self.files, self._requests, self._bytes = self.files + 1, 0, 0
        self._requests, self._bytes = self._requests + 1, self._bytes + size
        return new


class Preview:
    """What prepare would write, for its dry run: called with the done table, the requests of every line,
    each checked and split into files as the writer does; nothing is written."""

    def __init__(self, run_dir: Path, plan: Plan, limits: ShardLimits, include_submitted: bool = False,
                 max_reasks: int = EngineConfig.max_reasks) -> None:
        self.run_dir, self.plan, self.include_submitted, self.max_reasks = run_dir, plan, include_submitted, max_reasks
        self.split, self.result = FileSplit(limits), PrepareResult(batch_dir(run_dir))

    def __call__(self, done: DoneTable) -> Iterator[Job]:
        state = load_state(self.run_dir)  # unreadable state: refused, as prepare refuses it
        jobs: Iterable[Job] = batch_requests(self.run_dir, self.plan, done, state, self.include_submitted,
                                             self.max_reasks, self.result)
        lim = self.split.limits
        if lim.shards:  # split as the writer splits: the sizes need the count first
            jobs = list(jobs)
            self.split = FileSplit(lim, even_sizes(len(jobs), lim.shards))
        for job in jobs:
            self.split.add(job.id, len(request_line(job, lim.endpoint)))
            yield job

    @property
    def files(self) -> int:
        return self.split.files

    @property
    def counts(self) -> tuple[int, int, int]:
        """Requests sent as re-asks, left out as on their way, left out as re-asked too often."""
        return self.result.reasks, self.result.pending, self.result.exhausted


def _next_number(kept: list[Shard]) -> int:
    """The NNNN of the next file: after every file kept."""
    return 1 + max((int(re.findall(r"\d+", s.name)[0]) for s in kept), default=0)


def _put_in_place(d: Path, dropped: list[Shard], written: list[Shard]) -> None:
    """Remove the replaced files (unless a new one has the name), rename the new ones into place."""
    new = {w.name for w in written} | {w.meta for w in written}
    for s in dropped:
        for name in (s.name, s.meta):
            if name not in new:
                (d / name).unlink(missing_ok=True)
    for w in written:
        os.replace(d / (w.name + ".tmp"), d / w.name)
        os.replace(d / (w.meta + ".tmp"), d / w.meta)


def write_shards(d: Path, jobs: Iterable[Job], first: int, limits: ShardLimits) -> list[Shard]:
    """``requests-NNNN.jsonl.tmp`` and their meta files from ``first`` on, fsynced; nothing left on error."""
    d.mkdir(parents=True, exist_ok=True)
    sizes = None
    if limits.shards:
        jobs = list(jobs)
        sizes = even_sizes(len(jobs), limits.shards)
    writer = _ShardWriter(d, first, limits, sizes)
    try:
        for job in jobs:
            writer.add(job)
        writer.close()
    except BaseException:
        writer.discard()
        raise
    for w in writer.written:
        for name in (w.name, w.meta):
            with open(d / (name + ".tmp"), "rb") as f:
                os.fsync(f.fileno())
    return writer.written


class _ShardWriter:
    """Request lines into the current pair of ``.tmp`` files, a new pair whenever a limit is reached."""

    def __init__(self, d: Path, first: int, limits: ShardLimits, sizes: list[int] | None = None):
        self.d, self.first, self.limits = d, first, limits
        self.split = FileSplit(limits, sizes)
        self.written: list[Shard] = []
        self._files: tuple[IO[bytes], IO[bytes]] | None = None
        self._hash = hashlib.sha256()

    def add(self, job: Job) -> None:
        line = request_line(job, self.limits.endpoint)
        req, meta = self._start() if self.split.add(job.id, len(line)) or self._files is None else self._files
        req.write(line)
        self._hash.update(line)
        meta.write(orjson.dumps({"id": job.id, **job.meta}) + b"\n")
        self.written[-1].requests += 1
        self.written[-1].bytes += len(line)

    def _start(self) -> tuple[IO[bytes], IO[bytes]]:
        self.close()
        stem = f"requests-{self.first + len(self.written):04d}"
        shard = Shard(f"{stem}.jsonl", f"{stem}.meta.jsonl", 0, 0, None, self.limits.endpoint,
                      prepared_at=round(time.time(), 3))
        self.written.append(shard)
        self._hash = hashlib.sha256()
        self._files = (open(self.d / (shard.name + ".tmp"), "wb"), open(self.d / (shard.meta + ".tmp"), "wb"))
        return self._files

    def close(self) -> None:
        """Close the current pair, its request file's hash recorded."""
        if self._files is None:
            return
        self.written[-1].sha256 = self._hash.hexdigest()
        for f in self._files:
            f.close()
        self._files = None

    def discard(self) -> None:
        """Close and remove every file written."""
        for f in self._files or ():
            f.close()
        self._files = None
        for w in self.written:
            (self.d / (w.name + ".tmp")).unlink(missing_ok=True)
            (self.d / (w.meta + ".tmp")).unlink(missing_ok=True)
