"""The run directory: a manifest and one append-only JSONL file per group.

A record is written whole or not at all: one ``os.write`` of the full line on
an ``O_APPEND`` descriptor, the count checked; a write that fails, at once or
after a short count, is cut back to the last whole line and raises
:class:`WriteFailed`, which stops the run (a disk that fills never leaves a
record inside another). The files are
fsynced every second and on close, so a killed run loses at most the requests
in flight. On open, a torn last line (a write cut by a crash) is dropped.
Only ``"status": "ok"`` records on whole lines count as done; failed ones stay
in the file as history and are asked again on the next run, and a damaged
line is never counted (the scan checks each line it takes). What a line
holds, and how its head is found, is decided by :mod:`.record`; which of the
ok ids a task still needs is the task's business (they are handed over raw).

The manifest fixes what the records mean (model, endpoint, parameters, prompt
versions, persona set, input hashes); a run whose manifest differs is refused
with the differences named, never silently mixed. It is written only when it
changes, so a rerun that has nothing to do writes nothing.
"""

from __future__ import annotations

import errno
import hashlib
import mmap
import os
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import orjson

from ..errors import LiveroomError
from .record import HEAD, OK_FIRST, OK_LINE, Record, RecordError, decode_id, dumps, is_whole, loads

MANIFEST = "manifest.json"
FORMAT = 1
FSYNC_EVERY = 1.0  # seconds


class ManifestMismatch(LiveroomError):
    """The run directory was made by another command (other model, prompts, inputs...)."""


class WriteFailed(LiveroomError):
    """A record, the manifest or a sync could not be written whole; what was written before is intact."""


_FULL = {errno.ENOSPC: "free space on the disk that holds it", errno.EDQUOT: "free space within your disk quota",
         errno.EFBIG: "the file reached the process's file-size limit (ulimit -f): raise it"}


def write_error(path: Path, e: OSError, what: str = "write") -> WriteFailed:
    """The one line saying that ``path`` could not be written, and what to do about it."""
    hint = _FULL.get(e.errno or 0, "check the disk")
    return WriteFailed(f"cannot {what} {path}: {e.strerror or e}; {hint}, "
                       "then run the same command again to resume (every record written is whole)")


def sha256_file(path: str | Path) -> str:
    """The hex SHA-256 of a file, read a block at a time."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` so that ``path`` holds the old or the new bytes, never a mix, even after a crash.

    A failure (disk full) leaves ``path`` as it was, removes the temporary
    file and raises :class:`WriteFailed`.
    """
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise write_error(path, e) from None


def _differences(old: Any, new: Any, where: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        out: list[str] = []
        for k in sorted(set(old) | set(new)):
            out += _differences(old.get(k), new.get(k), f"{where}.{k}" if where else k)
        return out
    if old == new:
        return []
    show: Callable[[Any], str] = lambda v: orjson.dumps(v).decode()[:60]  # noqa: E731
    return [f"{where}: run has {show(old)}, command gives {show(new)}"]


def check_manifest(run_dir: Path, manifest: dict[str, Any]) -> dict[str, Any]:
    """The manifest to write: ``manifest`` when the run is new or agrees with it.

    A run may be extended: stages (``groups``) and input files (``inputs``)
    it has not seen yet are added; those it has must be the same as before.
    """
    path = run_dir / MANIFEST
    if not path.exists():
        return manifest
    try:
        old = orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError) as e:
        raise ManifestMismatch(f"{path}: unreadable manifest ({e})") from None
    extendable = ("groups", "inputs")
    def common(m: dict[str, Any], other: dict[str, Any]) -> dict[str, Any]:
        return {**m, **{k: {n: v for n, v in m.get(k, {}).items() if n in other.get(k, {})} for k in extendable}}

    diffs = _differences(common(old, manifest), common(manifest, old))
    if diffs:
        raise ManifestMismatch(
            f"{run_dir} was made by a different command; differences: " + "; ".join(diffs)
            + " (use another --run, or the original settings)"
        )
    return {**manifest, **{k: {**old.get(k, {}), **manifest.get(k, {})} for k in extendable}}


SCAN_BLOCK = 1 << 24  # bytes scanned at a time: mapped, then dropped, so memory stays flat
_PAGE = mmap.PAGESIZE


class Checkpoint:
    """Append-only records of one run directory."""

    def __init__(self, run_dir: str | Path) -> None:
        self.dir = Path(run_dir)
        self._fds: dict[str, int] = {}
        self._sizes: dict[str, int] = {}  # each file's length after the last whole write; -1: broken
        self._last_sync = time.monotonic()

    # -- reading -------------------------------------------------------------------
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

    def records(self, group: str, damaged: list[int] | None = None) -> Iterator[Record]:
        """Every complete record of ``group``, in file order.

        A damaged line raises :class:`LiveroomError` naming the file and line;
        with a ``damaged`` list its line number is added there and it is skipped.
        """
        path = self.path(group)
        if not path.exists():
            return
        with open(path, "rb") as f:
            for n, line in enumerate(f, 1):
                if not line.endswith(b"\n"):
                    return  # torn tail of a crashed run
                try:
                    yield loads(line)
                except RecordError:
                    if damaged is None:
                        raise LiveroomError(f"{path} line {n}: not a JSON record") from None
                    damaged.append(n)

    # -- writing -------------------------------------------------------------------
    def open(self, manifest: dict[str, Any]) -> None:
        """Create the directory, write the manifest (when it changed), repair and open every group."""
        self.dir.mkdir(parents=True, exist_ok=True)
        data = orjson.dumps(manifest, option=orjson.OPT_INDENT_2)
        path = self.dir / MANIFEST
        try:
            same = path.read_bytes() == data
        except OSError:
            same = False
        if not same:
            atomic_write(path, data)
        for group in manifest.get("groups", {}):
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
