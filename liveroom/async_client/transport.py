"""The HTTP layer both clients share: what an answer means, in one place each.

* :func:`transport_errors`: timeouts and dropped connections -> :class:`Retryable`;
* :func:`http_error`: a non-2xx answer -> :class:`Fatal`, :class:`Retryable`,
  :class:`Rejected` or :class:`Filtered`, decided by the provider's error code
  first (:func:`~.providers.rule_for`: Zhipu's 1113 arrives as a 429 and is
  fatal), by the status when the code is not known; with the server's
  ``Retry-After`` and what a 429 says to the concurrency limiter;
* :func:`error_info`: (message, code) of an OpenAI-style error body;
* :func:`read_completion`: a chat completion body -> :class:`Reply` (its ``logprobs``
  object kept as sent); a filtered
  reply (``finish_reason`` ``content_filter``, ``sensitive``) is :class:`Filtered`,
  ``content: null`` with ``finish_reason: "length"`` (max_tokens spent reasoning)
  an empty reply the engine asks again, never a transport retry;
* :func:`rate_window`: the ``x-ratelimit-*`` headers -> :class:`~.window.Window`;
* :func:`target`: a base URL and key -> where requests go and their
  ``Authorization`` (credentials in the URL become a Basic header);
* :func:`served_as`: whether the model a server names is the one asked for.

Nothing shown or written contains a secret (:func:`redact`): the key, the
URL's password, any ``Authorization`` value (Basic or Bearer), ``user:pass@``.
"""

from __future__ import annotations

import asyncio
import base64
import email.utils
import ipaddress
import math
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Literal, NamedTuple
from urllib.parse import unquote, urlsplit, urlunsplit

import aiohttp
import orjson

from ..errors import InputError
from .errors import CONTENT_FILTER, Fatal, Filtered, GarbledBody, Rejected, Retryable, Signal
from .providers import FILTER_FINISH, Provider, rule_for
from .window import Window


class Reply(NamedTuple):
    """A usable chat completion: the text, the server's token counts, its model name
    (a named tuple: one is made per reply, and a tuple is made fastest)."""

    text: str
    usage: dict[str, int]
    model: str
    latency: float = 0.0  # seconds from send to the whole body
    finish_reason: str = ""
    window: Window | None = None  # the answer's x-ratelimit-* headers, when it had them
    logprobs: Any = None  # the choice's ``logprobs`` object as sent (asked with ``logprobs: true``), else None


_AUTH = re.compile(r"(?i)(authorization[\"']?\s*[:=]\s*[\"']?)((?:basic|bearer)\s+)?[^\s\"',;}\]]+")
_TOKEN = re.compile(r"\b(Bearer\s+|Basic\s+|sk-)[A-Za-z0-9+/=*._~\-]{4,}")
_HINTS = ("sk-", "bearer", "basic", "authorization", "://")
_USERINFO = re.compile(r"(://)[^/\s@:\"']*:[^/\s@\"']*@")


Secrets = str | tuple[str, ...] | None  # the key, or every secret of a Target


def redact(text: str, *secrets: str | None) -> str:
    """``text`` with each of ``secrets`` and anything shaped like one masked: an
    ``Authorization`` value, a Bearer or Basic token, an ``sk-`` key, ``user:pass@``."""
    for secret in secrets:
        if secret and len(secret) >= 4 and secret in text:
            text = text.replace(secret, "***")
    low = text.lower()  # the patterns are looked for only where a cheap search finds a hint of one
    if not any(hint in low for hint in _HINTS):
        return text
    text = _AUTH.sub(r"\1\2***", text)
    text = _TOKEN.sub(r"\1***", text)
    return _USERINFO.sub(r"\1***@", text)


def _masked(text: str, key: Secrets) -> str:
    return redact(text, *((key,) if isinstance(key, str) or key is None else key))


LOCAL_HOSTS = ("localhost",)


@dataclass(frozen=True)
class Target:
    """Where requests go: the base URL without credentials, and what authenticates them."""

    base_url: str
    authorization: str | None = field(default=None, repr=False)  # the header's value
    secrets: tuple[str, ...] = field(default=(), repr=False)     # never shown: key, password, header

    @property
    def local(self) -> bool:
        """Whether the host is this machine (a local server may need no key)."""
        host = urlsplit(self.base_url).hostname or ""
        try:
            return host in LOCAL_HOSTS or ipaddress.ip_address(host).is_loopback
        except ValueError:
            return False

    def require_key(self, key_env: str = "OPENAI_API_KEY") -> None:
        """InputError, before anything is sent, when a remote endpoint would get no credentials."""
        if self.authorization is None and not self.local:
            raise InputError(f"no API key for {endpoint_host(self.base_url)}: set {key_env} "
                             f"(a server that needs none: set it to any value, e.g. {key_env}=none)")

    def redact(self, text: str) -> str:
        return redact(text, *self.secrets)


