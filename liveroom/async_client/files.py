"""Whole-file writes that survive a crash, and the one line saying why a write failed.

Shared by everything that writes into a run directory (records, the
manifest, usage.json, the batch state, feature files).
"""

from __future__ import annotations

import errno
import hashlib
import os
from pathlib import Path

from ..errors import LiveroomError


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
