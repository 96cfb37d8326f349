"""The retry policy and the engine's loop, against an in-process aiohttp server.

The policy's rules alone are driven by real tenacity over real errors (as
:func:`~liveroom.async_client.transport.http_error` makes them from an answer),
their waits recorded instead of slept. The server answers by the job's one
message: ``ok``, ``bad`` (unusable until asked again), ``always-bad``,
``reject`` (400), ``busy`` (503), ``nokey`` (401).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson
import pytest
from aiohttp import web

from kit import before_timer
from liveroom.async_client.chat import ChatClient
from liveroom.async_client.engine import Engine, EngineConfig, Job
from liveroom.async_client.errors import Fatal, Rejected, Retryable, UnusableReply
from liveroom.async_client.limits import CoolDown, Limits
from liveroom.async_client.policy import MAX_PAUSE, MAX_WAIT, Failure, RetryPolicy, retry_policy
from liveroom.async_client.run_dir import RunDir
from liveroom.async_client.transport import http_error


def completion(text: str) -> dict[str, Any]:
    return {"model": "m", "choices": [{"message": {"content": text}}],
            "usage": {"prompt_tokens": 2, "completion_tokens": 3, "total_tokens": 5}}


async def chat_server(aiohttp_server, hits: list[str]) -> str:
    async def handler(request: web.Request) -> web.Response:
        body = await request.json()
        what = body["messages"][0]["content"]
        hits.append(what)
        if what == "reject":
            return web.json_response({"error": {"message": "no such model"}}, status=400)
        if what == "busy":
            return web.Response(status=503, text="busy")
        if what == "nokey":
            return web.json_response({"error": {"message": "bad key"}}, status=401)
        asked_again = len(body["messages"]) > 1
        good = what == "ok" or (what == "bad" and asked_again)
        return web.json_response(completion('{"v": 1}' if good else "garbage"))

    app = web.Application()
    app.router.add_post("/v1/chat/completions", handler)
    return str((await aiohttp_server(app)).make_url("/v1"))


# ----------------------------------------------------------------------------- the policy alone

async def test_retry_after_is_honoured_over_the_backoff(aiohttp_server):
    hits: list[float] = []

    async def handler(request: web.Request) -> web.Response:
        hits.append(time.monotonic())
        if len(hits) == 1:
            return web.Response(status=429, text="wait", headers={"Retry-After": "0.3"})
        return web.json_response(completion("fine"))

    app = web.Application()
    app.router.add_post("/v1/chat/completions", handler)
    url = str((await aiohttp_server(app)).make_url("/v1"))

    async def call() -> str:
        async with ChatClient(url, None, 5, 2) as client:
            async for attempt in retry_policy(3, initial=30.0, maximum=60.0):  # the backoff alone would wait 30 s
                with attempt:
                    return (await client.complete({"messages": []})).text
        raise AssertionError("unreachable")

    assert await before_timer(15, call()) == "fine"  # half what the backoff alone would wait
    assert len(hits) == 2 and 0.28 <= hits[1] - hits[0]


async def test_the_policy_gives_up_after_max_retries(aiohttp_server):
    hits: list[str] = []
    url = await chat_server(aiohttp_server, hits)
    async with ChatClient(url, None, 5, 2) as client:
        with pytest.raises(Retryable, match="HTTP 503"):
            async for attempt in retry_policy(3, initial=0.01, maximum=0.05):
                with attempt:
                    await client.complete({"messages": [{"content": "busy"}]})
    assert len(hits) == 4  # the first try and three retries


async def test_the_policy_does_not_retry_a_rejected_request(aiohttp_server):
    hits: list[str] = []
    url = await chat_server(aiohttp_server, hits)
    async with ChatClient(url, None, 5, 2) as client:
        with pytest.raises(Rejected):
            async for attempt in retry_policy(3, initial=0.01, maximum=0.05):
                with attempt:
                    await client.complete({"messages": [{"content": "reject"}]})
    assert hits == ["reject"]


def answer(status: int, retry_after: str | None = None, code: str = "") -> Retryable:
    """The error a real answer stands for (a 429 without a known code is a ``rate`` signal)."""
    body = orjson.dumps({"error": {"code": code, "message": "slow down"}}) if code else b"busy"
    err = http_error(status, {"Retry-After": retry_after} if retry_after else {}, body, None, "http://x/v1")
    assert isinstance(err, Retryable), err
    return err


class Sleeps:
    """A retry loop's sleep that records each wait instead of sleeping it."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


