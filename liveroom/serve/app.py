"""The HTTP face of the forecaster: routes, JSON errors, one log line per API call.

=============================  ===============================================
``POST /v1/forecast``          one pitch -> prediction, persona scores, requests sent
``POST /v1/forecast:batch``    a list of pitches (or ``{"pitches": [...]}``) -> ``{"forecasts": [...]}``
``GET /v1/model``              what the model was trained on, its metrics, where questions go
``GET /metrics``               counts, the live limit and latencies, in the Prometheus text format
``GET /healthz``               up, cache size, counts
``GET /``                      the page (``page/``: HTML, JS and CSS served as they are)
=============================  ===============================================

Every request passes :mod:`.guard`'s rules first (Host, Origin, JSON bodies,
the token, the per-client pitch limit). Every error is
``{"error": {"field", "message"}}`` JSON, whatever refused it: a pitch the
loaders' rules refuse (400, naming the field), a missing token (401), a
foreign Origin (403), an unknown path (404) or method (405), a body over
4 MB (413) or too slow to arrive (408), a Host not served (421), a body that
is not JSON (415), too many new pitches (429, with ``Retry-After``), a
question the provider left unanswered (502). Neither a reply nor the log ever
holds the API key (the engine's messages are redacted, and this module
redacts again what it shows). A malformed request that aiohttp refuses
before any route (a bad request line, headers over 8 KB) is one log line.
"""

from __future__ import annotations

import asyncio
import importlib.resources
import logging
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web

from ..async_client.transport import redact
from ..data.pitch import FieldError, Pitch, check_pitch
from .guard import PitchBudget, Refused, Rules
from .metrics import CONTENT_TYPE_LATEST, Metrics
from .service import Forecaster, ProviderError

SERVICE = web.AppKey("liveroom_forecaster", Forecaster)
METRICS = web.AppKey("liveroom_metrics", Metrics)
MAX_BATCH = 100
MAX_BODY = 4 << 20
PAGE = importlib.resources.files(__package__) / "page"
ASSETS = {"index.html": "text/html", "app.js": "text/javascript", "style.css": "text/css"}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class Guard:
    """The rules, the per-client pitch budget and how long a body may take to arrive."""

    rules: Rules
    budget: PitchBudget
    body_timeout: float = 30.0


GUARD = web.AppKey("liveroom_guard", Guard)


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(body=orjson.dumps(body), status=status, content_type="application/json", headers=headers)


def error_response(status: int, message: str, field: str | None = None,
                   headers: dict[str, str] | None = None) -> web.Response:
    return json_response({"error": {"field": field, "message": message}}, status, headers)


async def read_json(request: web.Request) -> Any:
    """The body as JSON (strict: no NaN), or a 400 naming the body; 408 when it takes too long to arrive."""
    try:
        async with asyncio.timeout(request.app[GUARD].body_timeout):
            raw = await request.read()
    except TimeoutError:
        raise Refused(408, f"the body did not arrive within {request.app[GUARD].body_timeout:g} s") from None
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as e:
        raise FieldError("body", f"not valid JSON ({e})") from None


async def admit(request: web.Request, pitches: list[Pitch]) -> int:
    """Charge the client for the pitches the cache cannot answer (429 past its budget); how many are new."""
    service = request.app[SERVICE]
    new = len({p.index for p in pitches if not service.is_cached(p)})
    try:
        request.app[GUARD].budget.take(request.remote or "?", new, time.monotonic())
    except Refused:
        request.app[METRICS].rate_limited.inc()
        raise
    return new


# ----------------------------------------------------------------- routes

async def forecast(request: web.Request) -> web.Response:
    pitch = check_pitch(await read_json(request))
    new = await admit(request, [pitch])
    with request.app[METRICS].latency.time():
        result = await request.app[SERVICE].forecast(pitch)
    count(request, 1, new, result["requests_sent"])
    request["note"] = f"pitch {pitch.index:013x}, {result['requests_sent']} sent"
    return json_response(result)


async def forecast_batch(request: web.Request) -> web.Response:
    body = await read_json(request)
    items = body.get("pitches") if isinstance(body, dict) else body
    if not isinstance(items, list) or not items:
        raise FieldError("pitches", "expected a non-empty list of pitches (or {\"pitches\": [...]})")
    if len(items) > MAX_BATCH:
        raise FieldError("pitches", f"{len(items)} pitches; at most {MAX_BATCH} per batch")
    pitches = [check_pitch(p, f"pitches[{i}].") for i, p in enumerate(items)]
    new = await admit(request, pitches)
    with request.app[METRICS].latency.time():
        results, sent = await request.app[SERVICE].forecast_many(pitches)
    count(request, len(pitches), new, sent)
    request["note"] = f"{len(pitches)} pitches, {sent} sent"
    return json_response({"forecasts": results, "requests_sent": sent})


