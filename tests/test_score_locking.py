"""One writer per run directory (faults F1, F2): real processes on one RUN_DIR.

bin/score and every bin/batch verb that writes take ``RUN_DIR/.lock``; a
second writer is refused at once with ``RUN_DIR is in use by pid N (LABEL)``,
exit status 2, nothing sent; a holder that died blocks nobody.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

from aiohttp import web

from kit import Server, batch, completion, make_inputs, ok_ids, one_line_error, score, start_score
from liveroom.locks import RUN_DIR_LOCK


class Held:
    """Answers the first ``free`` requests, then holds every other one until :meth:`release`: the first
    writer is still at work whatever the second one's start-up costs on a busy machine."""

    def __init__(self, free: int = 4) -> None:
        self.free = free
        self.released = threading.Event()

    def release(self) -> None:
        self.released.set()

    async def __call__(self, request: web.Request, body: dict) -> web.StreamResponse:
        if self.free > 0:
            self.free -= 1
        else:
            while not self.released.is_set():
                await asyncio.sleep(0.01)
        return web.json_response(completion())


def wait_for_records(run: Path, proc: subprocess.Popen[str], at_least: int = 1, within: float = 60) -> None:
    deadline = time.time() + within
    while time.time() < deadline and proc.poll() is None:
        if run.exists() and sum(f.read_bytes().count(b"\n") for f in run.glob("*.jsonl")) >= at_least:
            return
        time.sleep(0.02)
    raise AssertionError(f"no records came: {proc.poll()} {proc.stderr.read() if proc.stderr else ''}")


def test_two_scores_at_once_one_is_refused_and_nothing_is_asked_twice(tmp_path):
    """F1: two bin/score on one RUN_DIR (two terminals, a retried cron job)."""
    pitches, goods = make_inputs(tmp_path, 6)
    held = Held()
    srv = Server(held)
    run = tmp_path / "run"
    try:
        first = start_score(pitches, goods, run, srv.url, "--stages", "entry,read", "--concurrency", "4")
        wait_for_records(run, first)
        second = score(pitches, goods, run, srv.url, "--stages", "entry,read", "--concurrency", "4")
        line = one_line_error(second)
        assert line == f"score: error: {run} is in use by pid {first.pid} (bin/score)", line
        sent_by_second = srv.requests
        held.release()
        err = first.communicate(timeout=120)[1]
        assert first.returncode == 0, err
        ids = ok_ids(run)
        assert len(ids) == len(set(ids)) == 6 * 2 * 8
        assert srv.requests == 96  # the refused run sent nothing
        assert sent_by_second <= 96
        # and the lock of a finished run names nobody and blocks nobody
        assert (run / RUN_DIR_LOCK).read_text() == ""
        p = score(pitches, goods, run, srv.url, "--stages", "entry,read")
        assert p.returncode == 0 and "nothing sent" in p.stdout
    finally:
        srv.stop()


def test_batch_verbs_are_refused_while_score_runs(tmp_path):
    """F2: bin/batch import (and prepare) on a RUN_DIR that bin/score is writing."""
    pitches, goods = make_inputs(tmp_path, 6)
    held = Held()
    srv = Server(held)
    run = tmp_path / "run"
    try:
        proc = start_score(pitches, goods, run, srv.url, "--stages", "entry,read", "--concurrency", "2")
        wait_for_records(run, proc)
        output = tmp_path / "output.jsonl"
        output.write_text("")
        p = batch("import", "--run", str(run), str(output))
        assert one_line_error(p) == f"batch: error: {run} is in use by pid {proc.pid} (bin/score)"
        p = batch("prepare", "--pitches", str(pitches), "--goods", str(goods), "--out", str(run),
                  "--stages", "entry,read", "--base-url", srv.url)
        assert one_line_error(p) == f"batch: error: {run} is in use by pid {proc.pid} (bin/score)"
        assert not (run / "batch").exists() or not list((run / "batch").glob("requests-*.jsonl"))
        proc.send_signal(signal.SIGTERM)
        held.release()  # the requests out come back within the grace period
        proc.communicate(timeout=60)
        assert proc.returncode == 143
        ids = ok_ids(run)
        assert len(ids) == len(set(ids))  # nothing recorded twice
    finally:
        srv.stop()


HOLD = textwrap.dedent("""
    import sys
    from liveroom.locks import run_dir_lock
    with run_dir_lock(sys.argv[1], "bin/batch"):
        print("held", flush=True)
        sys.stdin.read()
""")


def test_score_is_refused_while_a_batch_verb_holds_the_run_and_goes_once_it_dies(tmp_path):
    pitches, goods = make_inputs(tmp_path, 1)
    srv = Server()
    run = tmp_path / "run"
    try:
        holder = subprocess.Popen([sys.executable, "-c", HOLD, str(run)], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, text=True)
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        p = score(pitches, goods, run, srv.url, "--stages", "entry")
        assert one_line_error(p) == f"score: error: {run} is in use by pid {holder.pid} (bin/batch)"
        assert srv.requests == 0 and not (run / "manifest.json").exists()
        holder.send_signal(signal.SIGKILL)  # a holder that dies, even by SIGKILL, blocks nobody
        holder.wait(30)
        assert (run / RUN_DIR_LOCK).read_text() == f"{holder.pid} bin/batch\n"
        p = score(pitches, goods, run, srv.url, "--stages", "entry")
        assert p.returncode == 0, p.stderr
        assert srv.requests == 8
        assert list(json.loads((run / "manifest.json").read_text())["groups"]) == ["entry"]
    finally:
        srv.stop()
