"""One process at a time on a directory: an exclusive ``flock`` on a lock file that names its holder.

The kernel drops a ``flock`` when its holder dies, even by SIGKILL, so a lock
file left behind never blocks anyone. While the lock is held the file says
``PID LABEL``, so a second process can tell the user who is in the way.

A run directory has one writer at a time: ``bin/score`` and every
``bin/batch`` verb that writes take :func:`run_dir_lock` (``RUN_DIR/.lock``).
On read-only media the lock is taken on the file as it is (nobody can write
there anyway), so reading a finished run needs no write.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
from collections.abc import Callable, Iterator
from pathlib import Path

from .errors import LiveroomError

#: the lock file of a run directory, the one name bin/score and bin/batch share
RUN_DIR_LOCK = ".lock"
_READ_ONLY = (errno.EROFS, errno.EACCES, errno.EPERM)


class Busy(LiveroomError):
    """Another live process holds the lock; the message names it."""

    def __init__(self, what: str, holder: str) -> None:
        super().__init__(f"{what} is in use by {holder}")
        self.what = what
        self.holder = holder


def holder(path: Path) -> str:
    """Who ``path`` names: ``pid N (LABEL)``, or ``another process`` before the holder has written it."""
    try:
        pid, _, label = path.read_text().strip().partition(" ")
    except (OSError, UnicodeDecodeError):
        pid, label = "", ""
    if not pid.isdigit():
        return "another process"
    return f"pid {pid} ({label})" if label else f"pid {pid}"


@contextlib.contextmanager
def locked(path: Path, label: str, what: str | Path | None = None,
           on_busy: Callable[[Busy], None] | None = None) -> Iterator[None]:
    """Hold ``path`` exclusively; when another process holds it, raise :class:`Busy`.

    ``label`` (e.g. ``bin/score``) is written with the pid for the message a
    second process shows; ``what`` is what that message says is in use (default:
    the lock file's directory). With ``on_busy`` the caller waits instead: it is
    told who holds the lock (to say so), then the lock is taken once free.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)  # not truncated: the holder's name stays readable
        writable = True
    except OSError as e:
        if e.errno not in _READ_ONLY:
            raise
        try:  # read-only media: lock the file as it is, or go without when there is none
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            yield
            return
        writable = False
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            busy = Busy(str(what if what is not None else path.parent), holder(path))
            if on_busy is None:
                raise busy from None
            on_busy(busy)
            fcntl.flock(fd, fcntl.LOCK_EX)
        if writable:
            os.ftruncate(fd, 0)
            with contextlib.suppress(OSError):  # a full disk: the lock holds, only its name is not shown
                os.pwrite(fd, f"{os.getpid()} {label}\n".encode(), 0)
        try:
            yield
        finally:
            if writable:
                os.ftruncate(fd, 0)
    finally:
        os.close(fd)  # closing the last descriptor releases the lock


def run_dir_lock(run_dir: str | Path, label: str) -> contextlib.AbstractContextManager[None]:
    """The one writer of ``run_dir``: ``RUN_DIR is in use by pid N (LABEL)`` for any other."""
    run_dir = Path(run_dir)
    return locked(run_dir / RUN_DIR_LOCK, label, what=run_dir)
