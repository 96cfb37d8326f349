"""The simulator's provider profiles and limits over real HTTP on loopback.

Each profile's documented error bodies (docs/PROVIDERS.md) for each fault,
the in-flight cap, arrears after K answers, the content-filter share,
``<think>`` and null-content replies, and OpenAI's rate-limit headers. The
expected codes are written out here, not read from liveroom.sim.profiles, so
that the tests check the table against the documentation.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import re
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import orjson
import pytest

from liveroom.data.inputs import Item
from liveroom.data.personas import DEFAULT_PERSONAS
from liveroom.errors import LiveroomError
from liveroom.prompts.stages import STAGES, Pitch, build_request
from liveroom.sim.chat_server import run_server
from liveroom.sim.completion import prompt_tokens
from liveroom.sim.config import SimConfig
from liveroom.sim.faults import duration
from liveroom.sim.profiles import KINDS, PROFILES
from liveroom.sim.server import main

ROOT = Path(__file__).resolve().parent.parent
ITEMS = (Item(1, "保湿面霜", 199.0), Item(2, "洗脸巾", 9.9))
PITCHES = tuple(Pitch(i, dt.datetime(2024, 1, 1 + i % 28, i % 24, 5), f"直播{i}", "面霜", "今天包邮" * (i % 3), ITEMS)
                for i in range(12))
REQS = [build_request(STAGES[stage], p, persona) for p in PITCHES for stage in ("entry", "buy", "read")
        for persona in DEFAULT_PERSONAS[:3]]
REQ = REQS[0]
THINK = re.compile(r"^\s*<think>(.*?)</think>\s*", re.S)
DURATION = re.compile(r"^(\d+ms|(\d+h)?(\d+m)?\d+(\.\d+)?s)$")

#: (HTTP status, error.code) each provider documents for each kind; None: a 200 (PROVIDERS.md 1.1-1.3)
EXPECTED = {
    "openai": {"429": (429, "rate_limit_exceeded"), "rate_limit": (429, "rate_limit_exceeded"),
               "token_limit": (429, "rate_limit_exceeded"), "cap": (429, "rate_limit_exceeded"),
               "quota": (429, "insufficient_quota"), "arrears": (429, "insufficient_quota"),
               "auth": (401, "invalid_api_key"), "auth_missing": (401, "invalid_api_key"), "content_filter": None,
               "500": (500, None), "503": (503, "service_unavailable")},
    "zhipu": {"429": (429, "1305"), "rate_limit": (429, "1303"), "token_limit": (429, "1303"), "cap": (429, "1302"),
              "quota": (429, "1308"), "arrears": (429, "1113"), "auth": (401, "1002"), "auth_missing": (401, "1001"),
              "content_filter": (400, "1301"), "500": (500, "500"), "503": (503, "500")},
    "dashscope": {"429": (429, "Throttling.RateQuota"), "rate_limit": (429, "Throttling.RateQuota"),
                  "token_limit": (429, "insufficient_quota"), "cap": (429, "Throttling.RateQuota"),
                  "quota": (429, "Throttling.AllocationQuota"), "arrears": (400, "Arrearage"),
                  "auth": (401, "invalid_api_key"), "auth_missing": (401, "invalid_api_key"),
                  "content_filter": (400, "data_inspection_failed"), "500": (500, "InternalError"),
                  "503": (503, "ServiceUnavailable")},
}


def body(req, **extra) -> dict:
    return {"model": "test-model", "messages": req.messages, "max_tokens": 1000,
            "response_format": {"type": "json_object"}, **extra}


async def post(session, url, payload, **kw):
    async with session.post(url + "/chat/completions", json=payload, **kw) as r:
        return r.status, dict(r.headers), await r.json(content_type=None)


async def stats(session, url) -> dict:
    async with session.get(url.removesuffix("/v1") + "/stats") as r:
        return await r.json()


def seconds(text: str) -> float:
    """A reset header's duration in seconds (``6m0s``, ``20ms``)."""
    units = {"h": 3600, "m": 60, "s": 1, "ms": 0.001}
    return sum(float(n) * units[u] for n, u in re.findall(r"([\d.]+)(ms|h|m|s)", text))


def message(reply: dict) -> dict:
    return reply["choices"][0]["message"]


def session():
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))


# --------------------------------------------------------------------------- each profile, each fault


def _config(profile: str, kind: str) -> SimConfig:
    if kind in ("429", "quota", "500", "503", "content_filter"):
        return SimConfig(profile=profile, fail_first=1, fail_first_kind=kind)
    return {
        "rate_limit": SimConfig(profile=profile, rpm_limit=1),
        "token_limit": SimConfig(profile=profile, tpm_limit=prompt_tokens(REQ.messages) + 1),
        "cap": SimConfig(profile=profile, max_inflight=1, latency_ms=300),
        "arrears": SimConfig(profile=profile, arrears_after=0),
        "auth": SimConfig(profile=profile, api_key="right"),
        "auth_missing": SimConfig(profile=profile, api_key="right"),
    }[kind]


