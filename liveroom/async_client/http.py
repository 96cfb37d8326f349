"""One chat-completions call over aiohttp, and the errors it can end in.

:class:`Retryable` errors (408, 409, 429, 5xx, timeouts, dropped connections,
garbled bodies) are worth another try, possibly after ``retry_after`` seconds;
:class:`Fatal` ones (401, 403, ``insufficient_quota``) stop the whole run;
:class:`Rejected` ones (other 4xx) fail this request only. Messages never
contain the API key.
"""

from __future__ import annotations

import asyncio
import email.utils
import re
import time
from dataclasses import dataclass
from typing import Any, Mapping
from urllib.parse import urlsplit

import aiohttp
import orjson

from ..errors import LiveroomError


class CallError(Exception):
    """Base of what one call can end in besides a reply."""


class Retryable(CallError):
    def __init__(self, reason: str, retry_after: float | None = None, status: int | None = None):
        super().__init__(reason)
        self.retry_after = retry_after
        self.status = status


class Rejected(CallError):
    """The server refused this request (4xx other than the retryable ones)."""


class Fatal(LiveroomError):
    """The run cannot go on: bad key, no permission, quota used up."""


@dataclass(frozen=True)
class Reply:
    text: str
    usage: dict[str, int]
    model: str
    latency: float


_SECRET = re.compile(r"\b(sk-|Bearer\s+)[A-Za-z0-9*._\-]{4,}")


def redact(text: str, key: str | None) -> str:
    """``text`` with the key, and anything shaped like one, masked."""
    if key:
        text = text.replace(key, "***")
    return _SECRET.sub(r"\1***", text)


def endpoint_host(base_url: str) -> str:
    """``scheme://host[:port]/path`` of a base URL, without credentials or query."""
    u = urlsplit(base_url)
    host = u.hostname or ""
    port = f":{u.port}" if u.port else ""
    return f"{u.scheme}://{host}{port}{u.path.rstrip('/')}"


def retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds to wait from ``retry-after-ms`` or ``Retry-After`` (seconds or HTTP date)."""
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return max(0.0, float(ms) / 1000)
        except ValueError:
            pass
    value = headers.get("Retry-After")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        when = email.utils.parsedate_to_datetime(value) if value else None
        return max(0.0, when.timestamp() - time.time()) if when else None


def error_info(body: bytes) -> tuple[str, str]:
    """(message, code) from an OpenAI-style error body, tolerant of anything."""
    try:
        err = orjson.loads(body).get("error") or {}
        if isinstance(err, str):
            return err, ""
        return str(err.get("message") or ""), str(err.get("code") or err.get("type") or "")
    except (orjson.JSONDecodeError, AttributeError):
        return body[:200].decode("utf-8", "replace"), ""


class ChatClient:
    """POSTs chat-completion payloads to ``{base_url}/chat/completions``."""

    def __init__(self, base_url: str, api_key: str | None, timeout: float, connections: int):
        self.url = base_url.rstrip("/") + "/chat/completions"
        self._key = api_key
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._connections = connections
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> "ChatClient":
        headers = {"Content-Type": "application/json"}
        if self._key:
            headers["Authorization"] = f"Bearer {self._key}"
        self._session = aiohttp.ClientSession(
            headers=headers, timeout=self._timeout,
            connector=aiohttp.TCPConnector(limit=self._connections, ttl_dns_cache=300),
            cookie_jar=aiohttp.DummyCookieJar(),  # an API needs no cookies; parsing them costs every reply
            json_serialize=lambda o: orjson.dumps(o).decode(),
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()

    async def complete(self, payload: dict[str, Any]) -> Reply:
        assert self._session is not None, "use ChatClient as an async context manager"
        t0 = time.monotonic()
        try:
            async with self._session.post(self.url, data=orjson.dumps(payload)) as resp:
                body = await resp.read()
                status, headers = resp.status, resp.headers
        except asyncio.TimeoutError:
            raise Retryable(f"timed out after {self._timeout.total:g} s") from None
        except aiohttp.ClientError as e:
            raise Retryable(redact(f"connection error: {type(e).__name__}: {e}", self._key)) from None
        latency = time.monotonic() - t0
        if status == 200:
            try:
                data = orjson.loads(body)
                text = data["choices"][0]["message"]["content"]
                usage = data.get("usage") or {}
                if not isinstance(text, str):
                    raise TypeError("content is not a string")
            except (orjson.JSONDecodeError, KeyError, IndexError, TypeError) as e:
                raise Retryable(f"unreadable response body ({e})", status=status) from None
            return Reply(text, {k: v for k, v in usage.items() if isinstance(v, int)},
                         str(data.get("model", "")), latency)
        raise http_error(status, headers, body, self._key, self.url)


def http_error(status: int, headers: Mapping[str, str], body: bytes, key: str | None, url: str,
               what: str = "") -> Fatal | Retryable | Rejected:
    """The error a non-2xx answer stands for, its message free of the key.

    401/403 and ``insufficient_quota`` are :class:`Fatal`; 408, 409, 429 and
    5xx :class:`Retryable` (with the server's ``Retry-After``); the rest
    :class:`Rejected`.
    """
    message, code = error_info(body)
    message = redact(message, key)
    text = (f"{what}: " if what else "") + f"HTTP {status}" + (f" {code}" if code else "") \
        + (f": {message}" if message else "")
    if status in (401, 403):
        return Fatal(f"{text} (check OPENAI_API_KEY and the endpoint {endpoint_host(url)})")
    if code == "insufficient_quota":
        return Fatal(f"{text} (the account's quota is used up)")
    if status in (408, 409, 429) or status >= 500:
        return Retryable(text, retry_after(headers), status)
    return Rejected(text)
