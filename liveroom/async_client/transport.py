"""The HTTP layer both clients share: what an answer means, in one place each.

* :func:`transport_errors`: timeouts and dropped connections -> :class:`Retryable`;
* :func:`http_error`: a non-2xx status -> :class:`Fatal`, :class:`Retryable` or
  :class:`Rejected`, with the server's ``Retry-After``;
* :func:`error_info`: (message, code) of an OpenAI-style error body;
* :func:`read_completion`: a chat completion body -> :class:`Reply`.

Messages never contain the API key (:func:`redact`).
"""

from __future__ import annotations

import asyncio
import email.utils
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal
from urllib.parse import urlsplit

import aiohttp
import orjson

from .errors import Fatal, GarbledBody, Rejected, Retryable


@dataclass(frozen=True)
class Reply:
    """A usable chat completion: the text, the server's token counts, its model name."""

    text: str
    usage: dict[str, int]
    model: str
    latency: float = 0.0  # seconds from send to the whole body


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


class _TransportErrors:
    __slots__ = ("what", "key", "timeout")

    def __init__(self, what: str, key: str | None, timeout: float | None) -> None:
        self.what, self.key, self.timeout = what, key, timeout

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> Literal[False]:
        prefix = f"{self.what}: " if self.what else ""
        if isinstance(exc, asyncio.TimeoutError):  # before ClientError: aiohttp's timeouts are both
            after = f" after {self.timeout:g} s" if self.timeout is not None else ""
            raise Retryable(f"{prefix}timed out{after}") from None
        if isinstance(exc, aiohttp.ClientError):
            raise Retryable(redact(f"{prefix}connection error: {type(exc).__name__}: {exc}", self.key)) from None
        return False


def transport_errors(what: str = "", key: str | None = None, timeout: float | None = None) -> _TransportErrors:
    """``with transport_errors(what, key):`` around a request turns a timeout or a
    dropped connection into :class:`Retryable`, ``what`` leading its message
    (and ``timeout``, when given, named in it); everything else passes through."""
    return _TransportErrors(what, key, timeout)


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
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        return max(0.0, when.timestamp() - time.time())


def error_info(body: bytes | str | Mapping[str, Any] | Any) -> tuple[str, str]:
    """(message, code) of an error body, tolerant of anything.

    ``body`` is the raw bytes of an answer or an already parsed object: either
    ``{"error": {"message", "code" or "type"}}``, ``{"error": "text"}`` or the
    inner object itself; anything else gives its first 200 characters.
    """
    obj = body
    if isinstance(body, (bytes, bytearray, str)):
        try:
            obj = orjson.loads(body)
        except orjson.JSONDecodeError:
            obj = None
    if isinstance(obj, Mapping):
        err = obj.get("error")
        if isinstance(err, str) and err.strip():
            return err.strip(), ""
        inner = err if isinstance(err, Mapping) else obj
        return str(inner.get("message") or "").strip(), str(inner.get("code") or inner.get("type") or "").strip()
    if isinstance(body, (bytes, bytearray)):
        return body[:200].decode("utf-8", "replace"), ""
    return str(body)[:200], ""


def error_text(body: bytes | str | Mapping[str, Any] | Any) -> str:
    """One line for an error body: ``code: message``, else the body's first 200 characters."""
    message, code = error_info(body)
    text = ": ".join(x for x in (code, message) if x)
    if text:
        return text
    return orjson.dumps(body).decode()[:200] if isinstance(body, Mapping) else str(body)[:200]


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


def read_completion(body: bytes | str | Mapping[str, Any], latency: float = 0.0) -> Reply:
    """The reply in a chat completion body (raw bytes or parsed), or :class:`GarbledBody`
    saying what is missing: a 200 that is no completion is worth asking again."""
    try:
        data = orjson.loads(body) if isinstance(body, (bytes, bytearray, str)) else body
        text = data["choices"][0]["message"]["content"]
        if not isinstance(text, str):
            raise TypeError("content is not a string")
        usage = {k: v for k, v in (data.get("usage") or {}).items() if isinstance(v, int)}
        model = str(data.get("model", ""))
    except (orjson.JSONDecodeError, KeyError, IndexError, TypeError, AttributeError) as e:
        raise GarbledBody(f"unreadable response body ({e})", f"{type(e).__name__}: {e}") from None
    return Reply(text, usage, model, latency)
