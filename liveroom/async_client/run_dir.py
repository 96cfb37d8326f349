"""The run directory: a manifest and one append-only JSONL file per group, owned by :class:`RunDir`.

Everything that reads or writes ``manifest.json`` or a ``GROUP.jsonl`` does so
here; what a line holds is decided by :mod:`.record`, what the manifest holds
by :mod:`.manifest`.

A record is written whole or not at all: one ``os.write`` of the full line on
an ``O_APPEND`` descriptor, the count checked; a write that fails, at once or
after a short count, is cut back to the last whole line and raises
:class:`WriteFailed`, which stops the run (a disk that fills never leaves a
record inside another). The files are fsynced every second and on close, so
a killed run loses at most the requests in flight. On open, a torn last line
(a write cut by a crash) is dropped.

One rule for reading, in every query: a line is a record only when it is
whole (it ends with its newline and reads as one record and nothing else).
A torn last line is no record and ends the read; a damaged line is no record
and counts nowhere, and :meth:`RunDir.records` names it by line number (or
refuses the file, when its caller keeps no count). Only ``"status": "ok"``
records count as done; failed ones stay in the file as history and are asked
again on the next run. Which of the ok ids a task still needs is the task's
business (they are handed over raw).

The manifest is checked against the command's before anything is written (a
run made by another command is refused with the differences named) and
written only when it changes, so a rerun that has nothing to do writes nothing.
"""

from __future__ import annotations

import mmap
import os
import time
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from ..errors import InputError, LiveroomError
from .files import WriteFailed, atomic_write, write_error
from .manifest import Manifest, ManifestMismatch
from .record import (
    ERROR,
    HEAD,
    INVALID,
    OK_FIRST,
    OK_LINE,
    Record,
    RecordError,
    decode_id,
    dumps,
    field_bytes,
    is_whole,
    loads,
)

__all__ = ["MANIFEST", "Manifest", "ManifestMismatch", "RunDir", "WriteFailed"]

MANIFEST = "manifest.json"
FSYNC_EVERY = 1.0  # seconds
SCAN_BLOCK = 1 << 24  # bytes scanned at a time: mapped, then dropped, so memory stays flat
_PAGE = mmap.PAGESIZE


