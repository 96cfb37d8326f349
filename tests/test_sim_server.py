"""The chat-completions simulator over real HTTP on loopback.

Every test starts the server with ``run_server`` (or ``bin/sim-server`` in a
subprocess) and talks to it with aiohttp; requests are built by
``liveroom.prompts.stages`` from hand-made pitches, and replies are checked against
the heuristic and the stages' own parsers.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import orjson
import pytest

from liveroom.data.inputs import Item
from liveroom.data.moment import day_facts
from liveroom.data.personas import DEFAULT_PERSONAS, Persona
from liveroom.errors import LiveroomError
from liveroom.prompts.replies import ReplyError
from liveroom.prompts.stages import PROMPT_SETS, STAGES, TEXT_LIMIT, Pitch, build_request, reask_messages
from liveroom.sim.batch_jobs import Batch, BatchConfig, SimBatchAPI, process
from liveroom.sim.batch_server import BATCH_STATE
from liveroom.sim.batch_server import make_app as make_batch_app
from liveroom.sim.chat_server import run_server
from liveroom.sim.config import SimConfig
from liveroom.sim.heuristic import PROFILES, buy_scores, entry_score, read_score
from liveroom.sim.prompt import read_system
from liveroom.sim.server import main
from liveroom.sim.serving import serve

ROOT = Path(__file__).resolve().parent.parent

ITEMS = (Item(1, "保湿面霜 【大瓶装】", 199.0), Item(2, "洗脸巾", 9.9), Item(3, "按摩仪", 2999.0),
         Item(4, "旅行套装", 450.5))
PITCHES = (
    # Sunday 23:55: today a rest day, tomorrow a workday (the tomorrow sentence must not be read as today)
    Pitch(1, dt.datetime(2024, 1, 7, 23, 55), "周末好物分享", "保湿面霜", "今天优惠很大，包邮还送小样，限时秒杀！", ITEMS),
    # 03:10 on a swapped working Sunday (early-morning wording)
    Pitch(2, dt.datetime(2024, 2, 4, 3, 10), "深夜福利【清仓】", "洗脸巾", "这个价格不会涨价，但是很快售罄没货", ITEMS[:2]),
    # Tuesday office hours
    Pitch(3, dt.datetime(2024, 1, 9, 10, 0), "上午场", "按摩仪", "", ITEMS[2:]),
    # National Day holiday afternoon
    Pitch(4, dt.datetime(2024, 10, 3, 14, 30), "国庆特惠", "旅行套装", "划算" * 600, ITEMS[3:]),
    # Monday evening, workday; tomorrow a holiday
    Pitch(5, dt.datetime(2024, 9, 30, 21, 30), "晚间直播「好物」", "保湿面霜", "正品保证「」，买一赠一", ITEMS),
    # weekday evening
    Pitch(6, dt.datetime(2024, 1, 10, 19, 5), "晚上好", "洗脸巾", "贵是贵了点，不退不换", ITEMS[1:3]),
)
STRANGER = Persona("stranger", "星际访客", "100岁以上", "火星", "很高", "会飞")
PERSONAS = (*DEFAULT_PERSONAS, STRANGER)
assert STRANGER.key not in PROFILES


def expected(stage: str, pitch: Pitch, persona: Persona) -> dict:
    key = persona.key
    if stage == "entry":
        return {"entry": entry_score(key, pitch.start.hour, day_facts(pitch.start.date())[0])}
    if stage == "buy":
        scores = buy_scores(key, [it.price for it in pitch.items])
        return {"scores": scores, "state": sum(scores) / len(scores), "action": scores[0]}
    return {"read": read_score(key, pitch.text[:TEXT_LIMIT])}


def all_requests():
    """Every stage of every prompt set: the simulator reads each set's wording."""
    for stages in PROMPT_SETS.values():
        for pitch in PITCHES:
            for stage in stages.values():
                for persona in PERSONAS:
                    yield stage, pitch, persona, build_request(stage, pitch, persona)


def body(req, **extra) -> dict:
    return {"model": "test-model", "messages": req.messages, "temperature": 0.2, "max_tokens": 1000,
            "response_format": {"type": "json_object"}, **extra}


async def post(session, url, payload, path="/chat/completions", **kw):
    async with session.post(url + path, json=payload, **kw) as r:
        return r.status, dict(r.headers), await r.json(content_type=None)


async def stats(session, url) -> dict:
    async with session.get(url.removesuffix("/v1") + "/stats") as r:
        return await r.json()


def content(reply: dict) -> str:
    return reply["choices"][0]["message"]["content"]