async def _provoke(profile: str, kind: str) -> tuple[int, dict, dict, dict]:
    """(status, headers, body) of the reply that shows ``kind``, and /stats after it."""
    async with run_server(_config(profile, kind)) as url, session() as s:
        if kind in ("rate_limit", "token_limit"):
            assert (await post(s, url, body(REQ)))[0] == 200
        if kind == "cap":
            got = await asyncio.gather(post(s, url, body(REQ)), post(s, url, body(REQS[1])))
            got.sort(key=lambda r: r[0] == 200)  # the refused one first
        else:
            auth = {"auth": {"Authorization": "Bearer wrong"}, "auth_missing": {}}.get(kind, {})
            got = [await post(s, url, body(REQ), headers=auth)]
        return (*got[0], await stats(s, url))


@pytest.mark.parametrize("profile", tuple(EXPECTED))
@pytest.mark.parametrize("kind", KINDS)
async def test_each_profile_answers_each_fault_as_documented(profile, kind):
    status, headers, reply, st = await _provoke(profile, kind)
    want = EXPECTED[profile][kind]
    if want is None:  # OpenAI's content filter: a 200 without content
        assert status == 200 and message(reply)["content"] is None
        assert reply["choices"][0]["finish_reason"] == "content_filter"
        return
    assert (status, reply["error"]["code"]) == want, reply
    err = reply["error"]
    assert isinstance(err["message"], str) and err["message"] and "{" not in err["message"]
    if profile == "zhipu":
        assert set(err) == {"code", "message"} and reply["request_id"]
    elif profile == "dashscope":
        assert err["type"] == err["code"] and err["param"] is None and reply["id"].startswith("chatcmpl-")
        assert reply["request_id"]
    else:
        assert set(err) == {"message", "type", "param", "code"} and set(reply) == {"error"}
    assert st["error_codes"][str(status)] == {str(err["code"] or err["type"]): 1}
    if kind in ("429", "rate_limit", "token_limit"):
        assert float(headers["Retry-After"]) > 0 and int(headers["retry-after-ms"]) > 0
    else:
        assert "Retry-After" not in headers and "retry-after-ms" not in headers


def test_every_profile_has_every_kind():
    assert all(set(p.answers) == set(KINDS) for p in PROFILES.values())
    assert set(PROFILES) == set(EXPECTED)


# --------------------------------------------------------------------------- the in-flight cap


@pytest.mark.parametrize("profile, cap_code, code", [
    ("zhipu", "profile", "1302"), ("openai", "profile", "rate_limit_exceeded"),
    ("dashscope", "profile", "Throttling.RateQuota"), ("zhipu", "none", "rate_limit_exceeded"),
])
async def test_beyond_n_in_flight_exactly_the_excess_gets_the_cap_answer(profile, cap_code, code):
    n = 8
    async with run_server(SimConfig(profile=profile, max_inflight=n, cap_code=cap_code, latency_ms=500)) as url, \
            session() as s:
        got = await asyncio.gather(*(post(s, url, body(r)) for r in REQS[:n + 5]))
        refused = [r for r in got if r[0] != 200]
        assert len(refused) == 5 and sum(r[0] == 200 for r in got) == n
        for status, headers, reply in refused:
            assert status == 429 and reply["error"]["code"] == code and "Retry-After" not in headers
            if cap_code == "none":  # OpenAI's body, whatever the profile: no provider code
                assert reply == {"error": {**reply["error"], "type": "requests", "param": None}}
        again = await asyncio.gather(*(post(s, url, body(r)) for r in REQS[:n]))  # the slots are free again
        st = await stats(s, url)
    assert all(r[0] == 200 for r in again)
    assert st["capped"] == 5 and st["max_in_flight"] == n and st["in_flight"] == 0
    assert st["error_codes"] == {"429": {code: 5}} and st["answered"] == 2 * n


# --------------------------------------------------------------------------- arrears


@pytest.mark.parametrize("profile, status, code", [
    ("zhipu", 429, "1113"), ("dashscope", 400, "Arrearage"), ("openai", 429, "insufficient_quota"),
])
async def test_after_k_answers_every_answer_is_the_arrears_error(profile, status, code):
    began = time.time()
    async with run_server(SimConfig(profile=profile, arrears_after=5)) as url, session() as s:
        got = [await post(s, url, body(r)) for r in REQS[:9]]
        st = await stats(s, url)
    assert [r[0] for r in got] == [200] * 5 + [status] * 4
    assert all(r[2]["error"]["code"] == code for r in got[5:])
    assert st["answered"] == 5 and st["arrears_start_request"] == 6 and st["requests_after_arrears"] == 3
    assert began <= st["arrears_started_at"] <= time.time()  # Unix seconds, while it ran
    assert st["error_codes"] == {str(status): {code: 4}}


