"""What an HTTP answer means, against in-process aiohttp servers.

Each status, header and broken connection is produced by a real server on
loopback and read by the real clients (:class:`ChatClient`, :class:`BatchClient`).
"""

from __future__ import annotations

import asyncio
import re
import socket

import pytest
from aiohttp import web

from liveroom.async_client.batch_api import BatchAPIError, BatchClient
from liveroom.async_client.chat import ChatClient
from liveroom.async_client.errors import Fatal, GarbledBody, Rejected, Retryable
from liveroom.async_client.transport import (
    error_info,
    error_text,
    read_completion,
    redact,
    retry_after,
    served_as,
    target,
)
from liveroom.errors import InputError

KEY = "sk-test-abcdefghijklmnop"
PAYLOAD = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
COMPLETION = {"model": "m-1", "choices": [{"message": {"role": "assistant", "content": '{"x": 1}'}}],
              "usage": {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7, "details": {"a": 1}}}


async def serve(aiohttp_server, handler) -> str:
    """A server answering every chat call with ``handler``; its base URL."""
    app = web.Application()
    app.router.add_post("/v1/chat/completions", handler)
    server = await aiohttp_server(app)
    return str(server.make_url("/v1"))


async def complete(base_url: str, timeout: float = 5.0):
    async with ChatClient(base_url, KEY, timeout, 4) as client:
        return await client.complete(PAYLOAD)


def answering(status: int, body: object = None, headers: dict[str, str] | None = None, text: str | None = None):
    async def handler(request: web.Request) -> web.Response:
        if text is not None:
            return web.Response(status=status, text=text, headers=headers)
        return web.json_response(body, status=status, headers=headers)
    return handler


async def test_a_completion_is_read_into_a_reply(aiohttp_server):
    seen = {}

    async def handler(request: web.Request) -> web.Response:
        seen["auth"] = request.headers.get("Authorization")
        seen["body"] = await request.json()
        return web.json_response(COMPLETION)

    reply = await complete(await serve(aiohttp_server, handler))
    assert (reply.text, reply.model) == ('{"x": 1}', "m-1")
    assert reply.usage == {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}  # ints only
    assert reply.latency > 0
    assert seen == {"auth": f"Bearer {KEY}", "body": PAYLOAD}


@pytest.mark.parametrize("status", [401, 403])
async def test_a_bad_key_is_fatal_and_never_shown(aiohttp_server, status):
    body = {"error": {"message": f"Incorrect API key provided: {KEY}; also sk-other12345", "code": "invalid_api_key"}}
    url = await serve(aiohttp_server, answering(status, body))
    with pytest.raises(Fatal) as e:
        await complete(url)
    msg = str(e.value)
    assert f"HTTP {status} invalid_api_key" in msg and "check OPENAI_API_KEY" in msg
    assert KEY not in msg and "provided: ***;" in msg
    assert "sk-other" not in msg and "also sk-***" in msg  # anything shaped like a key


async def test_429_is_retryable_with_the_servers_wait(aiohttp_server):
    body = {"error": {"message": "slow down", "type": "rate_limit_exceeded"}}
    url = await serve(aiohttp_server, answering(429, body, {"Retry-After": "7"}))
    with pytest.raises(Retryable) as e:
        await complete(url)
    assert (e.value.status, e.value.retry_after) == (429, 7.0)
    assert "HTTP 429 rate_limit_exceeded: slow down" in str(e.value)


async def test_retry_after_ms_wins_over_retry_after(aiohttp_server):
    url = await serve(aiohttp_server, answering(429, {}, {"retry-after-ms": "250", "Retry-After": "9"}))
    with pytest.raises(Retryable) as e:
        await complete(url)
    assert e.value.retry_after == 0.25


async def test_no_quota_is_fatal_even_as_a_429(aiohttp_server):
    body = {"error": {"message": "You exceeded your current quota", "code": "insufficient_quota"}}
    url = await serve(aiohttp_server, answering(429, body))
    with pytest.raises(Fatal, match="quota is used up"):
        await complete(url)


@pytest.mark.parametrize("status", [408, 409, 500, 502, 503])
async def test_server_trouble_is_retryable(aiohttp_server, status):
    url = await serve(aiohttp_server, answering(status, text="upstream hiccup"))
    with pytest.raises(Retryable) as e:
        await complete(url)
    assert e.value.status == status and "upstream hiccup" in str(e.value)
    assert e.value.retry_after is None


@pytest.mark.parametrize("status", [400, 404, 422])
async def test_a_refused_request_is_rejected(aiohttp_server, status):
    body = {"error": {"message": "bad thing", "type": "invalid_request_error"}}
    url = await serve(aiohttp_server, answering(status, body))
    with pytest.raises(Rejected) as e:
        await complete(url)
    assert str(e.value) == f"HTTP {status} invalid_request_error: bad thing"
    assert not isinstance(e.value, (Retryable, Fatal))


