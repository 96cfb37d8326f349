"""A dead endpoint is one clear line, not hours of retries (issue row F9).

No key for a remote endpoint: refused before anything is sent. Nothing ever
answers (refused, DNS, TLS): the run stops within seconds naming the host.
An endpoint that worked and goes down: every worker waits, the progress line
says so, nothing is failed for it, and after ``--give-up-after`` the run
stops to be resumed. A base URL with a query string is refused.
"""

from __future__ import annotations

import asyncio
import socket
import subprocess
import time

from aiohttp import web

from kit import (
    STAGES,
    Server,
    completion,
    env_for,
    make_inputs,
    ok_ids,
    one_line_error,
    records,
    score,
    score_cmd,
)


def test_a_first_run_without_key_or_endpoint_is_one_line_before_anything_is_sent(tmp_path):
    pitches, goods = make_inputs(tmp_path, 2)
    p = score(pitches, goods, tmp_path / "run", None, *STAGES)  # neither OPENAI_API_KEY nor OPENAI_BASE_URL
    line = one_line_error(p)
    assert line == ("score: error: no API key for https://api.openai.com/v1: set OPENAI_API_KEY "
                    "(a server that needs none: set it to any value, e.g. OPENAI_API_KEY=none)")
    assert not (tmp_path / "run").exists()
    p = score(pitches, goods, tmp_path / "run", "https://llm.example.com/v1", *STAGES)
    assert "no API key for https://llm.example.com/v1" in one_line_error(p)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_an_endpoint_that_never_answers_stops_the_run_in_seconds_naming_it(tmp_path):
    pitches, goods = make_inputs(tmp_path, 10)
    url = f"http://127.0.0.1:{free_port()}/v1"
    p = score(pitches, goods, tmp_path / "run", url, *STAGES, "--backoff", "1")
    line = one_line_error(p)  # it was 90 s and counting, each request burning its retries, then failed records
    assert line.startswith(f"score: error: cannot reach {url}/chat/completions: connection error: "), line
    assert "Cannot connect to host 127.0.0.1" in line and "check the base URL" in line
    assert records(tmp_path / "run") == []  # not one request is recorded as failed for it


async def down_after(request: web.Request, body: dict) -> web.StreamResponse:
    await asyncio.sleep(0.02)
    return web.json_response(completion())


def wait_until(cond, within: float = 60) -> None:
    deadline = time.time() + within
    while not cond():
        assert time.time() < deadline
        time.sleep(0.01)


def test_an_endpoint_that_goes_down_pauses_the_run_and_fails_nothing(tmp_path):
    pitches, goods = make_inputs(tmp_path, 8)
    srv = Server(down_after)
    run = tmp_path / "run"
    try:
        proc = subprocess.Popen(score_cmd(pitches, goods, run, *STAGES, "--concurrency", "4", "--progress-every",
                                          "1"), env=env_for(srv.url), stderr=subprocess.PIPE, text=True)
        wait_until(lambda: srv.requests >= 40)
        srv.down()
        time.sleep(3)
        assert proc.poll() is None  # waiting, not failing
        srv.up()
        err = proc.communicate(timeout=120)[1]
        assert proc.returncode == 0, err
        assert "; endpoint unreachable for " in err and "(last error: connection error: " in err, err
        recs = records(run)
        assert len(recs) == 128 and all(r["status"] == "ok" for r in recs)
        assert "failed 0" in err.splitlines()[-1]
    finally:
        srv.stop()


def test_an_endpoint_gone_for_good_stops_the_run_cleanly_after_give_up_after(tmp_path):
    pitches, goods = make_inputs(tmp_path, 8)
    srv = Server(down_after)
    run = tmp_path / "run"
    try:
        proc = subprocess.Popen(score_cmd(pitches, goods, run, *STAGES, "--concurrency", "4", "--give-up-after",
                                          "2"), env=env_for(srv.url), stderr=subprocess.PIPE, text=True)
        wait_until(lambda: srv.requests >= 40)
        srv.down()
        err = proc.communicate(timeout=60)[1]
        assert proc.returncode == 130, err  # as a stop by signal: rerun to resume
        last = err.strip().splitlines()[-1]
        assert last.startswith("score: endpoint unreachable for ") and "(last error: connection error: " in last
        assert last.endswith("request(s) left; run the same command again to resume"), last
        done = records(run)
        assert done and all(r["status"] == "ok" for r in done)  # nothing failed for the outage

        srv.up()
        p = score(pitches, goods, run, srv.url, *STAGES, "--concurrency", "4")
        assert p.returncode == 0, p.stderr
        ids = ok_ids(run)
        assert len(ids) == len(set(ids)) == 128
        assert srv.requests <= 128 + 4
    finally:
        srv.stop()


def test_a_base_url_with_a_query_string_is_one_line(tmp_path):
    pitches, goods = make_inputs(tmp_path, 1)
    srv = Server()
    try:
        for url in (srv.url + "?api-version=2024-06-01", srv.url + "#top"):
            p = score(pitches, goods, tmp_path / "run", url, *STAGES)
            line = one_line_error(p)
            assert "has a query string or fragment" in line and "/chat/completions is appended" in line
        assert srv.requests == 0 and not (tmp_path / "run").exists()
    finally:
        srv.stop()