async def test_arrears_reach_requests_already_in_flight():
    async with run_server(SimConfig(profile="zhipu", arrears_after=3, latency_ms=300)) as url, session() as s:
        got = await asyncio.gather(*(post(s, url, body(r)) for r in REQS[:7]))
        st = await stats(s, url)
    assert sum(r[0] == 200 for r in got) == 3 and st["answered"] == 3
    assert sorted(r[2]["error"]["code"] for r in got if r[0] != 200) == ["1113"] * 4
    assert st["arrears_start_request"] == 7 and st["requests_after_arrears"] == 0


async def test_no_arrears_without_the_flag():
    async with run_server(SimConfig(profile="zhipu")) as url, session() as s:
        got = [await post(s, url, body(r)) for r in REQS[:6]]
        st = await stats(s, url)
    assert all(r[0] == 200 for r in got)
    assert st["arrears_started_at"] is None and st["requests_after_arrears"] == 0 and st["answered"] == 6


# --------------------------------------------------------------------------- content filter, reasoning replies


@pytest.mark.parametrize("profile", ["zhipu", "openai"])
async def test_content_filter_share(profile):
    async with run_server(SimConfig(profile=profile, p_content_filter=0.3, seed=4)) as url, session() as s:
        got = [await post(s, url, body(r)) for r in REQS]
        st = await stats(s, url)
    if profile == "zhipu":
        filtered = [r for r in got if r[0] == 400]
        assert all(r[2]["error"]["code"] == "1301" for r in filtered)
    else:
        filtered = [r for r in got if r[0] == 200 and r[2]["choices"][0]["finish_reason"] == "content_filter"]
        assert all(message(r[2])["content"] is None for r in filtered)
    assert len(filtered) == st["faults"]["content_filter"]
    assert 0.18 * len(REQS) < len(filtered) < 0.42 * len(REQS)
    assert all(r[0] == 200 and message(r[2])["content"] for r in got if r not in filtered)


async def test_think_replies_parse_after_stripping_the_think_block():
    async with run_server(SimConfig(p_think=1.0, seed=2)) as url, run_server(SimConfig(seed=2)) as plain, \
            session() as s:
        for req in REQS[:9]:
            status, _, reply = await post(s, url, body(req))
            assert status == 200 and reply["choices"][0]["finish_reason"] == "stop"
            text = message(reply)["content"]
            m = THINK.match(text)
            assert m and text.startswith("<think>")
            inner = m.group(1)
            orjson.loads(inner[inner.index("{"):inner.rindex("}") + 1])  # it holds JSON-looking text
            stripped = text[m.end():]
            want = message((await post(s, plain, body(req)))[2])["content"]
            assert stripped == want
            STAGES[req.stage].parse(stripped, req.n_items)  # a valid reply
            assert reply["usage"]["completion_tokens"] > len(want) // 2
        st = await stats(s, url)
    assert st["faults"] == {"think": 9}


async def test_null_content_replies_spent_max_tokens_thinking():
    async with run_server(SimConfig(fail_first=2, fail_first_kind="null_content")) as url, session() as s:
        first = await post(s, url, body(REQ, max_tokens=321))
        second = await post(s, url, {**body(REQ), "max_completion_tokens": 77})
        third = await post(s, url, body(REQ))
        st = await stats(s, url)
    for (status, _, reply), used in ((first, 321), (second, 77)):
        choice = reply["choices"][0]
        assert status == 200 and choice["finish_reason"] == "length"
        assert choice["message"]["content"] is None and choice["message"]["reasoning_content"]
        assert reply["usage"]["completion_tokens"] == used
        assert reply["usage"]["completion_tokens_details"] == {"reasoning_tokens": used}
    assert third[0] == 200 and message(third[2])["content"] and "reasoning_content" not in message(third[2])
    assert st["faults"] == {"null_content": 2} and st["answered"] == 3


# --------------------------------------------------------------------------- headers


def test_reset_durations_are_written_as_openai_does():
    assert [duration(s) for s in (0, 0.0001, 0.02, 0.999, 1, 1.5, 59.9954, 360, 3600, 3723.25)] == [
        "0s", "1ms", "20ms", "999ms", "1s", "1.5s", "59.996s", "6m0s", "1h0m0s", "1h2m3.25s"]


