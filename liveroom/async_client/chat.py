"""One chat-completions call over aiohttp.

What the answer means is decided in :mod:`.transport`, by the provider's error
code first (``provider``: its table is read before the others'):
:class:`~.errors.Retryable` (408, 409, 429, 5xx, timeouts, dropped
connections, garbled bodies) is worth another try, :class:`~.errors.Fatal`
(401, 403, no quota, arrears) stops the run, :class:`~.errors.Rejected` (other
4xx, a content filter) fails this request only. A reply's ``x-ratelimit-*``
headers come back with it (``Reply.window``).

Credentials in the base URL become the ``Authorization`` header (never sent in
the URL); every secret is masked out of the reply text and of error messages,
so nothing the server echoes reaches a record or the terminal.
"""

from __future__ import annotations

import time
from types import TracebackType
from typing import Any

import aiohttp
import orjson

from .providers import Provider
from .transport import Reply, http_error, rate_window, read_completion, target, transport_errors

CONNECT_TIMEOUT = 10.0  # seconds to make a connection: a host that never answers is known soon


class ChatClient:
    """POSTs chat-completion payloads to ``{base_url}/chat/completions``."""

    def __init__(self, base_url: str, api_key: str | None, timeout: float, connections: int,
                 provider: Provider | None = None) -> None:
        self.target = target(base_url, api_key)
        self.provider = provider
        self.url = self.target.base_url.rstrip("/") + "/chat/completions"
        self._secrets = self.target.secrets
        self._timeout = aiohttp.ClientTimeout(total=timeout, sock_connect=min(timeout, CONNECT_TIMEOUT))
        self._connections = connections
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> ChatClient:
        headers = {"Content-Type": "application/json"}
        if self.target.authorization:
            headers["Authorization"] = self.target.authorization
        self._session = aiohttp.ClientSession(
            headers=headers, timeout=self._timeout,
            connector=aiohttp.TCPConnector(limit=self._connections, ttl_dns_cache=300),
            cookie_jar=aiohttp.DummyCookieJar(),  # an API needs no cookies; parsing them costs every reply
            json_serialize=lambda o: orjson.dumps(o).decode(),
        )
        return self

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        if self._session is not None:
            await self._session.close()

    async def complete(self, payload: dict[str, Any]) -> Reply:
        assert self._session is not None, "use ChatClient as an async context manager"
        t0 = time.monotonic()
        with transport_errors("", self._secrets, self._timeout.total):
            async with self._session.post(self.url, data=orjson.dumps(payload)) as resp:
                body = await resp.read()
                status, headers = resp.status, resp.headers
        if status == 200:
            reply = read_completion(body, time.monotonic() - t0)
            text = self.target.redact(reply.text)
            window = rate_window(headers)
            return reply if text == reply.text and window is None else reply._replace(text=text, window=window)
        raise http_error(status, headers, body, self._secrets, self.url, provider=self.provider)