@pytest.mark.parametrize("body", ["not json at all", '{"choices": []}', '{"choices": [{"message": {}}]}',
                                  '{"choices": [{"message": {"content": 5}}]}', "[1, 2]"])
async def test_a_garbled_200_is_retryable(aiohttp_server, body):
    url = await serve(aiohttp_server, answering(200, text=body))
    with pytest.raises(GarbledBody) as e:
        await complete(url)
    assert isinstance(e.value, Retryable) and e.value.status == 200
    assert str(e.value).startswith("unreadable response body (")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_connection_refused_is_retryable():
    with pytest.raises(Retryable, match="^connection error: ") as e:
        await complete(f"http://127.0.0.1:{free_port()}/v1")
    assert e.value.status is None


async def test_a_timeout_is_retryable_and_names_the_limit(aiohttp_server):
    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(2)
        return web.json_response(COMPLETION)

    with pytest.raises(Retryable, match=r"^timed out after 0\.2 s$"):
        await complete(await serve(aiohttp_server, slow), timeout=0.2)


async def test_a_dropped_connection_is_retryable(aiohttp_server):
    async def drop(request: web.Request) -> web.Response:
        request.transport.close()  # mid-request, no answer
        await asyncio.sleep(1)
        return web.json_response(COMPLETION)

    with pytest.raises(Retryable, match="^connection error: "):
        await complete(await serve(aiohttp_server, drop))


async def test_batch_client_maps_the_same_way_and_gives_up(aiohttp_server):
    calls = []

    async def flaky(request: web.Request) -> web.Response:
        calls.append(request.path)
        return web.Response(status=503, text="busy")

    app = web.Application()
    app.router.add_get("/v1/batches/{id}", flaky)
    server = await aiohttp_server(app)
    async with BatchClient(str(server.make_url("/v1")), KEY, max_retries=2, backoff=0.01) as client:
        with pytest.raises(BatchAPIError, match=r"batch b1: HTTP 503: busy \(gave up after 3 attempts\)"):
            await client.get_batch("b1")
    assert len(calls) == 3 and client.calls == 3

    async with BatchClient(f"http://127.0.0.1:{free_port()}/v1", KEY, max_retries=0) as client:
        with pytest.raises(BatchAPIError, match="batch b1: connection error: "):
            await client.get_batch("b1")


# ----------------------------------------------------------------------------- the readers, directly

def test_read_completion_takes_bytes_or_a_parsed_body():
    import orjson

    for body in (orjson.dumps(COMPLETION), COMPLETION):
        assert read_completion(body).text == '{"x": 1}'
    with pytest.raises(GarbledBody) as e:
        read_completion({"choices": None})
    assert e.value.detail.startswith("TypeError: ")


@pytest.mark.parametrize("body, info", [
    (b'{"error": {"message": "m ", "code": "c"}}', ("m", "c")),
    (b'{"error": {"message": "m", "type": "t"}}', ("m", "t")),
    (b'{"error": "plain words"}', ("plain words", "")),
    ({"message": "inner", "code": "x"}, ("inner", "x")),  # a batch line's error object itself
    (b"<html>bad gateway</html>", ("<html>bad gateway</html>", "")),
    (b"x" * 300, ("x" * 200, "")),
    (b"[1]", ("[1]", "")),
])
def test_error_info_is_tolerant(body, info):
    assert error_info(body) == info


def test_error_text_is_one_line():
    assert error_text({"error": {"message": "gone", "code": "expired"}}) == "expired: gone"
    assert error_text({"odd": 1}) == '{"odd":1}'
    assert error_text("x" * 500) == "x" * 200