REQ = build_request(STAGES["entry"], PITCHES[0], DEFAULT_PERSONAS[0])
BUY_REQ = build_request(STAGES["buy"], PITCHES[0], DEFAULT_PERSONAS[1])
READ_REQ = build_request(STAGES["read"], PITCHES[0], DEFAULT_PERSONAS[6])
ONE_OF_EACH = (REQ, BUY_REQ, READ_REQ)


# --------------------------------------------------------------------------- answers


async def test_every_stage_and_persona_answers_with_the_heuristic():
    cases = list(all_requests())
    async with run_server(SimConfig(seed=3)) as url, aiohttp.ClientSession() as s:
        replies = await asyncio.gather(*(post(s, url, body(req)) for *_, req in cases))
        st = await stats(s, url)
    for (stage, pitch, persona, req), (status, headers, reply) in zip(cases, replies):
        assert status == 200, reply
        assert headers["Content-Type"].startswith("application/json")
        got = stage.parse(content(reply), req.n_items)
        want = expected(stage.name, pitch, persona)
        assert {k: got[k] for k in want} == want, (stage.name, pitch.index, persona.key)
    # the envelope is a chat.completion
    _, _, reply = replies[0]
    assert reply["object"] == "chat.completion" and reply["id"] and isinstance(reply["created"], int)
    assert reply["model"] == "test-model"
    choice = reply["choices"][0]
    assert choice["finish_reason"] == "stop" and choice["message"]["role"] == "assistant"
    usage = reply["usage"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"] > 0
    assert st["requests"] == len(cases) and st["replies"] == {"200": len(cases)}
    assert st["stages"] == {"entry": len(cases) // 3, "buy": len(cases) // 3, "read": len(cases) // 3}
    assert st["duplicates"] == 0 and st["faults"] == {}


@pytest.mark.parametrize("prompts", list(PROMPT_SETS))
def test_the_moment_is_read_for_today_only(prompts):
    def system(when):
        entry = PROMPT_SETS[prompts]["entry"]
        return build_request(entry, Pitch(0, when, "t", "p", "x"), DEFAULT_PERSONAS[2]).messages[0]["content"]

    assert read_system(system(dt.datetime(2024, 1, 7, 23, 55))) == ("new_white", 23, False)  # tomorrow is a workday
    assert read_system(system(dt.datetime(2024, 9, 30, 21, 30))) == ("new_white", 21, True)  # tomorrow a holiday
    assert read_system(system(dt.datetime(2024, 2, 4, 3, 10))) == ("new_white", 3, True)  # early morning, swapped day
    assert read_system(system(dt.datetime(2024, 10, 3, 5, 59))) == ("new_white", 5, False)


async def test_response_format_variants_and_bare_path_give_the_same_json():
    async with run_server(SimConfig()) as url, aiohttp.ClientSession() as s:
        for req in ONE_OF_EACH:
            schema = {"type": "json_schema", "json_schema": {"name": req.stage, "schema": req.schema, "strict": True}}
            variants = [body(req), body(req, response_format=schema), {"messages": req.messages}]
            texts = set()
            for payload in variants:
                status, _, reply = await post(s, url, payload)
                assert status == 200
                texts.add(content(reply))
            bare = url.removesuffix("/v1")
            status, _, reply = await post(s, bare, body(req))
            assert status == 200
            texts.add(content(reply))
            assert len(texts) == 1
            STAGES[req.stage].parse(texts.pop(), req.n_items)
        async with s.get(url + "/models") as r:
            assert (await r.json())["data"][0]["id"] == "liveroom-sim"
        async with s.get(url.removesuffix("/v1") + "/health") as r:
            assert r.status == 200 and (await r.json())["status"] == "ok"


async def test_reask_is_answered_from_the_first_user_message():
    async with run_server(SimConfig()) as url, aiohttp.ClientSession() as s:
        for req in ONE_OF_EACH:
            _, _, first = await post(s, url, body(req))
            convo = reask_messages(req.messages, "我觉得还行", "no JSON object found in the reply")
            status, _, again = await post(s, url, body(req, messages=convo))
            assert status == 200
            parse = STAGES[req.stage].parse
            assert parse(content(again), req.n_items) == parse(content(first), req.n_items)
        st = await stats(s, url)
    assert st["reasks"] == 3 and st["duplicates"] == 0


async def test_a_batch_line_is_answered_as_the_same_chat_request():
    lines = [{"custom_id": r.id, "method": "POST", "url": "/v1/chat/completions", "body": body(r)}
             for r in ONE_OF_EACH]
    out, err = process(SimBatchAPI(BatchConfig(sim=SimConfig(seed=3))), Batch({"id": "batch-1"}, lines, []), 3)
    async with run_server(SimConfig(seed=3)) as url, aiohttp.ClientSession() as s:
        direct = [(await post(s, url, body(req)))[2] for req in ONE_OF_EACH]
    assert not err and len(out) == 3
    for line, reply in zip(out, direct):
        got = orjson.loads(line)["response"]["body"]
        assert content(got) == content(reply) and got["usage"] == reply["usage"] and got["model"] == reply["model"]


# --------------------------------------------------------------------------- faults


@pytest.mark.parametrize("retry_after, header, ms", [(2, "2", "2000"), (0.25, "0.25", "250")])
async def test_injected_429_carries_retry_after_headers(retry_after, header, ms):
    async with run_server(SimConfig(fail_first=1, fail_first_kind="429", retry_after=retry_after)) as url, \
            aiohttp.ClientSession() as s:
        status, headers, reply = await post(s, url, body(REQ))
        assert status == 429
        assert headers["Retry-After"] == header and headers["retry-after-ms"] == ms
        assert reply["error"]["code"] == "rate_limit_exceeded"
        status, _, _ = await post(s, url, body(REQ))
        assert status == 200
        st = await stats(s, url)
    assert st["faults"] == {"429": 1} and st["replies"] == {"429": 1, "200": 1}


@pytest.mark.parametrize("kind, status, code", [
    ("500", 500, None), ("503", 503, "service_unavailable"), ("quota", 429, "insufficient_quota"),
])
async def test_injected_http_errors(kind, status, code):
    async with run_server(SimConfig(fail_first=1, fail_first_kind=kind)) as url, aiohttp.ClientSession() as s:
        got, headers, reply = await post(s, url, body(REQ))
        assert got == status
        assert reply["error"]["code"] == code and reply["error"]["message"]
        if kind == "quota":
            assert reply["error"]["type"] == "insufficient_quota" and "Retry-After" not in headers
        else:
            assert reply["error"]["type"] == "server_error"
        assert (await post(s, url, body(REQ)))[0] == 200


async def test_injected_reset_is_a_disconnect():
    async with run_server(SimConfig(fail_first=2, fail_first_kind="reset")) as url, aiohttp.ClientSession() as s:
        for _ in range(2):
            with pytest.raises(aiohttp.ClientConnectionError):
                await post(s, url, body(REQ))
        assert (await post(s, url, body(REQ)))[0] == 200
        st = await stats(s, url)
    assert st["faults"] == {"reset": 2} and st["replies"] == {"200": 1}


async def test_injected_slow_reply_trips_a_client_timeout():
    async with run_server(SimConfig(fail_first=2, fail_first_kind="slow", slow_ms=400)) as url, \
            aiohttp.ClientSession() as s:
        with pytest.raises(asyncio.TimeoutError):  # the client gave up before the reply came
            await post(s, url, body(REQ), timeout=aiohttp.ClientTimeout(total=0.1))
        t = time.monotonic()
        status, _, reply = await post(s, url, body(REQ))  # slow but correct
        assert status == 200 and time.monotonic() - t >= 0.38
        assert STAGES["entry"].parse(content(reply), 0) == expected("entry", PITCHES[0], DEFAULT_PERSONAS[0])


@pytest.mark.parametrize("kind", ["nonjson", "fenced", "out_of_range", "wrong_key"])
async def test_injected_content_faults(kind):
    async with run_server(SimConfig(fail_first=3, fail_first_kind=kind)) as url, aiohttp.ClientSession() as s:
        for req, (stage, pitch, persona) in zip(ONE_OF_EACH, [
            ("entry", PITCHES[0], DEFAULT_PERSONAS[0]), ("buy", PITCHES[0], DEFAULT_PERSONAS[1]),
            ("read", PITCHES[0], DEFAULT_PERSONAS[6]),
        ]):
            status, _, reply = await post(s, url, body(req))
            assert status == 200 and reply["choices"][0]["finish_reason"] == "stop"
            text = content(reply)
            parse = STAGES[stage].parse
            if kind == "fenced":
                assert text.count("```") == 2 and not text.lstrip().startswith("{")
                assert parse(text, req.n_items) == expected(stage, pitch, persona)
                continue
            if kind == "nonjson":
                assert "{" not in text and "[" not in text
            if kind == "out_of_range":
                assert "7" in text
            with pytest.raises(ReplyError, match={"nonjson": "no JSON", "out_of_range": "got 7",
                                                  "wrong_key": "missing key"}[kind]):
                parse(text, req.n_items)
        st = await stats(s, url)
    assert st["faults"] == {kind: 3} and st["replies"] == {"200": 3}


FAULTY = dict(p_429=0.1, p_500=0.1, p_503=0.1, p_nonjson=0.1, p_fenced=0.1, p_out_of_range=0.1,
              p_wrong_key=0.1, p_quota=0.05)


async def _run_sequence(config: SimConfig, requests) -> list[tuple[int, str]]:
    out = []
    async with run_server(config) as url, aiohttp.ClientSession() as s:
        for req in requests:
            status, _, reply = await post(s, url, body(req))
            out.append((status, content(reply) if status == 200 else reply["error"]["code"]))
        st = await stats(s, url)
    f = st["faults"]
    for status, n in ((429, f.get("429", 0) + f.get("quota", 0)), (500, f.get("500", 0)), (503, f.get("503", 0))):
        assert sum(1 for got, _ in out if got == status) == n
    return out


async def test_faults_are_reproducible_for_a_seed():
    reqs = [req for *_, req in all_requests()][:120]
    a = await _run_sequence(SimConfig(seed=11, **FAULTY), reqs)
    b = await _run_sequence(SimConfig(seed=11, **FAULTY), reqs)
    c = await _run_sequence(SimConfig(seed=12, **FAULTY), reqs)
    assert a == b
    assert a != c
    errors = sum(1 for status, _ in a if status != 200)
    assert 0.1 * len(a) < errors < 0.55 * len(a)  # 0.35 expected
    # scores never depend on the seed
    plain = await _run_sequence(SimConfig(seed=11), reqs[:12])
    other = await _run_sequence(SimConfig(seed=99), reqs[:12])
    for req, (_, x), (_, y) in zip(reqs, plain, other):
        parse = STAGES[req.stage].parse
        assert parse(x, req.n_items) == parse(y, req.n_items)


async def test_a_retry_gets_a_fresh_draw():
    async with run_server(SimConfig(seed=5, p_500=0.6)) as url, aiohttp.ClientSession() as s:
        statuses = [(await post(s, url, body(REQ)))[0] for _ in range(30)]
    assert 500 in statuses and 200 in statuses


# --------------------------------------------------------------------------- protocol


async def test_api_key_is_required_when_set():
    key = "sk-sim-secret-123"
    async with run_server(SimConfig(api_key=key)) as url, aiohttp.ClientSession() as s:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": key}):
            status, _, reply = await post(s, url, body(REQ), headers=headers)
            assert status == 401
            assert reply == {"error": {"message": "Incorrect API key provided", "type": "invalid_request_error",
                                       "param": None, "code": "invalid_api_key"}}
        async with s.get(url + "/models") as r:
            assert r.status == 401
        good = {"Authorization": f"Bearer {key}"}
        assert (await post(s, url, body(REQ), headers=good))[0] == 200
        async with s.get(url + "/models", headers=good) as r:
            assert r.status == 200
        st = await stats(s, url)
    assert st["replies"] == {"401": 3, "200": 1}
    assert key not in repr(SimConfig(api_key=key))


async def test_the_batch_routes_refuse_a_wrong_key_as_the_chat_route_does():
    key = "sk-sim-secret-123"
    app = make_batch_app(BatchConfig(sim=SimConfig(api_key=key)))
    async with serve(app, "127.0.0.1", 0) as url, aiohttp.ClientSession() as s:
        _, _, chat = await post(s, url, body(REQ))
        async with s.get(url + "/batches", headers={"Authorization": "Bearer wrong"}) as r:
            assert r.status == 401 and await r.json() == chat
        async with s.get(url + "/batches", headers={"Authorization": f"Bearer {key}"}) as r:
            assert r.status == 200
        async with s.get(url.removesuffix("/v1") + "/batch-stats") as r:
            assert r.status == 200
        async with s.get(url + "/nowhere") as r:
            assert r.status == 404
    assert app[BATCH_STATE].stats()["unauthorized"] == 1 and app[BATCH_STATE].stats()["api_calls"] == 2


async def test_bad_requests_get_400():
    async with run_server(SimConfig()) as url, aiohttp.ClientSession() as s:
        cases = [
            b"not json", b"[1, 2]", b"{}", b'{"messages": []}', b'{"messages": "hi"}',
            b'{"messages": [{"role": "user", "content": "hello"}]}',
            b'{"messages": [{"role": "system", "content": "x"}]}',
        ]
        for raw in cases:
            async with s.post(url + "/chat/completions", data=raw,
                              headers={"Content-Type": "application/json"}) as r:
                assert r.status == 400, raw
                err = (await r.json())["error"]
                assert err["type"] == "invalid_request_error" and err["message"]
        status, _, reply = await post(s, url, body(REQ, response_format={"type": "yaml"}))
        assert status == 400 and reply["error"]["param"] == "response_format"
        st = await stats(s, url)
    assert st["replies"] == {"400": len(cases) + 1} and st["requests"] == len(cases) + 1


async def test_stats_count_duplicates_and_tokens():
    a, b = REQ, BUY_REQ
    began = time.time()
    async with run_server(SimConfig(fail_first=1, fail_first_kind="503")) as url, aiohttp.ClientSession() as s:
        results = [await post(s, url, body(r)) for r in (a, a, b, a, b, READ_REQ)]
        st = await stats(s, url)
    assert [r[0] for r in results] == [503, 200, 200, 200, 200, 200]
    # the 503 does not make the next 'a' a duplicate; the third 'a' and the second 'b' are
    assert st["duplicates"] == 2
    assert st["replies"] == {"503": 1, "200": 5} and st["faults"] == {"503": 1}
    assert st["prompt_tokens"] == sum(r[2]["usage"]["prompt_tokens"] for r in results[1:])
    assert st["completion_tokens"] == sum(r[2]["usage"]["completion_tokens"] for r in results[1:])
    assert sum(n for _, n in st["per_second"]) == 6
    assert all(int(began) <= sec <= time.time() for sec, _ in st["per_second"])  # Unix seconds, while it ran


async def test_rpm_limit_refuses_the_excess_with_retry_after():
    async with run_server(SimConfig(rpm_limit=5)) as url, aiohttp.ClientSession() as s:
        results = [await post(s, url, body(r)) for r in [REQ, BUY_REQ, READ_REQ, REQ, BUY_REQ, READ_REQ, REQ]]
        st = await stats(s, url)
    assert [r[0] for r in results] == [200] * 5 + [429] * 2
    _, headers, reply = results[5]
    assert 1 <= int(headers["Retry-After"]) <= 60 and int(headers["retry-after-ms"]) > 0
    assert reply["error"]["code"] == "rate_limit_exceeded"
    assert st["rate_limited"] == 2 and st["faults"] == {}


async def test_latency_is_concurrent():
    n = 256
    async with run_server(SimConfig(latency_ms=200)) as url, \
            aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as s:
        t = time.monotonic()
        results = await asyncio.gather(*(post(s, url, body(REQ)) for _ in range(n)))
        wall = time.monotonic() - t
        st = await stats(s, url)
    assert all(r[0] == 200 for r in results)
    assert 0.2 <= wall, wall
    assert st["max_in_flight"] > n // 2 and st["in_flight"] == 0  # concurrent: over half of them at once


async def test_jitter_spreads_latency():
    async with run_server(SimConfig(latency_ms=60, jitter_ms=50, seed=2)) as url, aiohttp.ClientSession() as s:
        times = []
        for req in ONE_OF_EACH * 3:
            t = time.monotonic()
            await post(s, url, body(req))
            times.append(time.monotonic() - t)
    assert min(times) >= 0.009 and max(times) - min(times) > 0.01


def test_invalid_settings_are_user_errors(capsys):
    with pytest.raises(LiveroomError, match="sum to at most 1"):
        SimConfig(p_500=0.7, p_503=0.5).validate()
    with pytest.raises(SystemExit) as e:  # refused as it is parsed: argparse's one line naming the flag
        main(["--p-reset", "1.5"])
    assert e.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1] == ("sim-server: error: argument --p-reset: must be a number "
                                                        "in [0, 1], got '1.5'")
    with pytest.raises(LiveroomError, match="--p-reset"):  # and by the config, for a caller without flags
        SimConfig(p_reset=1.5).validate()
    with pytest.raises(LiveroomError, match="--fail-first-kind"):
        main(["--fail-first", "1", "--fail-first-kind", "boom"])


def test_command_prints_its_url_and_stops_on_sigterm():
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "bin" / "sim-server"), "--host", "127.0.0.1", "--port", "0", "--seed", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        line = proc.stdout.readline().strip()
        assert line.startswith("listening on http://127.0.0.1:") and line.endswith("/v1"), line
        url = line.removeprefix("listening on ")

        async def check():
            async with aiohttp.ClientSession() as s:
                status, _, reply = await post(s, url, body(READ_REQ))
                assert status == 200
                assert STAGES["read"].parse(content(reply), 0) == expected("read", PITCHES[0], DEFAULT_PERSONAS[6])

        asyncio.run(check())
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
        assert proc.stderr.read() == ""
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_help_says_it_is_not_a_language_model(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "heuristic" in out and "not a language model" in out