async def test_ratelimit_headers_follow_the_windows():
    tpm = 100_000
    async with run_server(SimConfig(rpm_limit=3, tpm_limit=tpm, ratelimit_headers=True)) as url, session() as s:
        got = [await post(s, url, body(r)) for r in REQS[:4]]
        st = await stats(s, url)
    for i, (status, headers, _) in enumerate(got[:3]):
        assert status == 200
        assert headers["x-ratelimit-limit-requests"] == "3" and headers["x-ratelimit-limit-tokens"] == str(tpm)
        assert headers["x-ratelimit-remaining-requests"] == str(2 - i)
        assert int(headers["x-ratelimit-remaining-tokens"]) < tpm
        for h in ("x-ratelimit-reset-requests", "x-ratelimit-reset-tokens"):
            assert DURATION.match(headers[h]), headers[h]
            assert 59 <= seconds(headers[h]) <= 60
    status, headers, reply = got[3]
    assert status == 429 and reply["error"]["code"] == "rate_limit_exceeded"
    assert headers["x-ratelimit-remaining-requests"] == "0" and 1 <= int(headers["Retry-After"]) <= 60
    used = st["prompt_tokens"] + st["completion_tokens"]
    assert int(got[2][1]["x-ratelimit-remaining-tokens"]) == tpm - used
    assert st["rate_limited"] == 1 and st["per_second_answered"][-1][1] <= 3
    assert sum(n for _, n in st["per_second_answered"]) == st["answered"] == 3


async def test_no_ratelimit_headers_unless_asked():
    async with run_server(SimConfig(rpm_limit=3)) as url, session() as s:
        _, headers, _ = await post(s, url, body(REQ))
    assert not any(h.lower().startswith("x-ratelimit") for h in headers)


async def test_tpm_limit_refuses_with_the_token_message():
    limit = prompt_tokens(REQ.messages) * 2
    async with run_server(SimConfig(tpm_limit=limit)) as url, session() as s:
        got = [await post(s, url, body(REQ)) for _ in range(3)]
        st = await stats(s, url)
    assert got[0][0] == 200 and got[-1][0] == 429
    err = got[-1][2]["error"]
    assert err["type"] == "tokens" and f"Limit {limit}" in err["message"] and "test-model" in err["message"]
    assert st["token_limited"] >= 1


@pytest.mark.parametrize("after, ms, header", [(1, 250, "250"), (2, None, "2000")])
async def test_retry_after_ms_can_differ_from_retry_after(after, ms, header):
    async with run_server(SimConfig(fail_first=1, fail_first_kind="429", retry_after=after,
                                    retry_after_ms=ms)) as url, session() as s:
        status, headers, _ = await post(s, url, body(REQ))
    assert status == 429 and headers["Retry-After"] == str(after) and headers["retry-after-ms"] == header


# --------------------------------------------------------------------------- the command


def test_invalid_limits_are_user_errors(capsys):
    with pytest.raises(LiveroomError, match="--ratelimit-headers needs"):
        SimConfig(ratelimit_headers=True).validate()
    with pytest.raises(LiveroomError, match="--arrears-after"):
        SimConfig(arrears_after=-1).validate()
    with pytest.raises(SystemExit) as exit_:  # argparse's one line naming the flag
        main(["--max-inflight", "-2"])
    assert exit_.value.code == 2 and "argument --max-inflight: must be a whole number of at least 0" in \
        capsys.readouterr().err
    with pytest.raises(LiveroomError, match="--profile"):
        SimConfig(profile="acme").validate()
    with pytest.raises(SystemExit):
        main(["--cap-code", "1302"])


def test_the_command_serves_a_profile_with_cap_and_arrears():
    proc = subprocess.Popen([sys.executable, str(ROOT / "bin" / "sim-server"), "--port", "0", "--profile", "zhipu",
                             "--max-inflight", "2", "--latency-ms", "400", "--arrears-after", "4"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert line.startswith("listening on "), line
        url = line.split()[-1]

        async def check():
            async with session() as s:
                burst = await asyncio.gather(*(post(s, url, body(r)) for r in REQS[:4]))
                assert sorted(r[0] for r in burst) == [200, 200, 429, 429]
                assert {r[2]["error"]["code"] for r in burst if r[0] == 429} == {"1302"}
                seq = [await post(s, url, body(r)) for r in REQS[4:8]]
                assert [r[0] for r in seq] == [200, 200, 429, 429]
                assert {r[2]["error"]["code"] for r in seq[2:]} == {"1113"}
                return await stats(s, url)

        st = asyncio.run(check())
        assert st["error_codes"] == {"429": {"1302": 2, "1113": 2}} and st["capped"] == 2
        assert st["answered"] == 4 and st["arrears_start_request"] == 7 and st["requests_after_arrears"] == 1
    finally:
        proc.terminate()
        proc.wait(timeout=10)
