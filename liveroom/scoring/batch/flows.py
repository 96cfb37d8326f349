"""``submit``, ``status``, ``fetch``, ``cancel`` and ``import``: each returns what it did.

Every flow works under the run's lock on a state loaded again under it, and
saves the state after each step that changed it (an upload, a batch, an
import), so a killed command resumes where it stopped. Nothing here prints:
what a long flow does, it says as it happens through ``notify`` (an
:class:`Event`); what it ends with, it returns. The command line words both.
"""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Awaitable, Callable, Literal, Sequence

from ...async_client.batch_api import BatchAPIError, BatchClient, FileFailed
from ...async_client.files import sha256_file
from ...async_client.manifest import Manifest
from ...async_client.providers import DEFAULT_BASE_URL, GENERIC, FileStatus, Provider, resolve_provider
from ...async_client.transport import endpoint_host
from ...cliargs import BASE_URL_ENV
from ...errors import InputError, LiveroomError
from .importer import Ids, ImportReport, finish_covered, import_files
from .runner import no_api
from .state import (
    BatchState,
    Shard,
    batch_dir,
    done_ids,
    ended,
    load_state,
    locked,
    read_manifest,
    save_state,
    shard_ids,
)

TOO_LARGE = (413, 435)  # an upload over the size limit (Zhipu: 435, docs/PROVIDERS.md section 1.1)

EventKind = Literal["uploaded", "resumed", "stale", "upload_failed", "created", "changed", "imported",
                    "not_submitted"]


@dataclass(frozen=True)
class Event:
    """One step of a flow, as it happens: the shard as it was then, and the step's own detail."""

    kind: EventKind
    shard: Shard | None = None
    detail: str = ""


Notify = Callable[[Event], None]


def _quiet(event: Event) -> None:
    pass


def _event(kind: EventKind, shard: Shard | None = None, detail: str = "") -> Event:
    return Event(kind, replace(shard) if shard is not None else None, detail)


@dataclass(frozen=True)
class Api:
    """How to reach the Batch API."""

    base_url: str
    key: str | None
    timeout: float = 120.0
    max_retries: int = 6
    backoff: float = 1.0

    def client(self) -> BatchClient:
        return BatchClient(self.base_url, self.key, timeout=self.timeout, max_retries=self.max_retries,
                           backoff=self.backoff)


@dataclass
class PreparedRun:
    """A prepared run directory, as read before the lock is taken."""

    dir: Path
    manifest: Manifest
    state: BatchState
    base_url: str
    provider: Provider = GENERIC


def prepared_base_url(arg: str | None, manifest: Manifest, run_dir: Path) -> str:
    """The base URL of the endpoint the run was prepared for: ``--base-url`` (refused when it is another
    endpoint), else ``$OPENAI_BASE_URL`` when it is the run's endpoint, else the run's endpoint."""
    want = manifest.endpoint or endpoint_host(DEFAULT_BASE_URL)
    env = os.environ.get(BASE_URL_ENV)
    url = arg or (env if env and endpoint_host(env) == want else want)
    if url != want and endpoint_host(url) != want:
        raise InputError(f"{run_dir} was prepared for {want}, not {endpoint_host(url)}; "
                         "use the same --base-url, or another run directory")
    return url


def open_run(run_dir: Path, base_url: str | None, provider: str | None = None) -> PreparedRun:
    """The run directory of a prepare, with the endpoint it was prepared for and its provider
    profile: ``provider``, else the one prepare recorded, else the one the base URL's host names."""
    run_dir = Path(run_dir)
    manifest = read_manifest(run_dir)
    state = load_state(run_dir)
    if not state.shards:
        raise InputError(f"{run_dir}: no prepared batch files; run bin/batch prepare first")
    url = prepared_base_url(base_url, manifest, run_dir)
    return PreparedRun(run_dir, manifest, state, url, resolve_provider(provider or state.provider, url))


def _needs_api(run: PreparedRun) -> None:
    """Refused, saying what to do instead, for a provider whose files the user runs (vLLM)."""
    if not run.provider.batch.api:
        raise InputError(no_api(run.provider.name, run.dir))


def _batch_id(s: Shard) -> str:
    if not s.batch_id:
        raise LiveroomError(f"{s.name}: no batch yet")  # callers pick shards with one
    return s.batch_id


# ----------------------------------------------------------------- submit

@dataclass
class SubmitResult:
    todo: int = 0  # files without a batch; none: nothing to submit
    refused: int = 0  # files not submitted: requests done meanwhile, or the upload failed


@dataclass(frozen=True)
class UploadWait:
    timeout: float = 600.0  # seconds for an upload to become usable
    poll: float = 2.0
    mode: FileStatus | None = None  # how to tell (poll, optional, absent); None: as the provider does


@dataclass(frozen=True)
class Creation:
    """What each batch is created with (None: the field is not sent)."""

    window: str | None = "24h"  # completion_window
    auto_delete_input_file: bool | None = None

    @classmethod
    def default(cls, provider: Provider) -> Creation:
        return cls(provider.batch.completion_window)


