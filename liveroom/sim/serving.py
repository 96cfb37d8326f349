"""What both simulator servers share over HTTP: the key check, JSON replies, serving.

One middleware checks ``Authorization: Bearer KEY`` for every route an app
does not leave open, so the chat and the Batch API routes refuse a wrong key
the same way. :func:`serve` runs an app on a host and port for a block;
:func:`serve_command` is what a server's command line runs: the
``listening on URL`` line, then serving until SIGINT or SIGTERM.
"""

from __future__ import annotations

import asyncio
import hmac
import signal
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Awaitable, Callable

import orjson
from aiohttp import web

from ..async_client.runner import run_loop
from ..errors import LiveroomError
from .completion import error_object

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

UNAUTHORIZED = orjson.dumps(error_object("Incorrect API key provided", "invalid_request_error", "invalid_api_key"))


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    """``body`` (bytes as they are, anything else as JSON) as an application/json reply."""
    data = body if isinstance(body, bytes) else orjson.dumps(body)
    return web.Response(body=data, status=status, headers=headers, content_type="application/json")


# ----------------------------------------------------------------- the key


@dataclass
class KeyCheck:
    """The key an app requires (None: none), the paths left open, what counts
    a refusal on a route (the servers' counters include refused requests), and
    the 401 bodies for a wrong key and for none (a provider profile's)."""

    key: str | None
    open_paths: set[str] = field(default_factory=set)
    refused: dict[Handler, Callable[[web.Request], None]] = field(default_factory=dict)
    wrong: bytes = UNAUTHORIZED
    missing: bytes = UNAUTHORIZED


KEY_CHECK = web.AppKey("liveroom_sim_key_check", KeyCheck)


@web.middleware
async def check_key(request: web.Request, handler: Handler) -> web.StreamResponse:
    """401 (by default OpenAI's ``invalid_api_key`` error) unless the request carries the key."""
    check = request.app[KEY_CHECK]
    if (check.key is None or request.path in check.open_paths
            or request.match_info.http_exception is not None):  # an unknown path stays a 404
        return await handler(request)
    got = request.headers.get("Authorization")
    if got is not None and hmac.compare_digest(got.encode(), ("Bearer " + check.key).encode()):
        return await handler(request)
    count = check.refused.get(request.match_info.handler)
    if count is not None:
        count(request)
    return json_response(check.wrong if got is not None else check.missing, 401)


def require_key(app: web.Application, key: str | None, open_paths: set[str],
                wrong: bytes = UNAUTHORIZED, missing: bytes = UNAUTHORIZED) -> KeyCheck:
    """Install :func:`check_key` on ``app``; routes added later are checked too.

    Without a key no middleware is installed: nothing to check, no cost per request.
    """
    app[KEY_CHECK] = check = KeyCheck(key, set(open_paths), wrong=wrong, missing=missing)
    if key is not None:
        app.middlewares.append(check_key)
    return check


# ----------------------------------------------------------------- serving


@asynccontextmanager
async def serve(app: web.Application, host: str, port: int) -> AsyncIterator[str]:
    """Serve ``app`` on ``host:port`` (0: a free port) for the block; yields ``http://HOST:PORT/v1``.

    ``handler_cancellation``: a client that gives up (on a slow reply, a slow
    batch creation) ends its handler, as at a real server.
    """
    runner = web.AppRunner(app, handler_cancellation=True, shutdown_timeout=0.5, access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port, backlog=4096)
        try:
            await site.start()
        except OSError as e:
            raise LiveroomError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
        bound, bound_port = runner.addresses[0][:2]
        if ":" in bound:
            bound = f"[{bound}]"
        yield f"http://{bound}:{bound_port}/v1"
    finally:
        await runner.cleanup()


async def _serve_until_signal(app: web.Application, host: str, port: int) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with serve(app, host, port) as url:
        print(f"listening on {url}", flush=True)
        await stop.wait()


def serve_command(app: web.Application, host: str, port: int) -> None:
    """Print ``listening on URL`` and serve until SIGINT or SIGTERM, on the client's event loop
    (:func:`~liveroom.async_client.runner.run_loop`: uvloop where it is installed, which halves the
    simulator's CPU per request, and the collector tuned for hundreds of requests in flight; the
    runner holds none of the engine's logic that the simulator is there to test)."""
    run_loop(_serve_until_signal(app, host, port))