async def reply(text: str) -> str:
    """What a send that got its answer returns."""
    return text


async def paused(cooldown: CoolDown) -> bool:
    """Whether ``cooldown`` holds every sender back now."""
    try:
        await asyncio.wait_for(cooldown.wait(), 0.05)
    except asyncio.TimeoutError:
        return True
    return False


async def test_tenacity_waits_the_servers_retry_after_else_the_backoff_and_caps_it():
    errors = iter([answer(429, "2"), answer(503), answer(429, "100000")])
    sleeps = Sleeps()

    async def call() -> str:
        async for attempt in retry_policy(3, initial=30.0, maximum=60.0, sleep=sleeps):
            with attempt:
                if (e := next(errors, None)) is not None:
                    raise e
                return "fine"
        raise AssertionError("unreachable")

    assert await call() == "fine"
    assert sleeps.waits[0] == 2.0 and 30.0 <= sleeps.waits[1] <= 60.0 and sleeps.waits[2] == MAX_WAIT


async def test_a_429_the_cut_limit_holds_back_goes_again_without_backoff():
    sleeps = Sleeps()
    policy = RetryPolicy(1, initial=30.0, maximum=60.0)
    for over, adaptive in ((True, True), (True, False), (False, True)):
        await policy.again(Failure(answer(429), over, adaptive), lambda: reply("ok"), sleeps)
    held, fixed, scattered = sleeps.waits
    assert held == 0.0  # the cut limit lets it go when a slot frees
    assert 30.0 <= fixed <= 60.0 and 30.0 <= scattered <= 60.0  # nothing holds it back: the backoff
    sleeps.waits.clear()
    await policy.again(Failure(answer(429, "3"), True, True), lambda: reply("ok"), sleeps)
    assert sleeps.waits == [3.0]  # a Retry-After is waited whatever the limit says


async def test_only_a_full_window_pauses_everyone_and_no_error_is_changed():
    cases = [  # (error, over, pauses everyone)
        (answer(429, "5"), True, True),                # a rate 429 the limit took for a full window
        (answer(429, "5"), False, False),              # a scattered one: its own job only
        (answer(429, None), True, False),              # no Retry-After: the cut limit holds the job back
        (answer(429, "5", "1302"), True, False),       # a cap (Zhipu 1302) cuts the limit, pauses nobody
        (answer(503, "5"), False, False),
    ]
    for error, over, pauses in cases:
        before = dict(vars(error))
        cooldown = CoolDown()
        await RetryPolicy(0, 0.01, 0.05, cooldown).again(Failure(error, over, True), lambda: reply("x"), Sleeps())
        assert await paused(cooldown) is pauses, (error, over)
        assert vars(error) == before  # read, never written
    huge = CoolDown()
    await RetryPolicy(0, 0.01, 0.05, huge).again(Failure(answer(429, "99999"), True, True), lambda: reply("x"),
                                                 Sleeps())
    assert huge._until - time.monotonic() <= MAX_PAUSE


async def test_the_engines_loop_gives_up_with_the_last_failure_and_lets_other_errors_through():
    sleeps, counted = Sleeps(), []
    policy = RetryPolicy(2, 0.01, 0.05, before_sleep=lambda state: counted.append(state.attempt_number))
    failures = [Failure(answer(503)), Failure(answer(502))]
    last = failures[-1]

    async def fail_again() -> str | Failure:
        return failures.pop(0)

    assert await policy.again(Failure(answer(500)), fail_again, sleeps) is last  # 1 + 2 retries, then given up
    assert counted == [1, 2] and len(sleeps.waits) == 2

    async def rejected() -> str | Failure:
        raise Rejected("HTTP 400: no such model")

    with pytest.raises(Rejected, match="no such model"):
        await policy.again(Failure(answer(503)), rejected, sleeps)