def submit(run: PreparedRun, api: Api, wait: UploadWait = UploadWait(), notify: Notify = _quiet,
           creation: Creation | None = None) -> SubmitResult:
    """Upload every prepared file without a batch and create its batch, never a second one."""
    _needs_api(run)
    with locked(run.dir):
        state = load_state(run.dir)
        wait = replace(wait, mode=wait.mode or run.provider.batch.file_status)
        return asyncio.run(_submit(run, state, api, wait, notify, creation or Creation.default(run.provider)))


async def _submit(run: PreparedRun, state: BatchState, api: Api, wait: UploadWait, notify: Notify,
                  creation: Creation) -> SubmitResult:
    todo = [s for s in state.shards if not s.batch_id and not s.finished]
    result = SubmitResult(len(todo))
    if not todo:
        return result
    _check_files(batch_dir(run.dir), todo)  # everything checked before the first call
    done = done_ids(run.dir, run.manifest)
    async with api.client() as client:
        for s in todo:
            if not await _submit_one(client, run, state, s, done, wait, notify, creation):
                result.refused += 1
    return result


def _check_files(d: Path, todo: list[Shard]) -> None:
    for s in todo:
        if not s.file_id:
            path = d / s.name
            if not path.exists():
                raise LiveroomError(f"{path}: missing; run bin/batch prepare again")
            if sha256_file(path) != s.sha256:
                raise LiveroomError(f"{path}: changed since prepare; run bin/batch prepare again")


async def _submit_one(client: BatchClient, run: PreparedRun, state: BatchState, s: Shard, done: set[str],
                      wait: UploadWait, notify: Notify, creation: Creation) -> bool:
    """Upload (unless an upload is kept), wait until it is usable, find or create its batch."""
    uploaded: dict[str, Any] | None = None
    if s.file_id:
        notify(_event("resumed", s))
    else:
        uploaded = await _upload(client, run.dir, state, s, done, notify)
        if uploaded is None:
            return False
    assert s.file_id is not None
    file_id = s.file_id
    if not await _usable(client, run.dir, state, s, file_id, wait, notify, uploaded):
        return False
    b = await client.find_batch(file_id, run.provider.batch.list_limit) or await client.create_batch(
        file_id, s.endpoint, creation.window, auto_delete_input_file=creation.auto_delete_input_file)
    s.batch_id, s.note = b["id"], None
    s.update(b)
    s.submitted_at = round(time.time(), 3)
    save_state(run.dir, state)
    notify(_event("created", s))
    return True


async def _usable(client: BatchClient, run_dir: Path, state: BatchState, s: Shard, file_id: str,
                  wait: UploadWait, notify: Notify, uploaded: dict[str, Any] | None) -> bool:
    """Wait until the upload can be used; one the server failed is forgotten, to be uploaded again.

    Where the provider has no file-status call (or it answers 404 where it is
    not confirmed), the upload's own reply is trusted: ``wait.mode``.
    """
    try:
        await client.wait_file(file_id, wait.timeout, wait.poll, wait.mode or "poll", uploaded)
    except FileFailed as e:
        notify(_event("upload_failed", s, str(e)))
        s.file_id, s.status, s.note = None, "prepared", str(e)
        save_state(run_dir, state)
        return False
    return True


async def _upload(client: BatchClient, run_dir: Path, state: BatchState, s: Shard, done: set[str],
                  notify: Notify) -> dict[str, Any] | None:
    """The new upload's reply (``id`` kept in the shard); None when requests of the file were done meanwhile."""
    stale = len(shard_ids(run_dir, s) & done)
    if stale:
        notify(_event("stale", s, str(stale)))
        return None
    try:
        obj = await client.upload(batch_dir(run_dir) / s.name)
    except BatchAPIError as e:
        if e.status in TOO_LARGE:
            raise LiveroomError(f"{e}; {s.name} is {s.bytes} bytes, over the provider's file size limit: "
                                "run bin/batch prepare again with a smaller --max-bytes") from None
        raise
    s.file_id, s.status, s.note = obj["id"], "uploaded", None
    save_state(run_dir, state)
    notify(_event("uploaded", s))
    return obj


# ----------------------------------------------------------------- status, cancel

BatchCall = Callable[[BatchClient, str], Awaitable[dict[str, Any]]]


def update_live(run: PreparedRun, api: Api, call: BatchCall) -> tuple[BatchState, list[Shard]]:
    """Under the run's lock, update every live shard from ``call(client, batch_id)``
    (retrieve or cancel) and save the state; returns it and the shards updated."""
    with locked(run.dir):
        state = load_state(run.dir)
        live = [s for s in state.shards if s.live]

        async def update() -> None:
            async with api.client() as client:
                for s in live:
                    s.update(await call(client, _batch_id(s)))

        asyncio.run(update())
        save_state(run.dir, state)
    return state, live


def status(run: PreparedRun, api: Api, offline: bool = False) -> list[Shard]:
    """Every shard, those with a running batch asked about first (unless ``offline``)."""
    if any(s.live for s in run.state.shards) and not offline:
        return update_live(run, api, BatchClient.get_batch)[0].shards
    return run.state.shards


