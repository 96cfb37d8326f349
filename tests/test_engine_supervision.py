"""The engine supervises what it runs: an error anywhere stops the run, never hangs it.

Against an in-process aiohttp server: a callback, the job iterator or the
task raising, the endpoint never reached or going down. Each run is bounded
by ``asyncio.wait_for``: a hang fails the test instead of hanging it.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from aiohttp import web

from liveroom.async_client.chat import ChatClient
from liveroom.async_client.concurrency import ConcurrencyLimit
from liveroom.async_client.engine import Engine, EngineConfig, Job, Stats
from liveroom.async_client.errors import RunFailed, Unreachable, UnusableReply
from liveroom.async_client.limits import Limits, Outage
from liveroom.async_client.progress import status_line
from liveroom.async_client.record import Record
from liveroom.async_client.run_dir import RunDir

FAST = {"backoff_initial": 0.01, "backoff_max": 0.05, "grace": 2.0}


def completion(text: str = '{"v": 1}', model: str = "m") -> dict[str, Any]:
    return {"model": model, "choices": [{"message": {"content": text}}], "usage": {"total_tokens": 5}}


class JsonTask:
    def validate(self, job: Job, text: str) -> Any:
        try:
            return orjson.loads(text)
        except orjson.JSONDecodeError:
            raise UnusableReply("no JSON in the reply") from None

    def reask(self, job: Job, payload: dict[str, Any], text: str, reason: str) -> dict[str, Any]:
        return {**payload, "messages": [*payload["messages"], {"role": "assistant", "content": text},
                                        {"role": "user", "content": reason}]}


def job(n: int, model: str = "m") -> Job:
    return Job(f"j-{n}", "g", {"model": model, "messages": [{"role": "user", "content": str(n)}]}, {"n": n}, 10)


async def serve(aiohttp_server: Any, handler: Any) -> str:
    app = web.Application()
    app.router.add_post("/v1/chat/completions", handler)
    return str((await aiohttp_server(app)).make_url("/v1"))


async def ok(request: web.Request) -> web.Response:
    return web.json_response(completion())


async def run(url: str, tmp_path: Any, jobs: Any, total: int, task: Any = None, on_record: Any = None,
              on_warning: Any = None, **config: Any) -> Engine:
    """The engine run over ``jobs``; a run that does not end within 30 s fails the test."""
    checkpoint = RunDir(tmp_path)
    checkpoint.open({"groups": {"g": "v1"}})
    try:
        async with ChatClient(url, None, 5, 8) as client:
            engine = Engine(client, Limits(), checkpoint, task or JsonTask(),
                            EngineConfig(**{"concurrency": 4, **FAST, **config}), on_record, on_warning)
            await asyncio.wait_for(engine.run(jobs, total), 30)
    finally:
        checkpoint.close()
    return engine


def lines(tmp_path: Any) -> list[dict[str, Any]]:
    return [orjson.loads(x) for x in (tmp_path / "g.jsonl").read_bytes().splitlines()]


async def test_a_failing_callback_stops_the_run_with_one_line(aiohttp_server, tmp_path):
    url = await serve(aiohttp_server, ok)
    seen: list[Record] = []

    def on_record(record: Record) -> None:
        seen.append(record)
        if len(seen) == 3:
            raise TypeError("the progress bar broke")

    with pytest.raises(RunFailed) as e:
        await run(url, tmp_path, (job(i) for i in range(1000)), 1000, on_record=on_record)
    assert "unexpected TypeError in a worker: the progress bar broke" in str(e.value)
    assert "\n" not in str(e.value) and "run the same command again to resume" in str(e.value)
    recs = lines(tmp_path)
    assert 3 <= len(recs) < 1000  # the records written stay, whole
    assert all(r["status"] == "ok" for r in recs)


async def test_a_failing_job_iterator_stops_the_run(aiohttp_server, tmp_path):
    hits: list[int] = []

    async def counted(request: web.Request) -> web.Response:
        hits.append(1)
        return web.json_response(completion())

    url = await serve(aiohttp_server, counted)

    def jobs() -> Iterator[Job]:
        yield from (job(i) for i in range(20))
        raise KeyError("pitch 21 has no showcase")

    with pytest.raises(RunFailed, match="unexpected KeyError in reading the jobs: 'pitch 21 has no showcase'"):
        await run(url, tmp_path, jobs(), 40)
    assert 0 < len(lines(tmp_path)) == len(hits) <= 20  # every request sent has its record


async def test_a_task_that_raises_stops_the_run(aiohttp_server, tmp_path):
    url = await serve(aiohttp_server, ok)

    class Broken(JsonTask):
        def validate(self, job: Job, text: str) -> Any:
            raise AttributeError("'NoneType' object has no attribute 'get'")

    with pytest.raises(RunFailed, match="unexpected AttributeError in a worker"):
        await run(url, tmp_path, (job(i) for i in range(50)), 50, task=Broken())


async def test_an_endpoint_never_reached_stops_in_seconds_naming_it(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/v1"
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    with pytest.raises(Unreachable) as e:
        await run(url, tmp_path, (job(i) for i in range(100)), 100, concurrency=1, backoff_initial=0.2)
    assert loop.time() - t0 < 5
    assert f"cannot reach {url}/chat/completions" in str(e.value) and "Connect call failed" in str(e.value)
    assert (tmp_path / "g.jsonl").read_bytes() == b""  # nothing is recorded failed


async def test_an_endpoint_that_goes_down_pauses_everyone_then_gives_up_cleanly(aiohttp_server, tmp_path):
    served: list[int] = []

    async def then_gone(request: web.Request) -> web.StreamResponse:
        served.append(1)
        if len(served) > 10:  # gone: the connection is refused from now on
            await server.close()
        resp = web.json_response(completion())
        resp.force_close()
        return resp

    app = web.Application()
    app.router.add_post("/v1/chat/completions", then_gone)
    server = await aiohttp_server(app)
    url = str(server.make_url("/v1"))
    engine = await run(url, tmp_path, (job(i) for i in range(200)), 200, probe_every=0.2, give_up_after=1.0)
    recs = lines(tmp_path)
    assert engine.stopped is not None and engine.stopped.startswith("endpoint unreachable for ")
    assert "last error: connection error" in engine.stopped
    assert all(r["status"] == "ok" for r in recs) and 10 <= len(recs) <= 11  # none failed for the outage
    assert engine.stats.failed == 0


async def test_the_progress_line_names_an_outage():
    o = Outage()
    o.begin("connection error: ClientConnectorError: refused")
    o.since -= 130  # type: ignore[operator]
    line = status_line(Stats(total=10, outage=o))
    assert line.endswith("; endpoint unreachable for 2m10s (last error: connection error: ClientConnectorError: refused)")
    o.end()
    assert "unreachable" not in status_line(Stats(total=10, outage=o))


async def test_a_reask_sends_back_at_most_reask_chars_and_a_record_keeps_at_most_keep_chars(aiohttp_server, tmp_path):
    asked: list[dict[str, Any]] = []

    async def huge(request: web.Request) -> web.Response:
        body = await request.json()
        asked.append(body)
        return web.json_response(completion("x" * 200_000))

    url = await serve(aiohttp_server, huge)
    await run(url, tmp_path, [job(0)], 1, max_reasks=2, reask_chars=100, keep_chars=1000)
    recs = lines(tmp_path)
    assert len(asked) == 3
    assert [len(m["content"]) for m in asked[2]["messages"] if m["role"] == "assistant"] == [100, 100]
    assert recs[0]["status"] == "invalid" and len(recs[0]["reply"]) < 1100
    assert recs[0]["reply"].endswith("[... 199000 more characters not kept]")


async def test_the_served_model_is_kept_and_a_different_one_warned_about_once(aiohttp_server, tmp_path):
    async def other(request: web.Request) -> web.Response:
        body = await request.json()
        return web.json_response(completion(model="gpt-4o" if body["messages"][0]["content"] != "0" else
                                            "gpt-4o-mini-2024-07-18"))

    url = await serve(aiohttp_server, other)
    warned: list[str] = []
    await run(url, tmp_path, [job(i, "gpt-4o-mini") for i in range(6)], 6, on_warning=warned.append)
    recs = lines(tmp_path)
    assert {r["id"]: r["model"] for r in recs}["j-0"] == "gpt-4o-mini-2024-07-18"  # a dated version: no warning
    assert {r["model"] for r in recs} == {"gpt-4o", "gpt-4o-mini-2024-07-18"}
    assert warned == ["the server answered with model 'gpt-4o', not 'gpt-4o-mini' "
                      "(each record keeps the model that answered it)"]


async def test_a_run_cancelled_from_outside_gives_a_shared_limit_back_every_slot(aiohttp_server, tmp_path):
    """A service's forecasts share one live limit: a forecast cancelled mid-flight (its caller went
    away) must leave no slot held and no request counted out, or the limit shrinks for everyone."""
    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(0.2)
        return web.json_response(completion())

    url = await serve(aiohttp_server, slow)
    shared = ConcurrencyLimit(4)
    checkpoint = RunDir(tmp_path)
    checkpoint.open({"groups": {"g": "v1"}})
    try:
        async with ChatClient(url, None, 5, 8) as client:
            config = EngineConfig(**{"concurrency": 4, **FAST})
            first = Engine(client, Limits(), checkpoint, JsonTask(), config, limiter=shared)
            running = asyncio.create_task(first.run((job(i) for i in range(100)), 100))
            for _ in range(200):
                if shared.sending == 4:
                    break
                await asyncio.sleep(0.005)
            assert shared.active == shared.sending == 4  # every slot held, a request out in each
            running.cancel()
            with pytest.raises(asyncio.CancelledError):
                await running
            await asyncio.sleep(0)
            assert shared.active == 0 and shared.sending == 0
            # the next engine on the same limit gets all of it
            second = Engine(client, Limits(), checkpoint, JsonTask(), config, limiter=shared)
            stats = await asyncio.wait_for(second.run((job(i) for i in range(100, 108)), 8), 10)
            assert stats.ok == 8 and second.limiter is shared and shared.active == 0
    finally:
        checkpoint.close()
