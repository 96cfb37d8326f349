"""Full speed under provider limits: outcomes against real bin/sim-server processes.

Each scenario runs ``bin/score`` as a user does against ``bin/sim-server
--profile openai|zhipu|dashscope`` on loopback, without ``--provider`` (the
error codes are recognised whatever the host) unless a test says otherwise:
an in-flight cap found and kept, scattered 429s that delay their own request
only, a full rate window that pauses everyone instead of being hammered,
arrears that stop the run at once, a content filter that fails one request
(and a rerun that leaves it), reasoning replies. What is checked is what
happened (counts, records, exit status, lines), never how fast; the speed
figures are bench/bench_engine.py's ``limits`` table. The limiter alone is
checked in test_engine_concurrency.py; the error-code tables and the header
readers in test_engine_providers.py.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from kit import Server, completion, env_for, make_inputs, one_line_error, records, score, score_cmd

PROFILES = ("openai", "zhipu", "dashscope")
LIMIT = re.compile(r"limit (\d+)/(\d+)")


def summary(p: subprocess.CompletedProcess[str]) -> str:
    """The final ``score: N/N ...`` line (the result, on stdout)."""
    return next(line for line in p.stdout.splitlines() if re.match(r"score: \d+/\d+ ", line))


def final_limit(p: subprocess.CompletedProcess[str]) -> tuple[int, int]:
    m = LIMIT.search(summary(p))
    assert m, summary(p)
    return int(m.group(1)), int(m.group(2))


# ----------------------------------------------------------------------------- an in-flight cap

@pytest.mark.parametrize("profile, cap_code", [(p, "profile") for p in PROFILES] + [("zhipu", "none")])
def test_an_in_flight_cap_is_found_and_kept(tmp_path, sim, profile, cap_code):
    pitches, goods = make_inputs(tmp_path, 5)  # 120 requests
    s = sim("--profile", profile, "--max-inflight", "4", "--cap-code", cap_code, "--latency-ms", "100")
    p = score(pitches, goods, tmp_path / "run", s.url, "--concurrency", "32")
    assert p.returncode == 0, p.stderr
    st = s.stats()
    assert st["answered"] == 120 and len(records(tmp_path / "run")) == 120
    limit, ceiling = final_limit(p)
    assert ceiling == 32 and limit <= 6, summary(p)  # the live limit sits at the cap, not at 32
    assert st["capped"] < st["answered"], st["capped"]  # a 429 is a probe now and then, not the rule


def test_a_fixed_concurrency_keeps_asking_over_the_cap(tmp_path, sim):
    pitches, goods = make_inputs(tmp_path, 5)
    s = sim("--profile", "zhipu", "--max-inflight", "4", "--latency-ms", "100")
    adaptive = score(pitches, goods, tmp_path / "a", s.url, "--concurrency", "32")
    capped = s.stats()["capped"]
    fixed = score(pitches, goods, tmp_path / "f", s.url, "--concurrency", "32", "--fixed-concurrency")
    assert adaptive.returncode == 0, adaptive.stderr
    assert "fixed 32" in summary(fixed)
    assert s.stats()["capped"] - capped > 3 * capped  # the same cap, asked over and over


# ----------------------------------------------------------------------------- scattered 429s

@pytest.mark.parametrize("profile", PROFILES)
def test_a_scattered_429_delays_its_own_request_and_nobody_else(tmp_path, sim, profile):
    pitches, goods = make_inputs(tmp_path, 8)  # 192 requests, about 2.4 s at 8 in flight
    s = sim("--profile", profile, "--p-429", "0.1", "--retry-after", "1", "--latency-ms", "100", "--seed", "5")
    p = score(pitches, goods, tmp_path / "run", s.url, "--concurrency", "8")
    assert p.returncode == 0, p.stderr
    recs = records(tmp_path / "run")
    assert all(r["status"] == "ok" for r in recs) and len(recs) == 192
    assert final_limit(p) == (8, 8)  # random rejections at a steady share move nothing
    waited = [r for r in recs if r["attempts"] > 1 and r["t"] < max(x["t"] for x in recs) - 0.5]
    assert waited, "no request got a 429 early in the run"
    for r in waited[:3]:  # while one waited its second, the others went on being answered
        began = r["t"] - r["latency_ms"] / 1000
        meanwhile = [x for x in recs if x["attempts"] == 1 and began + 0.3 < x["t"] < r["t"] - 0.3]
        assert len(meanwhile) >= 10, (r["id"], len(meanwhile))


# ----------------------------------------------------------------------------- a full rate window

def run_for(pitches: Path, goods: Path, out: Path, url: str, seconds: float, *flags: str,
            until: Any = None) -> subprocess.CompletedProcess[str]:
    """bin/score for ``seconds`` (or until ``until()``), then SIGTERM."""
    proc = subprocess.Popen(score_cmd(pitches, goods, out, *flags), env=env_for(url), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    end = time.monotonic() + seconds
    while time.monotonic() < end and proc.poll() is None and not (until and until()):
        time.sleep(0.05)
    time.sleep(1.0)
    proc.send_signal(signal.SIGTERM)
    out_, err = proc.communicate(timeout=30)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out_, err)


@pytest.mark.parametrize("profile", PROFILES)
@pytest.mark.parametrize("headers", [False, True], ids=["no-headers", "ratelimit-headers"])
def test_a_full_rate_window_pauses_everyone_instead_of_asking_again(tmp_path, sim, profile, headers):
    pitches, goods = make_inputs(tmp_path, 4)  # 96 requests; the window lets 40 a minute through
    s = sim("--profile", profile, "--rpm-limit", "40", "--latency-ms", "20",
            *(["--ratelimit-headers"] if headers else []))
    p = run_for(pitches, goods, tmp_path / "run", s.url, 8, "--concurrency", "16",
                until=lambda: s.stats()["answered"] >= 40)
    assert p.returncode == 143, p.stderr  # stopped while waiting for the window, to be resumed
    assert "run the same command again to resume" in p.stderr
    st = s.stats()
    assert st["answered"] == 40
    # without headers: the 429s until their share says the window is full, and those already out
    # (a client that only backs off would be refused hundreds of times in 8 s); with them: hardly any
    assert st["rate_limited"] <= (16 if headers else 3 * 16), st["rate_limited"]
    assert st["requests"] == st["answered"] + st["rate_limited"]


# ----------------------------------------------------------------------------- arrears, quota

ARREARS = {"openai": "insufficient_quota", "zhipu": "1113", "dashscope": "Arrearage"}


@pytest.mark.parametrize("profile", PROFILES)
def test_arrears_stop_the_run_at_once_with_one_line(tmp_path, sim, profile):
    pitches, goods = make_inputs(tmp_path, 10)
    s = sim("--profile", profile, "--arrears-after", "30", "--latency-ms", "50")
    p = score(pitches, goods, tmp_path / "run", s.url, "--concurrency", "16")
    line = one_line_error(p)  # exit status 2
    assert ARREARS[profile] in line and "then run the same command again to resume" in line, line
    st = s.stats()
    assert st["requests_after_arrears"] <= 16 + 5, st
    assert all(r["status"] == "ok" for r in records(tmp_path / "run"))  # nothing recorded failed for it


@pytest.mark.parametrize("profile, code", [("openai", "insufficient_quota"), ("zhipu", "1308"),
                                           ("dashscope", "Throttling.AllocationQuota")])
def test_a_quota_used_up_is_fatal_whatever_its_status(tmp_path, sim, profile, code):
    pitches, goods = make_inputs(tmp_path, 2)
    s = sim("--profile", profile, "--fail-first", "1", "--fail-first-kind", "quota")
    line = one_line_error(score(pitches, goods, tmp_path / "run", s.url, "--concurrency", "1"))
    assert f"HTTP 429 {code}" in line, line
    assert s.stats()["requests"] == 1


def test_dashscope_insufficient_quota_is_its_token_throttle_with_provider_dashscope(tmp_path, sim):
    pitches, goods = make_inputs(tmp_path, 2)
    # the TPM window's answer: 429 insufficient_quota, which only DashScope means as a throttle
    t = sim("--profile", "dashscope", "--tpm-limit", "3000", "--latency-ms", "10")
    p = run_for(pitches, goods, tmp_path / "ds", t.url, 6, "--provider", "dashscope", "--concurrency", "4",
                until=lambda: t.stats()["token_limited"] > 0)
    assert p.returncode in (0, 143), p.stderr  # waited for the window: not fatal
    assert t.stats()["token_limited"] > 0
    generic = score(pitches, goods, tmp_path / "g", t.url, "--concurrency", "4")
    assert "insufficient_quota" in one_line_error(generic)  # not known as DashScope: OpenAI's billing error


# ----------------------------------------------------------------------------- content filter

@pytest.mark.parametrize("profile", PROFILES)
def test_the_content_filter_fails_that_request_only_and_a_rerun_leaves_it(tmp_path, sim, profile):
    pitches, goods = make_inputs(tmp_path, 3)  # 72 requests
    s = sim("--profile", profile, "--p-content-filter", "0.2", "--seed", "2")
    run = tmp_path / "run"
    p = score(pitches, goods, run, s.url)
    assert p.returncode == 1, p.stderr
    assert "content filter" in p.stderr and "--retry-filtered" in p.stderr
    recs = records(run)
    filtered = [r for r in recs if r["status"] == "error"]
    assert filtered and all(r["error"].startswith("content_filter: ") for r in filtered)
    assert len(filtered) == s.stats()["faults"]["content_filter"]
    assert all(r["attempts"] == 1 for r in filtered)  # never resent as a transport error
    sent = s.stats()["requests"]
    again = score(pitches, goods, run, s.url)
    assert again.returncode == 0 and "nothing sent" in again.stdout, again.stderr
    assert s.stats()["requests"] == sent
    retried = score(pitches, goods, run, s.url, "--retry-filtered")
    assert s.stats()["requests"] - sent == len(filtered), retried.stderr


# ----------------------------------------------------------------------------- reasoning replies

def test_think_blocks_are_dropped_before_parsing(tmp_path, sim):
    pitches, goods = make_inputs(tmp_path, 3)
    clean = sim("--seed", "7")
    think = sim("--seed", "7", "--p-think", "0.5", "--profile", "zhipu")
    assert score(pitches, goods, tmp_path / "a", clean.url).returncode == 0
    p = score(pitches, goods, tmp_path / "b", think.url)
    assert p.returncode == 0, p.stderr
    assert think.stats()["faults"]["think"] > 10
    a, b = ({r["id"]: r["scores"] for r in records(tmp_path / d)} for d in "ab")
    assert a == b  # the JSON-looking draft inside <think> was never taken for the answer
    assert all(r["reasks"] == 0 for r in records(tmp_path / "b"))


def test_a_null_content_length_reply_is_asked_again_with_more_tokens_not_resent(tmp_path):
    pitches, goods = make_inputs(tmp_path, 1)

    async def thinker(request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
        if len(body["messages"]) <= 2:  # the first question: every token spent reasoning
            return web.json_response({"model": "gpt-4o-mini", "choices": [{"index": 0, "finish_reason": "length",
                                      "message": {"role": "assistant", "content": None, "reasoning_content": "hmm"}}],
                                      "usage": {"prompt_tokens": 5, "completion_tokens": 1000, "total_tokens": 1005}})
        return web.json_response(completion())

    srv = Server(thinker)
    try:
        p = score(pitches, goods, tmp_path / "run", srv.url, "--stages", "entry", "--reask-max-tokens", "3000")
        assert p.returncode == 0, p.stderr
        assert srv.requests == 16  # 8 questions, each asked once more: never a transport retry of the same body
        firsts = [b for b in srv.bodies if len(b["messages"]) <= 2]
        again = [b for b in srv.bodies if len(b["messages"]) > 2]
        assert {b["max_tokens"] for b in firsts} == {1000} and {b["max_tokens"] for b in again} == {3000}
        assert all("every token went to reasoning" in b["messages"][-1]["content"] for b in again)
        assert all(r["reasks"] == 1 and r["usage"]["completion_tokens"] == 1005 for r in records(tmp_path / "run"))
    finally:
        srv.stop()


def test_extra_body_goes_into_every_request_and_the_manifest(tmp_path):
    pitches, goods = make_inputs(tmp_path, 1)
    srv = Server()
    try:
        extra = '{"thinking": {"type": "disabled"}}'
        p = score(pitches, goods, tmp_path / "run", srv.url, "--stages", "read", "--extra-body", extra)
        assert p.returncode == 0, p.stderr
        assert srv.requests == 8 and all(b["thinking"] == {"type": "disabled"} for b in srv.bodies)
        manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
        assert manifest["params"]["extra_body"] == {"thinking": {"type": "disabled"}}
        # another body is another run: refused with the difference named
        other = score(pitches, goods, tmp_path / "run", srv.url, "--stages", "read", "--extra-body", "{}")
        assert "extra_body" in one_line_error(other)
    finally:
        srv.stop()
    bad = score(pitches, goods, tmp_path / "x", srv.url, "--extra-body", "[1]")  # argparse's usage, then one line
    assert bad.returncode == 2 and "argument --extra-body: must be a JSON object" in bad.stderr.splitlines()[-1]


def test_a_local_server_provider_needs_its_address(tmp_path):
    pitches, goods = make_inputs(tmp_path, 1)
    env = env_for(None)
    p = subprocess.run(score_cmd(pitches, goods, tmp_path / "run", "--provider", "vllm"), env=env, capture_output=True,
                       text=True, timeout=60)
    assert "--provider vllm: name the server with --base-url" in one_line_error(p)