def target(base_url: str, key: str | None) -> Target:
    """The :class:`Target` of a base URL and key; InputError for a URL that cannot be used.

    ``user:pass@`` in the URL becomes ``Authorization: Basic ...``; a URL with
    credentials and a key as well is refused (one of them would be ignored).
    """
    u = urlsplit(base_url)
    shown = endpoint_host(base_url)
    if u.scheme not in ("http", "https") or not u.hostname:
        raise InputError(f"base URL must be an http(s) URL such as https://api.openai.com/v1, got {shown!r}")
    if u.query or u.fragment or base_url.rstrip().endswith("?"):
        raise InputError(f"base URL {shown} has a query string or fragment; give the path only "
                         "(/chat/completions is appended to it)")
    if u.username is None and u.password is None:
        return Target(base_url, f"Bearer {key}" if key else None, (key,) if key else ())
    if key:
        raise InputError(f"the base URL for {shown} carries credentials (user:pass@) and OPENAI_API_KEY is "
                         "set too: use one of them")
    user, password = unquote(u.username or ""), unquote(u.password or "")
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    netloc = u.hostname if ":" not in u.hostname else f"[{u.hostname}]"
    netloc += f":{u.port}" if u.port else ""
    clean = urlunsplit((u.scheme, netloc, u.path, "", ""))
    return Target(clean, f"Basic {token}", tuple(x for x in (token, password, u.password) if x))


_DATED = re.compile(r"-(?:[0-9]{4}-[0-9]{2}-[0-9]{2}|[0-9]{8}|[0-9]{4})")


def served_as(served: str, asked: str) -> bool:
    """Whether ``served`` is ``asked`` or a dated version of it (``gpt-4o-mini-2024-07-18``,
    ``gpt-4-0613`` or ``...-20240718`` for the name without the date)."""
    if served == asked:
        return True
    return served.startswith(asked) and _DATED.fullmatch(served, len(asked)) is not None


def endpoint_host(base_url: str) -> str:
    """``scheme://host[:port]/path`` of a base URL, without credentials or query."""
    u = urlsplit(base_url)
    host = u.hostname or ""
    port = f":{u.port}" if u.port else ""
    return f"{u.scheme}://{host}{port}{u.path.rstrip('/')}"


class _TransportErrors:
    __slots__ = ("what", "key", "timeout")

    def __init__(self, what: str, key: Secrets, timeout: float | None) -> None:
        self.what, self.key, self.timeout = what, key, timeout

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> Literal[False]:
        prefix = f"{self.what}: " if self.what else ""
        if isinstance(exc, (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError)):
            # no connection was made (DNS, refused, TLS, connect timeout): before the timeouts, which it may be
            raise Retryable(_masked(f"{prefix}connection error: {type(exc).__name__}: {exc}", self.key),
                            connection=True) from None
        if isinstance(exc, asyncio.TimeoutError):  # before ClientError: aiohttp's timeouts are both
            after = f" after {self.timeout:g} s" if self.timeout is not None else ""
            raise Retryable(f"{prefix}timed out{after}") from None
        if isinstance(exc, aiohttp.ClientError):
            raise Retryable(_masked(f"{prefix}connection error: {type(exc).__name__}: {exc}", self.key)) from None
        return False


def transport_errors(what: str = "", key: Secrets = None, timeout: float | None = None) -> _TransportErrors:
    """``with transport_errors(what, key):`` around a request turns a timeout or a
    dropped connection into :class:`Retryable`, ``what`` leading its message
    (and ``timeout``, when given, named in it); everything else passes through."""
    return _TransportErrors(what, key, timeout)