class RunDir:
    """One run directory: its manifest, and its append-only records."""

    def __init__(self, run_dir: str | Path) -> None:
        self.dir = Path(run_dir)
        self._fds: dict[str, int] = {}
        self._sizes: dict[str, int] = {}  # each file's length after the last whole write; -1: broken
        self._last_sync = time.monotonic()

    # -- the manifest --------------------------------------------------------------
    @property
    def manifest_path(self) -> Path:
        return self.dir / MANIFEST

    def recorded(self) -> Manifest | None:
        """The manifest the run was made with; None for a new run; :class:`ManifestMismatch` when unreadable."""
        try:
            data = self.manifest_path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as e:
            raise ManifestMismatch(f"{self.manifest_path}: unreadable manifest ({e.strerror or e})") from None
        try:
            return Manifest.loads(data)
        except ValueError as e:
            raise ManifestMismatch(f"{self.manifest_path}: unreadable manifest ({e})") from None

    def manifest(self, then: str = "run bin/score first") -> Manifest:
        """The manifest of a run that must exist; one line saying what to do when it does not."""
        found = self.recorded()
        if found is None:
            raise InputError(f"{self.dir}: not a run directory (no {MANIFEST}); {then}")
        return found

    def check(self, manifest: Manifest | Mapping[str, Any]) -> Manifest:
        """The manifest to write: ``manifest`` when the run is new or agrees with it.

        A run may be extended: stages (``groups``) and input files (``inputs``)
        it has not seen yet are added; those it has must be the same as before.
        """
        new, old = Manifest.from_json(manifest), self.recorded()
        return new if old is None else old.extended_by(new, str(self.dir))

    # -- reading the records -------------------------------------------------------
    def path(self, group: str) -> Path:
        return self.dir / f"{group}.jsonl"

    def repair(self, group: str) -> int:
        """Drop a torn last line; returns the bytes removed."""
        path = self.path(group)
        if not path.exists():
            return 0
        size = path.stat().st_size
        if size == 0:
            return 0
        with open(path, "rb+") as f:
            f.seek(max(0, size - 1))
            if f.read(1) == b"\n":
                return 0
            # walk back to the last newline
            pos, chunk = size, 1 << 16
            while pos > 0:
                start = max(0, pos - chunk)
                f.seek(start)
                block = f.read(pos - start)
                nl = block.rfind(b"\n")
                if nl >= 0:
                    keep = start + nl + 1
                    break
                pos = start
            else:
                keep = 0
            f.truncate(keep)
            return size - keep

    def ok_ids(self, group: str) -> Iterator[list[bytes]]:
        """Ids with an ok record, a block of the file at a time, as raw (JSON-escaped) bytes.

        Fast: the file is mapped, only each line's head is read, and a block
        whose lines are all whole-looking (one head each, at its start, ``}``
        before each newline) is taken at once; any other block is read line by
        line and only whole records count. A last line without its newline
        (torn by a crash) is no record.
        """
        path = self.path(group)
        if not path.exists() or path.stat().st_size == 0:
            return
        with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
            end = m.rfind(b"\n") + 1  # complete lines only
            pos = 0
            while pos < end:
                stop = m.rfind(b"\n", pos, min(end, pos + SCAN_BLOCK)) + 1
                if stop <= pos:  # a line longer than a block
                    stop = m.find(b"\n", pos) + 1
                yield _ok_in(m[pos:stop])
                if hasattr(m, "madvise"):  # give the scanned pages back: they count as our memory
                    lo, hi = pos // _PAGE * _PAGE, stop // _PAGE * _PAGE
                    m.madvise(mmap.MADV_DONTNEED, lo, hi - lo)
                pos = stop

    def done(self, group: str) -> set[str]:
        """Ids with an ok record."""
        return {decode_id(i) for ids in self.ok_ids(group) for i in ids}

    def done_in(self, groups: Iterable[str]) -> set[str]:
        """Ids with an ok record in any of ``groups``."""
        return set().union(*(self.done(g) for g in groups))

    def records(self, group: str, damaged: list[int] | None = None) -> Iterator[Record]:
        """Every whole record of ``group``, in file order.

        A damaged line raises :class:`LiveroomError` naming the file and line;
        with a ``damaged`` list its line number is added there and it is skipped.
        """
        path = self.path(group)
        for n, rec, _ in self._read(group):
            if rec is not None:
                yield rec
            elif damaged is None:
                raise LiveroomError(f"{path} line {n}: not a JSON record")
            else:
                damaged.append(n)

    def records_after(self, group: str, start: int) -> Iterator[tuple[Record, int]]:
        """The whole records after byte ``start`` (a line's start), each with the offset after its line."""
        for _, rec, end in self._read(group, start):
            if rec is not None:
                yield rec, end

    def _read(self, group: str, start: int = 0) -> Iterator[tuple[int, Record | None, int]]:
        """(line number, its record or None when damaged, the offset after it) of each line from ``start``;
        a torn last line ends it."""
        try:
            f = open(self.path(group), "rb")
        except FileNotFoundError:
            return
        with f:
            f.seek(start)
            for n, line in enumerate(f, 1):
                if not line.endswith(b"\n"):
                    return  # the torn tail of a crashed run
                start += len(line)
                try:
                    yield n, loads(line), start
                except RecordError:
                    yield n, None, start

    def holding(self, group: str, key: str, prefix: str = "") -> Iterator[Record]:
        """The whole records of ``group`` whose line has field ``key`` with a string starting with ``prefix``
        somewhere (the caller checks where): fast when few lines have it, the file searched mapped."""
        path = self.path(group)
        try:
            f = open(path, "rb")
        except FileNotFoundError:
            return
        with f:
            if os.fstat(f.fileno()).st_size == 0:
                return
            with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
                needle = field_bytes(key, prefix)
                at = m.find(needle)
                while at >= 0:
                    start, end = m.rfind(b"\n", 0, at) + 1, m.find(b"\n", at)
                    if end < 0:
                        return  # the last line, torn: no record
                    try:
                        yield loads(m[start:end + 1])
                    except RecordError:
                        pass  # a damaged line is no record
                    at = m.find(needle, end)

    # -- queries -------------------------------------------------------------------
    def failed_with(self, group: str, prefix: str) -> list[bytes]:
        """Ids (raw, as :meth:`ok_ids` gives them) of the error records whose reason starts with ``prefix``."""
        return [r.id.encode() for r in self.holding(group, "error", prefix)
                if r.status == ERROR and (r.error or "").startswith(prefix)]

    def invalid(self, groups: Iterable[str]) -> dict[str, list[Record]]:
        """Id -> its ``invalid`` records (unusable replies), oldest first, in every group named."""
        out: dict[str, list[Record]] = {}
        for group in groups:
            for rec in self.holding(group, "status", INVALID):
                if rec.status == INVALID:
                    out.setdefault(rec.id, []).append(rec)
        return out

    def by_meta(self, groups: Iterable[str], key: str) -> dict[str, set[str]]:
        """Value -> the ids of the records whose meta field ``key`` holds it (a string), in every group named."""
        out: dict[str, set[str]] = {}
        for group in groups:
            for rec in self.holding(group, key):
                value = rec.meta.get(key)
                if isinstance(value, str):
                    out.setdefault(value, set()).add(rec.id)
        return out

    def size(self, group: str) -> int:
        """The bytes of ``group``'s file; 0 when it has none."""
        try:
            return self.path(group).stat().st_size
        except FileNotFoundError:
            return 0

    # -- writing -------------------------------------------------------------------
    def open(self, manifest: Manifest | Mapping[str, Any]) -> None:
        """Create the directory, write the manifest (unless the run's reads the same), repair and open
        every group."""
        manifest = Manifest.from_json(manifest)
        self.dir.mkdir(parents=True, exist_ok=True)
        try:
            same = self.recorded() == manifest
        except ManifestMismatch:
            same = False
        if not same:
            atomic_write(self.manifest_path, manifest.dumps())
        for group in manifest.groups:
            self.repair(group)
            path = self.path(group)
            try:
                fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            except OSError as e:
                raise write_error(path, e, "open") from None
            self._fds[group] = fd
            self._sizes[group] = os.fstat(fd).st_size

    def write(self, group: str, record: Record | Mapping[str, Any]) -> None:
        """Append one record whole (a mapping is read as :meth:`Record.from_dict` reads it).

        One ``os.write`` of the line (a short one is finished or fails); on a
        failure the file is cut back to where it was and :class:`WriteFailed` raised.
        """
        line = dumps(record)
        fd, size = self._fds[group], self._sizes[group]
        if size < 0:
            raise WriteFailed(f"{self.path(group)}: an earlier write could not be undone; "
                              "run the same command again to resume")
        try:
            n = os.write(fd, line)
            while n < len(line):  # short: the rest, or the error that cut it (disk full, file-size limit)
                n += os.write(fd, line[n:])
        except OSError as e:
            self._undo(group, fd, size)
            raise write_error(self.path(group), e) from None
        self._sizes[group] = size + n
        now = time.monotonic()
        if now - self._last_sync > FSYNC_EVERY:
            self.sync()
            self._last_sync = now

    def _undo(self, group: str, fd: int, size: int) -> None:
        """Cut ``group``'s file back to ``size`` bytes after a failed write; a file that cannot be cut takes no more."""
        try:
            os.ftruncate(fd, size)
        except OSError:
            self._sizes[group] = -1  # the next run drops the partial line (it has no newline)

    def sync(self) -> None:
        """Push what was written to the disk, not only to the OS."""
        for group, fd in self._fds.items():
            try:
                os.fsync(fd)
            except OSError as e:
                raise write_error(self.path(group), e, "sync") from None

    def close(self) -> None:
        """Sync and close every group file (closed even when the sync fails)."""
        try:
            self.sync()
        finally:
            for fd in self._fds.values():
                os.close(fd)
            self._fds.clear()


def _ok_in(chunk: bytes) -> list[bytes]:
    """Raw ids of the ok records in ``chunk`` (whole lines), never that of a damaged line."""
    lines = chunk.count(b"\n")
    if (chunk.count(HEAD) == lines == chunk.count(b"\n" + HEAD) + chunk.startswith(HEAD)
            and chunk.count(b"}\n") == lines):  # the usual block: nothing is damaged
        first = OK_FIRST.match(chunk)
        return ([first.group(1)] if first else []) + OK_LINE.findall(chunk)
    return [m.group(1) for line in chunk.split(b"\n")[:-1]
            if (m := OK_FIRST.match(line)) is not None and is_whole(line + b"\n")]
