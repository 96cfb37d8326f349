"""The HTTP face of the forecaster: routes, JSON errors, one log line per API call.

=============================  ===============================================
``POST /v1/forecast``          one pitch -> prediction, persona scores, requests sent
``POST /v1/forecast:batch``    a list of pitches (or ``{"pitches": [...]}``) -> ``{"forecasts": [...]}``
``GET /v1/model``              what the model was trained on, its metrics, where questions go
``GET /healthz``               up, cache size, counts
``GET /``                      the page (``page/``: HTML, JS and CSS served as they are)
=============================  ===============================================

A pitch the loaders would refuse is ``400 {"error": {"field", "message"}}``
naming the field; a question the provider left unanswered is ``502`` with the
reason. Neither, nor the log, ever holds the API key (the engine's messages
are redacted, and this module redacts again what it shows).
"""

from __future__ import annotations

import importlib.resources
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web

from ..async_client.transport import redact
from .forecast import FieldError, check_pitch
from .service import Forecaster, ProviderError

SERVICE = web.AppKey("liveroom_forecaster", Forecaster)
MAX_BATCH = 100
PAGE = importlib.resources.files(__package__) / "page"
ASSETS = {"index.html": "text/html", "app.js": "text/javascript", "style.css": "text/css"}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def json_response(body: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(body), status=status, content_type="application/json")


def error_response(status: int, message: str, field: str | None = None) -> web.Response:
    return json_response({"error": {"field": field, "message": message}}, status)


async def read_json(request: web.Request) -> Any:
    """The body as JSON (strict: no NaN), or a 400 naming the body."""
    try:
        return orjson.loads(await request.read())
    except orjson.JSONDecodeError as e:
        raise FieldError("body", f"not valid JSON ({e})") from None


# ----------------------------------------------------------------- routes

async def forecast(request: web.Request) -> web.Response:
    pitch = check_pitch(await read_json(request))
    result = await request.app[SERVICE].forecast(pitch)
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
    results, sent = await request.app[SERVICE].forecast_many(pitches)
    request["note"] = f"{len(pitches)} pitches, {sent} sent"
    return json_response({"forecasts": results, "requests_sent": sent})


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
    """Field errors -> 400, provider failures -> 502; one line on stderr per API call."""
    t0 = time.monotonic()
    key = request.app[SERVICE].settings.api_key
    try:
        response = await handler(request)
    except FieldError as e:
        response = error_response(400, e.message, e.field)
        request["note"] = redact(f"{e.field}: {e.message}", key)[:200]
    except ProviderError as e:
        reason = redact(str(e), key)
        response = error_response(502, f"the model provider failed: {reason}")
        request["note"] = reason
    if request.path.startswith("/v1/"):
        note = request.get("note")
        print(f"serve: {request.method} {request.path} {response.status} in {time.monotonic() - t0:.2f} s"
              + (f": {note}" if note else ""), file=sys.stderr, flush=True)
    return response


async def _lifetime(app: web.Application) -> AsyncIterator[None]:
    async with app[SERVICE]:
        yield


def make_app(service: Forecaster) -> web.Application:
    """The application over ``service``, which it opens on start-up and closes on clean-up."""
    app = web.Application(middlewares=[errors_and_log], client_max_size=4 << 20)
    app[SERVICE] = service
    app.cleanup_ctx.append(_lifetime)
    app.router.add_post("/v1/forecast", forecast)
    app.router.add_post("/v1/forecast:batch", forecast_batch)
    app.router.add_get("/v1/model", model)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/", page)
    app.router.add_get("/page/{name}", page)
    return app
