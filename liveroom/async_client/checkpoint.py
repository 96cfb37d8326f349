"""The run directory: a manifest and one append-only JSONL file per group.

A record is written, flushed to the OS, for every finished request, and the
files are fsynced every second and on close, so a killed run loses at most
the requests in flight. On open, a torn last line (a write cut by a crash) is
dropped. Only ``"status": "ok"`` records count as done; failed ones stay in
the file as history and are asked again on the next run.

The manifest fixes what the records mean (model, endpoint, parameters, prompt
versions, persona set, input hashes); a run whose manifest differs is refused
with the differences named, never silently mixed.
"""

from __future__ import annotations

import hashlib
import mmap
import os
import re
import time
from pathlib import Path
from typing import Any, Iterator

import orjson

from ..errors import LiveroomError

MANIFEST = "manifest.json"
FORMAT = 1
FSYNC_EVERY = 1.0  # seconds


class ManifestMismatch(LiveroomError):
    pass


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _differences(old: Any, new: Any, where: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for k in sorted(set(old) | set(new)):
            out += _differences(old.get(k), new.get(k), f"{where}.{k}" if where else k)
        return out
    if old == new:
        return []
    show = lambda v: orjson.dumps(v).decode()[:60]  # noqa: E731
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


# a line's head, found after the newline that ends the previous line: the literal
# prefix lets the regex engine skip ahead fast (``^`` under re.M tries every byte),
# and the id is matched as runs of plain bytes between escapes, not byte by byte
_HEAD = rb'\{"id":"([^"\\]*(?:\\.[^"\\]*)*)","status":"ok"'
_OK = re.compile(rb"\n" + _HEAD)
_OK_FIRST = re.compile(_HEAD)  # the file's first line has no newline before it
SCAN_BLOCK = 1 << 24  # bytes scanned at a time: mapped, then dropped, so memory stays flat
_PAGE = mmap.PAGESIZE


class Checkpoint:
    """Append-only records of one run directory."""

    def __init__(self, run_dir: str | Path):
        self.dir = Path(run_dir)
        self._files: dict[str, Any] = {}
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
        """Ids with an ok record, a block of the file at a time.

        Fast: the file is mapped, not copied, and only each line's head is
        read; a last line without its newline (torn by a crash) is no record.
        """
        path = self.path(group)
        if not path.exists() or path.stat().st_size == 0:
            return
        with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
            end = m.rfind(b"\n") + 1  # complete lines only
            first = _OK_FIRST.match(m, 0, end)
            if first:
                yield [first.group(1)]
            pos = 0
            while pos < end:
                stop = m.rfind(b"\n", pos, min(end, pos + SCAN_BLOCK)) + 1
                if stop <= pos:  # a line longer than a block
                    stop = m.find(b"\n", pos) + 1
                yield _OK.findall(m, max(pos - 1, 0), stop)  # from the newline before the block
                if hasattr(m, "madvise"):  # give the scanned pages back: they count as our memory
                    lo, hi = pos // _PAGE * _PAGE, stop // _PAGE * _PAGE
                    m.madvise(mmap.MADV_DONTNEED, lo, hi - lo)
                pos = stop

    def done(self, group: str) -> set[str]:
        """Ids with an ok record."""
        return {orjson.loads(b'"%s"' % i) if b"\\" in i else i.decode() for ids in self.ok_ids(group) for i in ids}

    def records(self, group: str) -> Iterator[dict[str, Any]]:
        path = self.path(group)
        if not path.exists():
            return
        with open(path, "rb") as f:
            for n, line in enumerate(f, 1):
                if not line.endswith(b"\n"):
                    return  # torn tail of a crashed run
                try:
                    yield orjson.loads(line)
                except orjson.JSONDecodeError:
                    raise LiveroomError(f"{path} line {n}: not a JSON record") from None

    # -- writing -------------------------------------------------------------------
    def open(self, manifest: dict[str, Any]) -> None:
        """Create the directory, write the manifest, repair and open every group."""
        self.dir.mkdir(parents=True, exist_ok=True)
        atomic_write(self.dir / MANIFEST, orjson.dumps(manifest, option=orjson.OPT_INDENT_2))
        for group in manifest.get("groups", {}):
            self.repair(group)
            self._files[group] = open(self.path(group), "ab", buffering=0)

    def write(self, group: str, record: dict[str, Any]) -> None:
        """Append one record; ``record`` must start with ``id`` then ``status``."""
        self._files[group].write(orjson.dumps(record) + b"\n")
        now = time.monotonic()
        if now - self._last_sync > FSYNC_EVERY:
            self.sync()
            self._last_sync = now

    def sync(self) -> None:
        for f in self._files.values():
            os.fsync(f.fileno())

    def close(self) -> None:
        self.sync()
        for f in self._files.values():
            f.close()
        self._files.clear()