def count(request: web.Request, pitches: int, new: int, sent: int) -> None:
    m = request.app[METRICS]
    m.forecasts.inc(pitches)
    m.cache_hits.inc(pitches - new)
    m.questions_sent.inc(sent)


async def metrics(request: web.Request) -> web.Response:
    return web.Response(body=request.app[METRICS].text(), headers={"Content-Type": CONTENT_TYPE_LATEST})


async def model(request: web.Request) -> web.Response:
    return json_response(request.app[SERVICE].model_info())


async def healthz(request: web.Request) -> web.Response:
    return json_response(request.app[SERVICE].health())


async def page(request: web.Request) -> web.Response:
    name = request.match_info.get("name", "index.html")
    if name not in ASSETS:
        raise web.HTTPNotFound()
    return web.Response(body=(PAGE / name).read_bytes(), content_type=ASSETS[name],
                        charset="utf-8", headers={"Cache-Control": "no-cache"})


# ----------------------------------------------------------------- errors and the log

@web.middleware
async def errors_and_log(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The guard's rules, then the route; every error as JSON; one line on stderr per API call."""
    t0 = time.monotonic()
    key = request.app[SERVICE].settings.api_key
    try:
        request.app[GUARD].rules.check(request.method, request.path, {k.lower(): v for k, v in request.headers.items()})
        response = await handler(request)
    except Refused as e:
        response = error_response(e.status, e.message, headers=e.headers)
        request["note"] = e.message[:200]
    except FieldError as e:
        response = error_response(400, e.message, e.field)
        request["note"] = redact(f"{e.field}: {e.message}", key)[:200]
    except ProviderError as e:
        reason = redact(str(e), key)
        response = error_response(502, f"the model provider failed: {reason}")
        request["note"] = reason
    except web.HTTPException as e:  # aiohttp's own: 404, 405, 413
        if e.status < 400:
            raise
        headers = {k: v for k, v in e.headers.items() if k.lower() == "allow"}
        response = error_response(e.status, e.reason if e.status != 413 else
                                  f"the body is over the limit of {MAX_BODY >> 20} MB", headers=headers)
    except (ConnectionError, asyncio.IncompleteReadError) as e:  # the client hung up mid-body: nobody reads this
        response = error_response(400, "the connection was lost before the body arrived")
        request["note"] = f"client gone: {type(e).__name__}"
    if request.path.startswith("/v1/") or response.status >= 400:
        log(request, t0, response.status, request.get("note"))
        request.app[METRICS].responses.labels(str(response.status)).inc()
    return response


def log(request: web.Request, t0: float, status: int, note: str | None) -> None:
    """One line on stderr for an API call or an error: method, path (cut), status, time, what happened."""
    print(f"serve: {request.method} {request.path[:80]} {status} in {time.monotonic() - t0:.2f} s"
          + (f": {note}" if note else ""), file=sys.stderr, flush=True)


class OneLine(logging.Formatter):
    """aiohttp's own complaints (a bad request line, headers too long, a connection lost) as one line each."""

    def format(self, record: logging.LogRecord) -> str:
        exc = record.exc_info[1] if record.exc_info else None
        why = f": {type(exc).__name__}: {exc}" if exc is not None else ""
        return f"serve: {record.getMessage()}{why}".replace("\n", " ")[:300]


def http_logger() -> logging.Logger:
    """The logger handed to aiohttp's server: warnings and errors, one line each, on stderr."""
    logger = logging.getLogger("liveroom.serve.http")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(OneLine())
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False
    return logger


async def _lifetime(app: web.Application) -> AsyncIterator[None]:
    async with app[SERVICE]:
        yield


def make_app(service: Forecaster, rules: Rules | None = None, per_minute: int = 0,
             body_timeout: float = 30.0) -> web.Application:
    """The application over ``service``, which it opens on start-up and closes on clean-up.

    ``rules`` default to this machine's names and no token; ``per_minute`` new
    pitches per client (0: no limit); a body must arrive within ``body_timeout`` s.
    """
    app = web.Application(middlewares=[errors_and_log], client_max_size=MAX_BODY)
    app[SERVICE] = service
    app[GUARD] = Guard(rules or Rules(frozenset({"localhost", "127.0.0.1", "::1"})), PitchBudget(per_minute),
                       body_timeout)
    app[METRICS] = Metrics(service.concurrency_limit, service.in_flight)
    app.cleanup_ctx.append(_lifetime)
    app.router.add_post("/v1/forecast", forecast)
    app.router.add_post("/v1/forecast:batch", forecast_batch)
    app.router.add_get("/v1/model", model)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/", page)
    app.router.add_get("/page/{name}", page)
    return app
