"""The run directory: a manifest and one append-only JSONL file per group.

A record is written, flushed to the OS, for every finished request, and the
files are fsynced every second and on close, so a killed run loses at most
the requests in flight. On open, a torn last line (a write cut by a crash) is
dropped. Only ``"status": "ok"`` records count as done; failed ones stay in
the file as history and are asked again on the next run. What a line holds,
and how its head is found, is decided by :mod:`.record`; which of the ok ids
a task still needs is the task's business (they are handed over raw).

The manifest fixes what the records mean (model, endpoint, parameters, prompt
versions, persona set, input hashes); a run whose manifest differs is refused
with the differences named, never silently mixed.
"""

from __future__ import annotations

import hashlib
import mmap
import os
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import IO, Any

import orjson

from ..errors import LiveroomError
from .record import OK_FIRST, OK_LINE, Record, RecordError, decode_id, dumps, loads

MANIFEST = "manifest.json"
FORMAT = 1
FSYNC_EVERY = 1.0  # seconds


class ManifestMismatch(LiveroomError):
    """The run directory was made by another command (other model, prompts, inputs...)."""


def sha256_file(path: str | Path) -> str:
    """The hex SHA-256 of a file, read a block at a time."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` so that ``path`` holds the old or the new bytes, never a mix, even after a crash."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


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
            + " (use another --out, or the original settings)"
        )
    return {**manifest, **{k: {**old.get(k, {}), **manifest.get(k, {})} for k in extendable}}


SCAN_BLOCK = 1 << 24  # bytes scanned at a time: mapped, then dropped, so memory stays flat
_PAGE = mmap.PAGESIZE


class Checkpoint:
    """Append-only records of one run directory."""

    def __init__(self, run_dir: str | Path) -> None:
        self.dir = Path(run_dir)
        self._files: dict[str, IO[bytes]] = {}
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

        Fast: the file is mapped, not copied, and only each line's head is
        read; a last line without its newline (torn by a crash) is no record.
        """
        path = self.path(group)
        if not path.exists() or path.stat().st_size == 0:
            return
        with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
            end = m.rfind(b"\n") + 1  # complete lines only
            first = OK_FIRST.match(m, 0, end)
            if first:
                yield [first.group(1)]
            pos = 0
            while pos < end:
                stop = m.rfind(b"\n", pos, min(end, pos + SCAN_BLOCK)) + 1
                if stop <= pos:  # a line longer than a block
                    stop = m.find(b"\n", pos) + 1
                yield OK_LINE.findall(m, max(pos - 1, 0), stop)  # from the newline before the block
                if hasattr(m, "madvise"):  # give the scanned pages back: they count as our memory
                    lo, hi = pos // _PAGE * _PAGE, stop // _PAGE * _PAGE
                    m.madvise(mmap.MADV_DONTNEED, lo, hi - lo)
                pos = stop

    def done(self, group: str) -> set[str]:
        """Ids with an ok record."""
        return {decode_id(i) for ids in self.ok_ids(group) for i in ids}

    def records(self, group: str) -> Iterator[Record]:
        """Every complete record of ``group``, in file order."""
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
                    raise LiveroomError(f"{path} line {n}: not a JSON record") from None

    # -- writing -------------------------------------------------------------------
    def open(self, manifest: dict[str, Any]) -> None:
        """Create the directory, write the manifest, repair and open every group."""
        self.dir.mkdir(parents=True, exist_ok=True)
        atomic_write(self.dir / MANIFEST, orjson.dumps(manifest, option=orjson.OPT_INDENT_2))
        for group in manifest.get("groups", {}):
            self.repair(group)
            self._files[group] = open(self.path(group), "ab", buffering=0)

    def write(self, group: str, record: Record | Mapping[str, Any]) -> None:
        """Append one record (a mapping is read as :meth:`Record.from_dict` reads it)."""
        self._files[group].write(dumps(record))
        now = time.monotonic()
        if now - self._last_sync > FSYNC_EVERY:
            self.sync()
            self._last_sync = now

    def sync(self) -> None:
        """Push what was written to the disk, not only to the OS."""
        for f in self._files.values():
            os.fsync(f.fileno())

    def close(self) -> None:
        """Sync and close every group file."""
        self.sync()
        for f in self._files.values():
            f.close()
        self._files.clear()