def test_retry_after_reads_seconds_dates_and_nonsense():
    assert retry_after({"Retry-After": "3"}) == 3.0
    assert retry_after({"Retry-After": "-3"}) == 0.0
    assert retry_after({"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}) == 0.0  # in the past
    assert retry_after({"Retry-After": "soon"}) is None
    assert retry_after({}) is None


@pytest.mark.parametrize("value", ["soon", "NaN", "inf", "-inf", "1e400", "", " ", "Wed, 99 Foo 2015", "3 s"])
def test_retry_after_that_cannot_be_read_is_the_callers_backoff(value):
    assert retry_after({"Retry-After": value}) is None
    assert retry_after({"retry-after-ms": value}) is None


@pytest.mark.parametrize("usage", ["n/a", [1, 2], 12, None, {"total_tokens": "many", "prompt_tokens": True}])
def test_usage_that_is_no_object_of_counts_reads_as_empty(usage):
    reply = read_completion({**COMPLETION, "usage": usage, "model": ["not", "a", "name"]})
    assert (reply.text, reply.usage, reply.model) == ('{"x": 1}', {}, "")


def test_an_error_body_that_is_not_json_is_its_start_on_one_line():
    assert error_info(b"<html>\n<body>\n  502 Bad Gateway\n</body></html>") == \
        ("<html> <body> 502 Bad Gateway </body></html>", "")


# ----------------------------------------------------------------------------- secrets and endpoints


@pytest.mark.parametrize("text, shown", [
    ("Authorization: Basic dXNlcjpwYXNz", "Authorization: Basic ***"),
    ('{"authorization": "Bearer abc.def-ghi"}', '{"authorization": "Bearer ***"}'),
    ("AUTHORIZATION=tok123456", "AUTHORIZATION=***"),
    ("header Bearer sk-abcdef0123456789 sent", "header Bearer *** sent"),
    ("key sk-proj-abcdef0123 leaked", "key sk-*** leaked"),
    ("from https://alice:pw@host.example/v1", "from https://***@host.example/v1"),
    ('"url": "http://u:p@h"', '"url": "http://***@h"'),
    ("好的，我的回答：{\"want_to_enter\": 3}", "好的，我的回答：{\"want_to_enter\": 3}"),
])
def test_redact_masks_anything_shaped_like_a_credential(text, shown):
    assert redact(text) == shown


def test_redact_masks_the_exact_secrets_wherever_they_are():
    assert redact("echo: my-own-token-xyz, again my-own-token-xyz", "my-own-token-xyz", None, "") == \
        "echo: ***, again ***"


def test_credentials_in_the_base_url_become_a_basic_header_and_secrets():
    t = target("https://alice:p%40ss@proxy.example:8443/v1", None)
    assert t.base_url == "https://proxy.example:8443/v1"
    assert t.authorization == "Basic YWxpY2U6cEBzcw=="  # base64 of alice:p@ss
    assert set(t.secrets) >= {"YWxpY2U6cEBzcw==", "p@ss", "p%40ss"}
    assert "p@ss" not in repr(t) and not t.local
    assert target("http://127.0.0.1:8000/v1", "sk-x").authorization == "Bearer sk-x"
    assert target("http://[::1]:8000/v1", None).local and target("http://localhost/v1", None).local


@pytest.mark.parametrize("url, key, words", [
    ("https://a:b@h/v1", "sk-key", "carries credentials (user:pass@) and OPENAI_API_KEY is set too"),
    ("https://h/v1?api-version=1", None, "has a query string or fragment"),
    ("https://h/v1#x", None, "has a query string or fragment"),
    ("ftp://h/v1", None, "must be an http(s) URL"),
    ("h/v1", None, "must be an http(s) URL"),
])
def test_a_base_url_that_cannot_be_used_is_one_line(url, key, words):
    with pytest.raises(InputError, match=re.escape(words)) as e:
        target(url, key)
    assert "\n" not in str(e.value) and (key is None or key not in str(e.value))


def test_a_remote_endpoint_needs_a_key_a_local_one_does_not():
    target("http://127.0.0.1:8000/v1", None).require_key()
    target("http://localhost:8000/v1", None).require_key()
    target("https://a:b@api.example/v1", None).require_key()  # credentials in the URL are one
    with pytest.raises(InputError, match=r"no API key for https://api\.example/v1: set OPENAI_API_KEY"):
        target("https://api.example/v1", None).require_key()


@pytest.mark.parametrize("served, asked, same", [
    ("gpt-4o-mini", "gpt-4o-mini", True),
    ("gpt-4o-mini-2024-07-18", "gpt-4o-mini", True),
    ("gpt-4-0613", "gpt-4", True),
    ("claude-3-5-sonnet-20241022", "claude-3-5-sonnet", True),
    ("gpt-4o", "gpt-4o-mini", False),
    ("gpt-4o-mini", "gpt-4o", False),
    ("gpt-4o-mini-high", "gpt-4o-mini", False),
    ("gpt-4o-2024-08-06", "gpt-4o-mini", False),
])
def test_served_as_takes_the_name_or_a_dated_version(served, asked, same):
    assert served_as(served, asked) is same


async def test_url_credentials_are_sent_as_the_header_and_masked_in_replies(aiohttp_server):
    seen: list[str] = []

    async def echo(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Authorization", ""))
        return web.json_response({**COMPLETION, "choices": [{"message": {"content": f"got {seen[-1]}"}}]})

    url = (await serve(aiohttp_server, echo)).replace("http://", "http://bob:hunter2@")
    async with ChatClient(url, None, 5, 1) as client:
        reply = await client.complete(PAYLOAD)
    assert seen == ["Basic Ym9iOmh1bnRlcjI="]
    assert reply.text == "got Basic ***"


async def test_a_refused_connection_is_a_connection_failure_and_a_timeout_is_not(aiohttp_server):
    with pytest.raises(Retryable) as e:
        await complete(f"http://127.0.0.1:{free_port()}/v1")
    assert e.value.connection

    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(2)
        return web.json_response(COMPLETION)

    with pytest.raises(Retryable) as e:
        await complete(await serve(aiohttp_server, slow), timeout=0.3)
    assert not e.value.connection