def _seconds(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return max(0.0, value) if math.isfinite(value) else None


def retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds to wait from ``retry-after-ms`` or ``Retry-After`` (seconds or HTTP date);
    None, the caller's own backoff, for anything it cannot read (``soon``, ``NaN``)."""
    ms = headers.get("retry-after-ms")
    if ms and (wait := _seconds(ms)) is not None:
        return wait / 1000
    value = headers.get("Retry-After")
    if not value:
        return None
    if (wait := _seconds(value)) is not None:
        return wait
    try:
        when = email.utils.parsedate_to_datetime(value)
        return max(0.0, when.timestamp() - time.time())
    except (TypeError, ValueError, OverflowError, IndexError):
        return None


_DURATION = re.compile(r"(?:[0-9]+(?:\.[0-9]*)?(?:ms|h|m|s))+")
_PART = re.compile(r"([0-9]+(?:\.[0-9]*)?)(ms|h|m|s)")
_UNIT = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def reset_seconds(text: str | None) -> float | None:
    """Seconds of an ``x-ratelimit-reset-*`` value: ``20ms``, ``1s``, ``1.5s``, ``6m0s``, ``1h0m0s``
    or a bare number of seconds; None for anything else."""
    if not text:
        return None
    text = text.strip()
    if (plain := _seconds(text)) is not None:
        return plain
    if not _DURATION.fullmatch(text):
        return None
    return sum(float(n) * _UNIT[unit] for n, unit in _PART.findall(text))


def _count(text: str | None) -> int | None:
    try:
        return max(0, int(text)) if text is not None else None
    except ValueError:
        return None


def rate_window(headers: Mapping[str, str]) -> Window | None:
    """The ``x-ratelimit-remaining-*`` / ``x-ratelimit-reset-*`` headers (OpenAI's format,
    docs/PROVIDERS.md section 3); None when the answer has neither remaining count."""
    requests, tokens = headers.get("x-ratelimit-remaining-requests"), headers.get("x-ratelimit-remaining-tokens")
    if requests is None and tokens is None:
        return None
    return Window(_count(requests), reset_seconds(headers.get("x-ratelimit-reset-requests")),
                  _count(tokens), reset_seconds(headers.get("x-ratelimit-reset-tokens")))


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
    text = body[:200].decode("utf-8", "replace") if isinstance(body, (bytes, bytearray)) else str(body)[:200]
    return " ".join(text.split()), ""  # an HTML page or plain text: its start, on one line


def error_text(body: bytes | str | Mapping[str, Any] | Any) -> str:
    """One line for an error body: ``code: message``, else the body's first 200 characters."""
    message, code = error_info(body)
    text = ": ".join(x for x in (code, message) if x)
    if text:
        return text
    return orjson.dumps(body).decode()[:200] if isinstance(body, Mapping) else str(body)[:200]


def http_error(status: int, headers: Mapping[str, str], body: bytes, key: Secrets, url: str,
               what: str = "", provider: Provider | None = None) -> Fatal | Retryable | Rejected:
    """The error a non-2xx answer stands for, its message free of the key.

    The error code decides when ``provider``'s table (or any provider's) knows
    it: ``fatal`` codes are :class:`Fatal` naming what to do, ``filter`` ones
    :class:`Filtered`, ``request`` ones :class:`Rejected`, ``cap`` / ``rate`` /
    ``retry`` ones :class:`Retryable`. Else the status: 401/403 are
    :class:`Fatal`; 408, 409, 429 and 5xx :class:`Retryable` (with the
    server's ``Retry-After``; a 429 a ``rate`` signal); the rest :class:`Rejected`.
    """
    message, code = error_info(body)
    message = " ".join(message.split())[:500]  # one line, however much the server said
    text = _masked((f"{what}: " if what else "") + f"HTTP {status}" + (f" {code}" if code else "")
                   + (f": {message}" if message else ""), key)
    rule = rule_for(provider, code, message)
    action = rule.action if rule is not None else None
    if status in (401, 403) or action == "fatal":
        says = rule.says if rule is not None and rule.action == "fatal" else ""
        says = says or "check OPENAI_API_KEY and the endpoint {endpoint}"
        return Fatal(f"{text} ({says.format(endpoint=endpoint_host(url))})")
    if action == "filter":
        return Filtered(f"{CONTENT_FILTER}: {text}")
    if action == "request":
        return Rejected(text)
    if action is None and not (status in (408, 409, 429) or status >= 500):
        return Rejected(text)
    signal: Signal | None = None
    if action == "cap" or action == "rate":
        signal = action
    elif action is None and status == 429:  # a 429 without a code we know: a rate limit, or random
        signal = "rate"
    return Retryable(text, retry_after(headers), status, signal=signal,
                     window=rate_window(headers) if status == 429 else None)


def read_completion(body: bytes | str | Mapping[str, Any], latency: float = 0.0) -> Reply:
    """The reply in a chat completion body (raw bytes or parsed), or :class:`GarbledBody`
    saying what is missing: a 200 that is no completion is worth asking again."""
    try:
        data = orjson.loads(body) if isinstance(body, (bytes, bytearray, str)) else body
        choice = data["choices"][0]
        text = choice["message"]["content"]
        finish = choice.get("finish_reason", "")
        if finish != "stop":  # the usual reply needs no closer look
            finish = finish if type(finish) is str else ""
            if finish in FILTER_FINISH:
                raise Filtered(f"{CONTENT_FILTER}: finish_reason {finish}")
            if text is None and finish == "length":  # every token went to reasoning: an empty reply, asked again
                text = ""
        if not isinstance(text, str):
            raise TypeError("content is not a string")
        usage = data.get("usage")
        usage = {k: v for k, v in usage.items() if type(v) is int} if isinstance(usage, dict) else {}
        model = data.get("model")
        model = model if isinstance(model, str) else ""
        logprobs = choice.get("logprobs")  # read by the task, only when it asked for them
    except (orjson.JSONDecodeError, KeyError, IndexError, TypeError, AttributeError) as e:
        raise GarbledBody(f"unreadable response body ({e})", f"{type(e).__name__}: {e}") from None
    return Reply(text, usage, model, latency, finish, None, logprobs)
