"""Full speed under provider limits: outcomes against real bin/sim-server processes.

Each scenario runs ``bin/score`` as a user does against ``bin/sim-server
--profile openai|zhipu|dashscope`` on loopback, without ``--provider`` (the
error codes are recognised whatever the host) unless a test says otherwise:
an in-flight cap found and kept, scattered 429s that delay their own request
only, a full rate window that pauses everyone instead of being hammered,
arrears that stop the run at once, a content filter that fails one request
(and a rerun that leaves it), reasoning replies. What is checked is what
happened (counts, records, exit status, lines), never how fast; the speed
figures are bench/bench_engine.py's ``limits`` table. The limiter, the
error-code table and the header readers are checked directly at the end.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from liveroom.async_client.concurrency import ConcurrencyLimit, Slot
from liveroom.async_client.errors import Fatal, Filtered, Rejected, Retryable
from liveroom.async_client.providers import DASHSCOPE, OPENAI, ZHIPU, rule_for
from liveroom.async_client.transport import http_error, rate_window, read_completion, reset_seconds, retry_after
from test_reliability_kit import Server, completion, env_for, one_line_error, records
from test_score import BIN, make_inputs, score

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
    cmd = [sys.executable, str(BIN / "score"), "--pitches", str(pitches), "--goods", str(goods), "--out", str(out),
           "--backoff", "0.05", *flags]
    proc = subprocess.Popen(cmd, env=env_for(url), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    end = time.monotonic() + seconds
    while time.monotonic() < end and proc.poll() is None and not (until and until()):
        time.sleep(0.05)
    time.sleep(1.0)
    proc.send_signal(signal.SIGTERM)
    out_, err = proc.communicate(timeout=30)
    return subprocess.CompletedProcess(cmd, proc.returncode, out_, err)


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
    cmd = [sys.executable, str(BIN / "score"), "--pitches", str(pitches), "--goods", str(goods),
           "--out", str(tmp_path / "run"), "--provider", "vllm"]
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)
    assert "--provider vllm: name the server with --base-url" in one_line_error(p)


# ----------------------------------------------------------------------------- the limiter alone

def test_clean_replies_raise_the_limit_one_slot_per_round_trip():
    lim = ConcurrencyLimit(64)
    lim.limit = 10.0
    lim.active = 10
    for _ in range(10):  # one round trip's worth of replies
        lim.ok(lim.send())
    assert 10.9 < lim.limit < 11.1
    lim.active = 2  # the limit is not what holds sends back: nothing to learn
    lim.ok(lim.send())
    assert lim.limit < 11.1


def test_a_cap_cuts_once_per_round_trip_and_clamps_to_what_is_out():
    lim = ConcurrencyLimit(64)
    stamps = [lim.send() for _ in range(64)]
    assert lim.throttled(stamps[20], cap=True)
    assert lim.limit == pytest.approx(64 * 0.9) and lim.cuts == 1
    for st in stamps[21:40]:  # the rest of that burst: old news, no more cuts, but never more than is out
        lim.throttled(st, cap=True)
    assert lim.cuts == 1 and lim.limit == lim.sending == 44
    later = lim.send()
    assert lim.throttled(later, cap=True) and lim.cuts == 2  # sent after the cut: a new round trip


def test_random_429s_at_a_steady_share_move_nothing():
    lim = ConcurrencyLimit(64)
    x = 12345
    for _ in range(20_000):  # a 10% share, whatever the load
        x = (x * 1103515245 + 12345) % 2**31
        stamp = lim.send()
        if x % 10 == 0:
            assert not lim.throttled(stamp, cap=False)
        else:
            lim.ok(stamp)
    assert lim.limit == 64 and lim.cuts == 0


def test_a_rising_429_share_is_a_cap_signal_and_fixed_never_moves():
    for adaptive in (True, False):
        lim = ConcurrencyLimit(32, adaptive)
        over = [lim.throttled(lim.send(), cap=False) for _ in range(12)]
        assert over[:9] == [False] * 9 and all(over[9:])
        assert (lim.limit < 32) is adaptive


async def test_a_job_waiting_for_its_retry_lends_its_slot_and_comes_back_first():
    import asyncio

    lim = ConcurrencyLimit(1)
    waiting, new = Slot(lim), Slot(lim)
    await waiting.take()
    waiting.park()  # its retry wait: the one slot is free for another job
    await asyncio.wait_for(new.take(), 1)
    back = asyncio.create_task(waiting.resume())
    later = asyncio.create_task(Slot(lim).take())
    await asyncio.sleep(0)
    new.release()
    await asyncio.wait_for(back, 1)  # ahead of the job that asked after it
    assert not later.done() and lim.active == 1
    waiting.release()
    await asyncio.wait_for(later, 1)


# ----------------------------------------------------------------------------- what the server sends

@pytest.mark.parametrize("text, seconds", [("1s", 1.0), ("6m0s", 360.0), ("20ms", 0.02), ("1.5s", 1.5),
                                           ("1h0m0s", 3600.0), ("2", 2.0), ("0s", 0.0), ("soon", None),
                                           ("", None), ("5x", None), ("-1s", None), (None, None)])
def test_reset_durations_as_openai_writes_them(text, seconds):
    assert reset_seconds(text) == (pytest.approx(seconds) if seconds is not None else None)


def test_rate_limit_headers_and_junk():
    w = rate_window({"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "6m0s",
                     "x-ratelimit-remaining-tokens": "lots", "x-ratelimit-reset-tokens": "20ms"})
    assert w is not None and (w.requests, w.requests_reset, w.tokens, w.tokens_reset) == (0, 360.0, None, 0.02)
    assert rate_window({"content-type": "application/json"}) is None
    for junk in ("soon", "NaN", "inf", "Wed, 99 Foo", "-"):
        assert retry_after({"Retry-After": junk}) is None


def test_a_completion_with_odd_fields_gets_sane_defaults():
    body = {"choices": [{"message": {"content": "{}"}, "finish_reason": 7}], "usage": "lots", "model": None}
    reply = read_completion(body)
    assert (reply.text, reply.usage, reply.model, reply.finish_reason) == ("{}", {}, "", "")
    empty = read_completion({"choices": [{"message": {"content": None}, "finish_reason": "length"}]})
    assert empty.text == "" and empty.finish_reason == "length"
    with pytest.raises(Filtered, match="^content_filter: finish_reason content_filter"):
        read_completion({"choices": [{"message": {"content": None}, "finish_reason": "content_filter"}]})


@pytest.mark.parametrize("status, body, kind, signal", [
    (429, b'{"error": {"code": "1113", "message": "Insufficient balance"}}', Fatal, None),
    (429, b'{"error": {"code": "1302", "message": "High concurrency"}}', Retryable, "cap"),
    (429, b'{"error": {"code": "1305", "message": "busy"}}', Retryable, "rate"),
    (400, b'{"error": {"code": "1301", "message": "unsafe"}}', Filtered, None),
    (400, b'{"error": {"code": "data_inspection_failed", "type": "data_inspection_failed"}}', Filtered, None),
    (400, b'{"error": {"code": "Arrearage", "message": "Access denied"}}', Fatal, None),
    (400, b'{"error": {"code": "context_length_exceeded", "message": "too long"}}', Rejected, None),
    (429, b'{"error": {"code": "rate_limit_exceeded", "message": "Request too large for gpt-4o"}}', Rejected, None),
    (429, b"<html>Too Many Requests</html>", Retryable, "rate"),
    (502, b"Bad Gateway", Retryable, None),
])
def test_what_an_error_answer_means_comes_from_its_code_first(status, body, kind, signal):
    err = http_error(status, {}, body, None, "http://x/v1")
    assert type(err) is kind, err
    if isinstance(err, Retryable):
        assert err.signal == signal
    if isinstance(err, Fatal):
        assert "then run the same command again to resume" in str(err) and "\n" not in str(err)


def test_the_error_table_follows_providers_md():
    fatal = ["1000", "1001", "1002", "1003", "1004", "1110", "1111", "1112", "1113", "1120", "1121", "1304", "1308",
             "1309", "1310", "1311", "1313"]
    assert all(rule_for(ZHIPU, c).action == "fatal" for c in fatal)
    assert [rule_for(ZHIPU, c).action for c in ("1301", "1300", "1302", "1303", "1305", "1312", "1261", "500")] == [
        "filter", "filter", "cap", "rate", "rate", "rate", "request", "retry"]
    assert rule_for(OPENAI, "insufficient_quota").action == "fatal"
    assert rule_for(None, "insufficient_quota").action == "fatal"  # no provider known: OpenAI's meaning
    assert rule_for(DASHSCOPE, "insufficient_quota", "You exceeded your current quota").action == "rate"
    assert rule_for(DASHSCOPE, "Throttling.AllocationQuota", "Free allocated quota exceeded.").action == "fatal"
    assert rule_for(DASHSCOPE, "InternalError.Algo.DataInspectionFailed").action == "filter"
    assert rule_for(DASHSCOPE, "InvalidParameter", "enable_thinking must be false").action == "fatal"
    assert rule_for(None, "nothing-known") is None
