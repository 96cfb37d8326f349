"""The batch state of a run directory: ``RUN_DIR/batch/state.json`` and its files.

One :class:`Shard` per prepared request file says how far the file is on its
way (uploaded, batch created, ended, imported), so that ``submit`` never makes
a second batch for a file and every command can resume after a crash. The
JSON is the one ``bin/batch`` has always written: a shard's keys are the
fields below, in that order, and those set only later (``note``,
``request_counts``, ``submitted_at``, the provider's file ids, its
``errors``) are absent until then; keys this version does not know are kept
as they are. The state also names the provider profile prepare used
(``provider``, absent in states written before there were profiles).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import orjson

from ...async_client.files import atomic_write
from ...async_client.manifest import Manifest
from ...async_client.record import Record
from ...async_client.run_dir import RunDir
from ...errors import LiveroomError
from ...locks import run_dir_lock

BATCH_DIR = "batch"
STATE = "state.json"
PARTLY = "partly_imported"  # the key of BatchState.partly in state.json
FORMAT = 1
TERMINAL = ("completed", "failed", "expired", "cancelled")  # a batch in one of these has ended

_CUSTOM_ID = re.compile(rb'^\{"id":"((?:[^"\\]|\\.)*)"', re.M)
_REQUIRED = ("name", "meta", "requests", "bytes", "sha256", "endpoint")
_LATER = ("note", "request_counts", "submitted_at", "output_file_id", "error_file_id", "errors")
SOURCE = "source"  # the record field naming the provider file an imported record came from
COUNTS = ("total", "completed", "failed")
ERRORS_KEPT = 20  # a batch's errors kept in the state (a failed validation can list every line)


def ended(status: str | None) -> bool:
    """Whether a batch in ``status`` has ended: the one place that says so."""
    return status in TERMINAL


@dataclass
class Shard:
    """One prepared request file and its batch."""

    name: str  # requests-NNNN.jsonl, under RUN_DIR/batch/
    meta: str  # requests-NNNN.meta.jsonl: the record fields of each request
    requests: int
    bytes: int
    sha256: str | None  # of the request file, checked before it is uploaded
    endpoint: str
    prepared_at: float | None = None
    status: str = "prepared"
    file_id: str | None = None
    batch_id: str | None = None
    finished: bool = False  # the batch ended and its files were imported
    note: str | None = None
    request_counts: dict[str, int] | None = None
    submitted_at: float | None = None
    output_file_id: str | None = None  # the provider's files, once the batch has them
    error_file_id: str | None = None
    errors: list[dict[str, Any]] | None = None  # the batch's errors.data: {code, line, message, param}
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_json(cls, obj: Any) -> Shard:
        if not isinstance(obj, dict):
            raise ValueError("a shard is not an object")
        missing = [k for k in _REQUIRED if k not in obj]
        if missing:
            raise ValueError(f"a shard has no {', '.join(missing)}")
        known = {f.name for f in fields(cls)} - {"extra"}
        return cls(**{k: v for k, v in obj.items() if k in known},
                   extra={k: v for k, v in obj.items() if k not in known})

    def to_json(self) -> dict[str, Any]:
        """The shard as state.json holds it (``note`` appears, null, once the file is submitted)."""
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in _LATER + ("extra",)}
        for k in _LATER:
            value = getattr(self, k)
            if value is not None or (k == "note" and self.submitted):
                out[k] = value
        return {**out, **self.extra}

    @property
    def submitted(self) -> bool:
        return bool(self.file_id or self.batch_id)

    @property
    def live(self) -> bool:
        """It has a batch that has not ended."""
        return bool(self.batch_id) and not ended(self.status)

    def counts_text(self) -> str:
        c = self.request_counts or {}
        return f"{c.get('completed', 0)}/{c.get('failed', 0)}/{c.get('total', self.requests)}"

    def line(self) -> str:
        """One line for ``status``: name, batch id, status, completed/failed/total."""
        status = self.status or "prepared"
        extra = " finished" if self.finished else ""
        note = f" ({self.note})" if self.note else ""
        return (f"{self.name}  {self.batch_id or '-'}  {status}  "
                f"{self.counts_text()} completed/failed/total{extra}{note}")

    def error_lines(self) -> list[str]:
        """The batch's errors, one line each, for ``status``."""
        return [f"  error {e.get('code') or '-'}" + (f" (line {e['line']})" if e.get("line") else "")
                + f": {e.get('message') or ''}" for e in self.errors or ()]

    def update(self, batch: dict[str, Any]) -> bool:
        """Copy a batch object's progress in; True when something ``line`` shows changed."""
        before = (self.status, self.counts_text())
        self.status = str(batch.get("status") or self.status)
        counts = _request_counts(batch)
        if counts is not None:
            self.request_counts = counts
        if batch.get("output_file_id"):  # Zhipu writes "" for a file it has not got
            self.output_file_id = batch["output_file_id"]
        if batch.get("error_file_id"):
            self.error_file_id = batch["error_file_id"]
        errors = _errors(batch)
        if errors:
            self.errors = errors[:ERRORS_KEPT]
            self.note = "; ".join(str(e.get("message") or e.get("code"))
                                  + (f" (line {e['line']})" if e.get("line") else "") for e in errors[:3])
        return before != (self.status, self.counts_text())


