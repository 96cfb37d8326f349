"""No hang, ever (issue row F3, and the quota stop): bin/score against servers that break it.

Each trigger used to leave bin/score waiting forever (a worker died, the
producer blocked on a full queue, signals ignored). Now the run stops within
its grace period with one line naming the cause, or reads the odd answer as
the defaults, and what came back before a stop is recorded.
"""

from __future__ import annotations

import asyncio
import signal
import time

from aiohttp import web

from kit import (
    STAGES,
    Server,
    collect,
    completion,
    file_size_limit,
    make_inputs,
    ok_ids,
    one_line_error,
    records,
    score,
    start_score,
)


def test_a_full_disk_stops_the_run_with_one_line_and_every_record_whole(tmp_path):
    """RUN_DIR on a full disk: the file-size limit of the child (ulimit -f) makes writes fail with EFBIG."""
    pitches, goods = make_inputs(tmp_path, 6)
    srv = Server()
    run = tmp_path / "run"
    try:
        p = score(pitches, goods, run, srv.url, *STAGES, "--concurrency", "8", timeout=60,
                  preexec_fn=file_size_limit(8000))
        line = one_line_error(p)
        assert f"cannot write {run}/" in line and "File too large" in line and "ulimit -f" in line, line
        assert "run the same command again to resume" in line
        for f in run.glob("*.jsonl"):  # whole lines only: the failed write was cut back
            data = f.read_bytes()
            assert data.endswith(b"\n") and len(data) <= 8000
        kept = records(run)  # every line parses
        assert 0 < len(kept) < 96

        p = score(pitches, goods, run, srv.url, *STAGES, "--concurrency", "8")
        assert p.returncode == 0, p.stderr
        ids = ok_ids(run)
        assert len(ids) == len(set(ids)) == 96
        assert srv.requests <= 96 + 8  # at most the replies in flight when the disk filled are asked again
        c = collect(pitches, run, tmp_path / "f", "--allow-missing")
        assert c.returncode == 0, c.stderr
        assert "entry: 48/48 cells" in c.stderr and "read: 48/48 cells" in c.stderr
    finally:
        srv.stop()


def test_retry_after_soon_and_usage_that_is_no_object_are_read_as_the_defaults(tmp_path):
    pitches, goods = make_inputs(tmp_path, 2)
    seen: dict[str, int] = {}
    answered: list[object] = []

    async def odd(request: web.Request, body: dict) -> web.StreamResponse:
        key = str(body["messages"])
        seen[key] = seen.get(key, 0) + 1
        if seen[key] == 1:
            return web.json_response({"error": {"message": "slow down"}}, status=429, headers={"Retry-After": "soon"})
        usage = ("n/a", [1, 2], "12", {"total_tokens": "many"})[len(answered) % 4]
        answered.append(usage)
        return web.json_response(completion(usage=usage))

    srv = Server(odd)
    run = tmp_path / "run"
    try:
        p = score(pitches, goods, run, srv.url, *STAGES, timeout=60)  # not Retry-After's 'soon' read as long
        assert p.returncode == 0, p.stderr
        recs = records(run)
        assert len(recs) == 32 and all(r["status"] == "ok" and r["attempts"] == 2 for r in recs)
        assert all(r["usage"] == {} for r in recs)  # none of those usages is an object of counts
        assert len({str(u) for u in answered}) == 4
    finally:
        srv.stop()


def test_url_credentials_and_a_key_together_are_one_line_before_anything_is_sent(tmp_path):
    pitches, goods = make_inputs(tmp_path, 1)
    srv = Server()
    try:
        url = srv.url.replace("http://", "http://alice:s3cret-pass@")
        p = score(pitches, goods, tmp_path / "run", url, *STAGES, key="sk-also-a-key-0000")
        line = one_line_error(p)
        assert "user:pass@" in line and "OPENAI_API_KEY" in line
        assert "s3cret-pass" not in p.stderr and "sk-also-a-key-0000" not in p.stderr
        assert srv.requests == 0 and not (tmp_path / "run").exists()
    finally:
        srv.stop()


def test_a_quota_stop_records_the_replies_that_came_back(tmp_path):
    """On a fatal answer the requests in flight get the grace period; their 200s are recorded."""
    pitches, goods = make_inputs(tmp_path, 6)
    served: list[str] = []

    async def quota_after_some(request: web.Request, body: dict) -> web.StreamResponse:
        n = len(served) + 1
        served.append("")
        if n == 8:
            return web.json_response({"error": {"message": "You exceeded your current quota",
                                                "type": "insufficient_quota", "code": "insufficient_quota"}},
                                     status=429)
        if n < 8:
            await asyncio.sleep(1.0)  # in flight when the quota answer comes
        return web.json_response(completion())

    srv = Server(quota_after_some)
    run = tmp_path / "run"
    try:
        p = score(pitches, goods, run, srv.url, *STAGES, "--concurrency", "8", timeout=60)
        assert "insufficient_quota" in one_line_error(p)
        assert len(ok_ids(run)) == 7  # every 200 that came back within the grace period
        assert srv.requests == 8  # and nothing was sent after the fatal answer
    finally:
        srv.stop()


def test_sigint_ends_at_once_when_every_worker_is_waiting_out_a_long_retry_after(tmp_path):
    """Workers in a cool-down are not in flight: a stop ends them at once, whatever the grace."""
    pitches, goods = make_inputs(tmp_path, 2)

    async def busy(request: web.Request, body: dict) -> web.StreamResponse:
        return web.json_response({"error": {"message": "busy"}}, status=429, headers={"Retry-After": "600"})

    srv = Server(busy)
    run = tmp_path / "run"
    try:
        proc = start_score(pitches, goods, run, srv.url, *STAGES, "--concurrency", "4", "--grace", "3600")
        deadline = time.time() + 30
        while srv.requests < 4 and time.time() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)
        proc.send_signal(signal.SIGINT)
        err = proc.communicate(timeout=120)[1]  # ended at once: waiting out the grace would take an hour
        assert proc.returncode == 130, err
        assert "run the same command again to resume" in err and "Traceback" not in err
        assert records(run) == []  # nothing failed for it: the next run asks again
    finally:
        srv.stop()
