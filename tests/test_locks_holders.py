"""liveroom.locks against real processes: who holds a lock is named, and a dead holder never blocks."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from liveroom.errors import LiveroomError
from liveroom.locks import Busy, holder, locked

#: takes the lock, says "held" and keeps it until stdin closes
HOLD = textwrap.dedent("""
    import sys
    from pathlib import Path
    from liveroom.locks import locked
    with locked(Path(sys.argv[1]), sys.argv[2]):
        print("held", flush=True)
        sys.stdin.read()
""")

#: tries the lock once: prints "got it", or the error and exits 3
TRY = textwrap.dedent("""
    import sys
    from pathlib import Path
    from liveroom.locks import Busy, locked
    try:
        with locked(Path(sys.argv[1]), "second", what=sys.argv[2]):
            print("got it")
    except Busy as e:
        print(e)
        sys.exit(3)
""")


def hold(lock: Path, label: str) -> subprocess.Popen[str]:
    """A process that holds ``lock`` until its stdin is closed."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(lock), label], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    assert proc.stdout.readline() == "held\n"
    proc.stdout.close()  # nothing more comes: only stdin is kept
    return proc


def try_lock(lock: Path, what: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", TRY, str(lock), what], capture_output=True, text=True, timeout=60)


def test_a_second_process_is_refused_with_the_holders_pid_and_label(tmp_path: Path) -> None:
    lock = tmp_path / "run" / "lock"
    with locked(lock, "bin/score", what=tmp_path / "run"):
        assert lock.read_text() == f"{os.getpid()} bin/score\n"
        p = try_lock(lock, "RUN")
        assert p.returncode == 3, p.stderr
        assert p.stdout == f"RUN is in use by pid {os.getpid()} (bin/score)\n"
    assert lock.read_text() == ""  # released: names nobody
    p = try_lock(lock, "RUN")
    assert (p.returncode, p.stdout) == (0, "got it\n"), p.stderr


def test_this_process_is_refused_while_another_holds_the_lock(tmp_path: Path) -> None:
    lock = tmp_path / "lock"
    proc = hold(lock, "bin/batch prepare")
    try:
        with pytest.raises(Busy) as e, locked(lock, "test"):
            pass
        assert str(e.value) == f"{tmp_path} is in use by pid {proc.pid} (bin/batch prepare)"
        assert isinstance(e.value, LiveroomError) and e.value.holder == f"pid {proc.pid} (bin/batch prepare)"
        assert lock.read_text() == f"{proc.pid} bin/batch prepare\n"  # the refused attempt wrote nothing
    finally:
        proc.communicate("")
    assert proc.returncode == 0


def test_a_holder_killed_by_sigkill_does_not_block(tmp_path: Path) -> None:
    lock = tmp_path / "lock"
    proc = hold(lock, "bin/score")
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert lock.read_text() == f"{proc.pid} bin/score\n"  # the file is left behind, naming the dead holder
    with locked(lock, "after"):
        assert lock.read_text() == f"{os.getpid()} after\n"
    p = try_lock(lock, "RUN")
    assert p.returncode == 0, p.stdout + p.stderr


def test_on_busy_is_told_who_holds_the_lock_then_waits_for_it(tmp_path: Path) -> None:
    lock = tmp_path / "lock"
    proc = hold(lock, "bin/local-llm install")
    told: list[Busy] = []

    def release(busy: Busy) -> None:
        told.append(busy)
        assert proc.stdin is not None
        proc.stdin.close()  # the holder ends: the wait that follows returns

    with locked(lock, "waiter", what="the cache", on_busy=release):
        assert proc.wait(30) == 0
        assert lock.read_text() == f"{os.getpid()} waiter\n"
    assert [str(b) for b in told] == [f"the cache is in use by pid {proc.pid} (bin/local-llm install)"]


def test_holder_reads_an_empty_or_missing_file_as_another_process(tmp_path: Path) -> None:
    assert holder(tmp_path / "missing") == "another process"
    (tmp_path / "empty").write_text("")
    assert holder(tmp_path / "empty") == "another process"
    (tmp_path / "bare").write_text("42\n")
    assert holder(tmp_path / "bare") == "pid 42"
