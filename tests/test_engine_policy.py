"""The retry policy and the engine's loop, against an in-process aiohttp server.

The server answers by the job's one message: ``ok``, ``bad`` (unusable until
asked again), ``always-bad``, ``reject`` (400), ``busy`` (503), ``nokey`` (401).
"""

from __future__ import annotations

import time
from typing import Any

import orjson
import pytest
from aiohttp import web

from kit import before_timer
from liveroom.async_client.chat import ChatClient
from liveroom.async_client.checkpoint import Checkpoint
from liveroom.async_client.engine import Engine, EngineConfig, Job
from liveroom.async_client.errors import Fatal, Rejected, Retryable, UnusableReply
from liveroom.async_client.limits import Limits
from liveroom.async_client.policy import retry_policy


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
    checkpoint = Checkpoint(run_dir)
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