def _request_counts(batch: dict[str, Any]) -> dict[str, int] | None:
    """``request_counts`` as ``{total, completed, failed}``.

    Zhipu's docs show ``request_counts`` as an integer beside top-level
    ``total``/``completed``/``failed`` while its SDK has the object, with
    nulls while validating (docs/PROVIDERS.md section 4): both are read.
    """
    rc = batch.get("request_counts")
    if not isinstance(rc, dict):
        rc = {k: batch[k] for k in COUNTS if isinstance(batch.get(k), int)} or None
    return {k: int(rc.get(k) or 0) for k in COUNTS} if rc is not None else None


def _errors(batch: dict[str, Any]) -> list[dict[str, Any]]:
    """A batch's ``errors.data`` (``{object: "list", data: [{code, line, message, param}]}``)."""
    errors = batch.get("errors")
    data = errors.get("data") if isinstance(errors, dict) else None
    return [e for e in data if isinstance(e, dict)] if isinstance(data, list) else []


@dataclass
class BatchState:
    """``state.json``: the shards, the provider files imported, the provider profile.

    A provider file is known by its sha256 (prefixed by the id scheme it was read
    under). Once nothing more can come of it, it is in ``imported``; while lines
    of it wait for ``--accept-model`` it is in ``partly``, so that a later import
    reads it again; a file nothing was taken from is in neither, and is read whole
    again. Which lines a file gave is not kept here but in the records: each
    imported record names its file (:func:`imported_from`), so an import that died
    before saving the state takes nothing twice when run again.
    """

    shards: list[Shard] = field(default_factory=list)
    imported: dict[str, str] = field(default_factory=dict)  # file key -> its name
    format: int = FORMAT
    extra: dict[str, Any] = field(default_factory=dict)
    provider: str | None = None  # the --provider profile of prepare; None in older states
    partly: dict[str, str] = field(default_factory=dict)  # file key -> its name: lines wait for another model

    @classmethod
    def from_json(cls, obj: Any) -> BatchState:
        if not isinstance(obj, dict) or not isinstance(obj.get("shards"), list):
            raise ValueError("no list of shards")
        rest = {k: v for k, v in obj.items() if k not in ("format", "shards", "imported", "provider", PARTLY)}
        provider = obj.get("provider")
        return cls([Shard.from_json(s) for s in obj["shards"]], dict(obj.get("imported") or {}),
                   obj.get("format", FORMAT), rest, provider if isinstance(provider, str) else None,
                   dict(obj.get(PARTLY) or {}))

    def to_json(self) -> dict[str, Any]:
        out = {"format": self.format, "shards": [s.to_json() for s in self.shards], "imported": self.imported}
        if self.provider is not None:
            out["provider"] = self.provider
        if self.partly:
            out[PARTLY] = self.partly
        return {**out, **self.extra}

    def took(self, key: str, name: str, taken: bool, complete: bool) -> None:
        """Remember what an import made of a file: ``taken``, some line of it is in the records;
        ``complete``, no line of it was left for another model, so nothing more can come of it.
        A file nothing was ever taken from is forgotten."""
        self.partly.pop(key, None)
        if not taken:
            return
        if complete:
            self.imported[key] = name
        else:
            self.partly[key] = name