# ----------------------------------------------------------------------------- the engine

class JsonTask:
    def validate(self, job: Job, text: str) -> Any:
        try:
            return orjson.loads(text)
        except orjson.JSONDecodeError:
            raise UnusableReply("no JSON in the reply") from None

    def reask(self, job: Job, payload: dict[str, Any], text: str, reason: str) -> dict[str, Any]:
        return {**payload, "messages": [*payload["messages"], {"role": "user", "content": reason}]}


def job(what: str, n: int = 0) -> Job:
    return Job(f"{what}-{n}", "g", {"messages": [{"role": "user", "content": what}]}, {"kind": what, "n": n}, 10)


async def run_engine(url: str, run_dir, jobs: list[Job], **config: Any) -> tuple[Engine, dict[str, dict]]:
    checkpoint = RunDir(run_dir)
    checkpoint.open({"groups": {"g": "v1"}})
    try:
        async with ChatClient(url, None, 5, 4) as client:
            engine = Engine(client, Limits(), checkpoint, JsonTask(),
                            EngineConfig(concurrency=2, backoff_initial=0.01, backoff_max=0.05, **config))
            await engine.run(iter(jobs), len(jobs))
    finally:
        checkpoint.close()
    lines = (run_dir / "g.jsonl").read_bytes().splitlines()
    return engine, {r["id"]: r for r in map(orjson.loads, lines)}


async def test_the_engine_writes_one_record_per_job(aiohttp_server, tmp_path):
    hits: list[str] = []
    url = await chat_server(aiohttp_server, hits)
    engine, recs = await run_engine(url, tmp_path, [job("ok", i) for i in range(5)])
    assert len(recs) == 5 and len(hits) == 5
    r = recs["ok-3"]
    assert list(r)[:4] == ["id", "status", "kind", "n"]  # the job's meta between status and scores
    assert (r["status"], r["scores"], r["attempts"], r["reasks"], r["error"]) == ("ok", {"v": 1}, 1, 0, None)
    assert r["usage"] == {"prompt_tokens": 2, "completion_tokens": 3, "total_tokens": 5}
    assert (engine.stats.ok, engine.stats.failed, engine.stats.prompt_tokens) == (5, 0, 10)


async def test_an_unusable_reply_is_asked_again_then_given_up(aiohttp_server, tmp_path):
    hits: list[str] = []
    url = await chat_server(aiohttp_server, hits)
    engine, recs = await run_engine(url, tmp_path, [job("bad"), job("always-bad")], max_reasks=2)
    assert (recs["bad-0"]["status"], recs["bad-0"]["reasks"]) == ("ok", 1)
    worst = recs["always-bad-0"]
    assert (worst["status"], worst["reasks"], worst["reply"]) == ("invalid", 2, "garbage")
    assert worst["error"] == "no JSON in the reply" and worst["attempts"] == 3
    assert engine.stats.invalid == 1 + 3 and hits.count("always-bad") == 3


async def test_transport_failures_end_in_an_error_record(aiohttp_server, tmp_path):
    hits: list[str] = []
    url = await chat_server(aiohttp_server, hits)
    engine, recs = await run_engine(url, tmp_path, [job("busy"), job("reject")], max_retries=2)
    assert recs["busy-0"]["status"] == "error" and recs["busy-0"]["attempts"] == 3
    assert recs["busy-0"]["error"] == "HTTP 503: busy (gave up after 3 attempts)"
    assert recs["reject-0"]["status"] == "error" and recs["reject-0"]["attempts"] == 1
    assert hits.count("busy") == 3 and hits.count("reject") == 1
    assert engine.stats.failed == 2 and engine.stats.retries == 2


async def test_a_fatal_answer_stops_the_run(aiohttp_server, tmp_path):
    hits: list[str] = []
    url = await chat_server(aiohttp_server, hits)
    with pytest.raises(Fatal, match="HTTP 401"):
        await run_engine(url, tmp_path, [job("nokey")] + [job("ok", i) for i in range(200)])
    assert len(hits) < 50  # nobody went on asking
