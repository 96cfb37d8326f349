"""The check of conftest.py that no test leaves a process behind, run on two small tests of its own.

They run in a pytest of their own, with conftest.py loaded as a plugin: one
stops a background ``sleep`` the way the full-disk test once did (``kill %1``
in ``sh -c``, which kills nothing: a script has no job control), one by its pid.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parent
SLEEP = "297"  # seconds: a number only these tests give sleep, to find its processes

LEAKY = f'''
import subprocess


def test_stops_its_job_by_job_number():
    subprocess.run(["sh", "-c", "sleep {SLEEP} & sleep 0.1; kill %1; true"], check=True)


def test_stops_its_job_by_pid():
    subprocess.run(["sh", "-c", "sleep {SLEEP} & job=$!; sleep 0.1; kill $job; wait $job; true"], check=True)
'''


def sleeping() -> list[int]:
    """The pids of the live ``sleep SLEEP`` processes on the machine."""
    pids = []
    for d in Path("/proc").iterdir():
        try:
            if d.name.isdigit() and (d / "cmdline").read_bytes() == f"sleep\0{SLEEP}\0".encode():
                pids.append(int(d.name))
        except OSError:
            continue
    return pids


def test_a_test_that_leaves_a_process_fails_and_the_process_is_ended(tmp_path: Path):
    (tmp_path / "test_leaky.py").write_text(LEAKY)
    p = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "conftest", "-p", "no:cacheprovider",
                        "test_leaky.py"], cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(TESTS)},
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 1, p.stdout + p.stderr
    assert "2 passed, 1 error" in p.stdout, p.stdout  # the leaky test passed, then failed its teardown
    assert "ERROR at teardown of test_stops_its_job_by_job_number" in p.stdout, p.stdout
    assert "this test left 1 process(es) running" in p.stdout and f"sleep {SLEEP}" in p.stdout, p.stdout
    assert sleeping() == []  # the check killed what it found