# ----------------------------------------------------------------- the run directory

def batch_dir(run_dir: Path) -> Path:
    return Path(run_dir) / BATCH_DIR


def load_state(run_dir: Path) -> BatchState:
    path = batch_dir(run_dir) / STATE
    if not path.exists():
        return BatchState()
    try:
        return BatchState.from_json(orjson.loads(path.read_bytes()))
    except (orjson.JSONDecodeError, ValueError, TypeError) as e:
        raise LiveroomError(f"{path}: unreadable batch state ({e})") from None


def save_state(run_dir: Path, state: BatchState) -> None:
    """Written whole and renamed into place: a crash leaves the old state or the new one."""
    atomic_write(batch_dir(run_dir) / STATE, orjson.dumps(state.to_json(), option=orjson.OPT_INDENT_2))


def locked(run_dir: Path) -> AbstractContextManager[None]:
    """The run directory's one-writer lock, the one bin/score takes: ``RUN_DIR is in use by pid N (...)``."""
    return run_dir_lock(run_dir, "bin/batch")


def read_manifest(run_dir: Path) -> Manifest:
    """The manifest of a prepared run; one line saying to prepare first when there is none."""
    return RunDir(run_dir).manifest("run bin/batch prepare first")


def done_ids(run_dir: Path, manifest: Manifest) -> set[str]:
    """Ids already ok in the run directory, every stage together."""
    return RunDir(run_dir).done_in(manifest.groups)


def shard_ids(run_dir: Path, shard: Shard) -> set[str]:
    """The request ids of a shard, read from its meta file."""
    path = batch_dir(run_dir) / shard.meta
    if not path.exists():
        raise LiveroomError(f"{path}: missing; it lists the requests of {shard.name}")
    return {m.decode() for m in _CUSTOM_ID.findall(path.read_bytes())}


def load_meta(run_dir: Path, state: BatchState) -> dict[str, dict[str, Any]]:
    """Request id -> the record fields of every prepared request."""
    meta: dict[str, dict[str, Any]] = {}
    d = batch_dir(run_dir)
    for shard in state.shards:
        path = d / shard.meta
        if not path.exists():
            continue
        with open(path, "rb") as f:
            for line in f:
                if line.endswith(b"\n"):
                    m = orjson.loads(line)
                    meta[m.pop("id")] = m
    return meta


def pending_ids(run_dir: Path, state: BatchState) -> set[str]:
    """Ids in files submitted and not yet finished: still on their way."""
    out: set[str] = set()
    for shard in state.shards:
        if shard.submitted and not shard.finished:
            out |= shard_ids(run_dir, shard)
    return out


def imported_from(run_dir: Path, groups: Iterable[str]) -> dict[str, set[str]]:
    """File key -> the ids of the records imported from that file, in every group named
    (an imported record's ``source`` field is the key of the file it came from)."""
    return RunDir(run_dir).by_meta(groups, SOURCE)


def invalid_records(run_dir: Path, groups: Iterable[str]) -> dict[str, list[Record]]:
    """Request id -> its invalid records (unusable replies), oldest first, in every group named.

    Their number is how many times the request was re-asked already; their
    replies and reasons make the next re-ask conversation.
    """
    return RunDir(run_dir).invalid(groups)