def cancel(run: PreparedRun, api: Api) -> list[Shard]:
    """Cancel the batches still running; the shards cancelled."""
    _needs_api(run)
    return update_live(run, api, BatchClient.cancel_batch)[1]


# ----------------------------------------------------------------- fetch

@dataclass
class FetchResult:
    watched: int = 0  # files with a batch not yet finished; none: no batch to fetch
    left: int = 0  # still running when it stopped
    ended_early: int = 0  # batches that ended other than completed
    report: ImportReport = field(default_factory=ImportReport)
    #: downloaded files with lines of another model left out; their batches are finished, so only
    #: ``bin/batch import --accept-model`` reads them again
    other_model: list[Path] = field(default_factory=list)


def fetch(run: PreparedRun, api: Api, wait: bool = False, interval: float = 30.0, notify: Notify = _quiet,
          accept: Sequence[str] = ()) -> FetchResult:
    """Poll the batches; download and import those that ended (every poll until all have, with ``wait``);
    replies of a model other than the run's are imported only when ``accept`` names it."""
    _needs_api(run)
    with locked(run.dir):
        state = load_state(run.dir)
        return asyncio.run(_fetch(run.dir, state, api, wait, interval, notify, accept))


async def _fetch(run_dir: Path, state: BatchState, api: Api, wait: bool, interval: float,
                 notify: Notify, accept: Sequence[str] = ()) -> FetchResult:
    watch = [s for s in state.shards if s.batch_id and not s.finished]
    waiting = [s.name for s in state.shards if not s.batch_id and not s.finished]
    if waiting:
        notify(_event("not_submitted", detail=", ".join(waiting)))
    result = FetchResult(len(watch))
    if not watch:
        return result
    async with api.client() as client:
        while True:
            for s in watch:
                if not s.finished:
                    await _poll(client, run_dir, state, s, api.key, result, notify, accept)
            result.left = sum(1 for s in watch if not s.finished)
            if not result.left or not wait:
                break
            await asyncio.sleep(interval)
    result.ended_early = sum(1 for s in watch if s.status != "completed")
    return result


async def _poll(client: BatchClient, run_dir: Path, state: BatchState, s: Shard, key: str | None,
                result: FetchResult, notify: Notify, accept: Sequence[str] = ()) -> None:
    """Ask about one batch; when it has ended, download its files, import them, mark it finished."""
    if s.update(await client.get_batch(_batch_id(s))):
        notify(_event("changed", s))
        save_state(run_dir, state)
    if not ended(s.status):
        return
    files = await _download(client, run_dir, s)
    refused = result.report.wrong_model
    import_files(run_dir, state, files, client.target.secrets, result.report, accept)
    if result.report.wrong_model > refused:
        result.other_model.extend(_replies(files))
    s.finished = True
    if s.status != "completed":
        s.note = (s.note + "; " if s.note else "") + \
            "ended early: what is missing is prepared again by the next prepare"
    save_state(run_dir, state)
    notify(_event("imported", s, ", ".join(f.name for f in files) or "nothing"))


async def _download(client: BatchClient, run_dir: Path, s: Shard) -> list[Path]:
    """The batch's output and error files, as ``requests-NNNN.output.jsonl`` / ``.errors.jsonl``."""
    files = []
    stem = s.name.removesuffix(".jsonl")
    for file_id, suffix in ((s.output_file_id, "output"), (s.error_file_id, "errors")):
        if file_id:
            dest = batch_dir(run_dir) / f"{stem}.{suffix}.jsonl"
            await client.download(file_id, dest)
            files.append(dest)
    return files


def _replies(files: list[Path]) -> list[Path]:
    """The files of a batch that hold its replies: its output file. The model is checked on replies
    (HTTP 200 lines) only, and a batch puts those in its output file and its failures in its error file."""
    return [f for f in files if f.name.endswith(".output.jsonl")] or files


# ----------------------------------------------------------------- import by hand

@dataclass
class ImportResult:
    report: ImportReport
    finished: list[str]  # files whose every request is now accounted for


def import_by_hand(run_dir: Path, files: Sequence[Path], key: str | None, accept: Sequence[str] = (),
                   scheme: Callable[[Manifest], Ids] | None = None) -> ImportResult:
    """Import provider files obtained by hand; files then fully accounted for are marked finished.

    ``scheme`` makes, from the run's manifest, how the files' custom_ids name the run's requests
    (default: the run's own ids; :func:`~.reference.reference_scheme` for the reference's).
    """
    run_dir = Path(run_dir)
    manifest = read_manifest(run_dir)
    for f in files:
        if not f.is_file():
            raise InputError(f"{f}: no such file")
    with locked(run_dir):
        state = load_state(run_dir)
        ids = scheme(manifest) if scheme is not None else None
        report = import_files(run_dir, state, files, key, accept=accept, ids=ids)
        names = finish_covered(run_dir, state, report.seen)
        save_state(run_dir, state)
    return ImportResult(report, names)
