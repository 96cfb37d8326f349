"""A local OpenAI-compatible Batch API on top of the chat simulator.

The application is the simulator of :mod:`liveroom.sim.chat_server` (so
``POST /v1/chat/completions`` answers as usual and a run can be finished in
direct mode against the same base URL) plus:

* ``POST /v1/files`` (multipart: ``purpose=batch``, ``file``), ``GET
  /v1/files/{id}``, ``GET /v1/files/{id}/content``;
* ``POST /v1/batches`` (``input_file_id``, ``endpoint``,
  ``completion_window``), ``GET /v1/batches`` (newest first, ``limit``,
  ``after``, ``has_more``),
  ``GET /v1/batches/{id}``, ``POST /v1/batches/{id}/cancel``;
* ``GET /batch-stats``: counters (uploads, batches made, batches per input
  file, Batch API calls, ...).

Those paths are OpenAI's; ``--profile zhipu`` or ``dashscope`` serves them
under that provider's base path instead (``/api/paas/v4/files`` ...,
``/compatible-mode/v1/files`` ..., chat completions there too) and answers as
:class:`~liveroom.sim.batch_jobs.SimProfile` says: Zhipu without ``GET
/files/{id}`` and with HTTP 435 for a file over ``--max-file-bytes``,
DashScope with its windows and ``--max-line-bytes``.

Batches are processed as :mod:`liveroom.sim.batch_jobs` describes, with the
same answers as direct mode. What real providers do wrong or slowly can be
switched on in :class:`~liveroom.sim.batch_jobs.BatchConfig`: an upload that
stays invisible for a while, lines that end in the error file, replies
without JSON, an expired batch that did only part of its lines, output lines
out of order, failing API calls, a slow batch creation.

Run it alone with ``python -m liveroom.sim.batch_server --port 0``.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from contextlib import asynccontextmanager
from typing import AsyncIterator, Sequence

import orjson
from aiohttp import BodyPartReader, web

from ..cliargs import command_parser, non_negative_float, non_negative_int, port_number, positive_int
from .batch_jobs import SIM_PROFILES, TERMINAL, Batch, BatchConfig, SimBatchAPI, advance, cancel, new_batch
from .chat_server import chat_completions
from .chat_server import make_app as make_sim_app
from .completion import error_object
from .config import SimConfig
from .serving import KEY_CHECK, Handler, json_response, serve, serve_command

BATCH_STATE = web.AppKey("liveroom_batch_state", SimBatchAPI)


def _err(status: int, message: str, code: str | None = None, type_: str = "invalid_request_error") -> web.Response:
    return json_response(error_object(message, type_, code), status)


def _gate(request: web.Request) -> web.Response | None:
    """What every Batch API route does first: count the call, inject a failure."""
    bs = request.app[BATCH_STATE]
    bs.counts["api_calls"] += 1
    if bs.fail_left > 0:
        bs.fail_left -= 1
        bs.counts["injected_503"] += 1
        return _err(503, "The server is overloaded (simulated).", "service_unavailable", "server_error")
    return None


def _refused(request: web.Request) -> None:
    """A Batch API call refused for its key is still a call."""
    bs = request.app[BATCH_STATE]
    bs.counts["api_calls"] += 1
    bs.counts["unauthorized"] += 1


# ----------------------------------------------------------------- files

async def upload(request: web.Request) -> web.Response:
    if (r := _gate(request)) is not None:
        return r
    bs = request.app[BATCH_STATE]
    if not request.content_type.startswith("multipart/"):
        return _err(400, "expected multipart/form-data with 'purpose' and 'file'")
    purpose, data, filename = None, None, "upload.jsonl"
    async for part in await request.multipart():
        if isinstance(part, BodyPartReader) and part.name == "purpose":
            purpose = (await part.text()).strip()
        elif isinstance(part, BodyPartReader) and part.name == "file":
            filename = part.filename or "upload.jsonl"
            data = bytes(await part.read())
    if purpose != "batch":
        return _err(400, f"'purpose' must be 'batch', got {purpose!r}")
    if data is None:
        return _err(400, "'file' is a required field")
    limit = bs.profile.max_file_bytes
    if len(data) > limit:
        bs.counts["too_large"] += 1
        # the status is the profile's (Zhipu: 435, ZP-code); the body's code is the simulator's own
        return _err(bs.profile.too_large_status, f"file of {len(data)} bytes is over the limit of {limit} bytes",
                    "file_too_large")
    bs.counts["uploads"] += 1
    fid = bs.store(data, filename, "batch", bs.config.file_delay_s)
    return json_response({**{k: v for k, v in bs.files[fid].items() if not k.startswith("_")}, "status": "uploaded"})


async def get_file(request: web.Request) -> web.Response:
    if (r := _gate(request)) is not None:
        return r
    bs = request.app[BATCH_STATE]
    bs.counts["file_gets"] += 1
    info = bs.visible(request.match_info["id"])
    if info is None:
        bs.counts["file_not_found"] += 1
        return _err(404, f"No such File object: {request.match_info['id']}", "file_not_found")
    return json_response(info)


async def file_content(request: web.Request) -> web.Response:
    if (r := _gate(request)) is not None:
        return r
    bs = request.app[BATCH_STATE]
    fid = request.match_info["id"]
    if bs.visible(fid) is None:
        return _err(404, f"No such File object: {fid}", "file_not_found")
    bs.counts["downloads"] += 1
    return web.Response(body=bs.contents[fid], content_type="application/octet-stream")


# ----------------------------------------------------------------- batches

async def create_batch(request: web.Request) -> web.Response:
    if (r := _gate(request)) is not None:
        return r
    bs = request.app[BATCH_STATE]
    bs.counts["create_calls"] += 1
    try:
        body = orjson.loads(await request.read())
        fid, endpoint = body["input_file_id"], body["endpoint"]
        window = body.get("completion_window")
        if window is None and bs.profile.window_hours is not None:
            raise KeyError("completion_window")
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return _err(400, "input_file_id, endpoint and completion_window are required")
    if bs.config.create_delay_s:
        await asyncio.sleep(bs.config.create_delay_s)  # a client gone meanwhile cancels this handler
    if endpoint != bs.profile.endpoint:
        return _err(400, f"endpoint must be {bs.profile.endpoint}", "invalid_value")
    if (refused := bs.config.check_window(window)) is not None:
        return _err(400, refused, "invalid_value")
    if bs.visible(fid) is None:
        bs.counts["create_before_visible"] += 1
        return _err(400, f"No such File object: {fid}", "file_not_found")
    if body.get("auto_delete_input_file") is not None:
        bs.counts["auto_delete_input_file"] += 1
    return json_response(new_batch(bs, fid, endpoint, window, body.get("metadata")).obj)


def _batch(request: web.Request) -> tuple[SimBatchAPI, Batch] | web.Response:
    """The state and the batch the path names, or the error response (injected 503, 404)."""
    if (r := _gate(request)) is not None:
        return r
    bs = request.app[BATCH_STATE]
    b = bs.batches.get(request.match_info["id"])
    if b is None:
        return _err(404, f"No such Batch object: {request.match_info['id']}", "batch_not_found")
    return bs, b


async def get_batch(request: web.Request) -> web.Response:
    if isinstance(found := _batch(request), web.Response):
        return found
    bs, b = found
    bs.counts["batch_gets"] += 1
    advance(bs, b)
    return json_response(b.obj)


async def list_batches(request: web.Request) -> web.Response:
    """Newest first, ``limit`` (1..100, default 20) after the batch ``after`` names."""
    if (r := _gate(request)) is not None:
        return r
    bs = request.app[BATCH_STATE]
    bs.counts["list_calls"] += 1
    try:
        limit = max(1, min(100, int(request.query.get("limit", "20"))))
    except ValueError:
        return _err(400, "limit must be an integer")
    ids = list(reversed(bs.batches))
    after = request.query.get("after")
    start = ids.index(after) + 1 if after in bs.batches else 0
    data = [bs.batches[i].obj for i in ids[start:start + limit]]
    return json_response({"object": "list", "data": data, "has_more": start + limit < len(ids),
                          "first_id": data[0]["id"] if data else None, "last_id": data[-1]["id"] if data else None})


async def cancel_batch(request: web.Request) -> web.Response:
    if isinstance(found := _batch(request), web.Response):
        return found
    bs, b = found
    if b.obj["status"] in TERMINAL:
        return _err(409, f"Cannot cancel a batch with status {b.obj['status']}", "invalid_state")
    cancel(bs, b)
    return json_response(b.obj)


async def batch_stats(request: web.Request) -> web.Response:
    return json_response(request.app[BATCH_STATE].stats())


ROUTES: tuple[tuple[str, str, Handler], ...] = (  # under the profile's prefix
    ("POST", "/files", upload),
    ("GET", "/files/{id}", get_file),  # not in the Zhipu profile
    ("GET", "/files/{id}/content", file_content),
    ("POST", "/batches", create_batch),
    ("GET", "/batches", list_batches),
    ("GET", "/batches/{id}", get_batch),
    ("POST", "/batches/{id}/cancel", cancel_batch),
)


def make_app(config: BatchConfig | None = None) -> web.Application:
    """The chat simulator with the Batch API routes of ``config.profile`` added (behind the same key)."""
    config = config or BatchConfig()
    app = make_sim_app(config.sim)
    app[BATCH_STATE] = bs = SimBatchAPI(config)
    prefix = bs.profile.prefix
    for method, path, handler in ROUTES:
        if handler is get_file and not bs.profile.file_route:
            continue
        app.router.add_route(method, prefix + path, handler)
        app[KEY_CHECK].refused[handler] = _refused
    if prefix != "/v1":  # direct mode against the provider's base URL, to finish stragglers
        app.router.add_post(prefix + "/chat/completions", chat_completions)
    app.router.add_get("/batch-stats", batch_stats)
    app[KEY_CHECK].open_paths.add("/batch-stats")
    return app


@asynccontextmanager
async def run_batch_server(config: BatchConfig | None = None,
                           app: web.Application | None = None) -> AsyncIterator[str]:
    """Serve on ``config.sim.host:port`` for the block; yields the profile's base URL
    (``http://HOST:PORT/v1`` for OpenAI's)."""
    config = config or BatchConfig()
    async with serve(app or make_app(config), config.sim.host, config.sim.port) as url:
        yield url.removesuffix("/v1") + config.provider.prefix


async def _serve_until_signal(config: BatchConfig) -> None:
    """``listening on URL`` with the profile's base URL, then serve until SIGINT or SIGTERM."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with run_batch_server(config) as url:
        print(f"listening on {url}", flush=True)
        await stop.wait()


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m liveroom.sim.batch_server``: serve until SIGINT or SIGTERM."""
    ap = command_parser("batch-server", description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=port_number, default=8000, help="0 picks a free one (default: %(default)s)")
    ap.add_argument("--api-key", default=None)
    ap.add_argument("--profile", choices=tuple(SIM_PROFILES), default="openai",
                    help="answer as this provider's Batch API (default: %(default)s)")
    ap.add_argument("--file-route", action=argparse.BooleanOptionalAction, default=None,
                    help="serve GET /files/{id} (default: as the profile: not for zhipu)")
    ap.add_argument("--max-file-bytes", type=positive_int, default=None, help="upload size limit (default: the profile's)")
    ap.add_argument("--max-line-bytes", type=positive_int, default=None,
                    help="request line size limit (default: the profile's; none for openai, zhipu)")
    ap.add_argument("--polls-per-step", type=positive_int, default=1)
    ap.add_argument("--file-delay", type=non_negative_float, default=0.0, help="seconds an upload stays invisible")
    ap.add_argument("--error-every", type=non_negative_int, default=0)
    ap.add_argument("--nonjson-every", type=non_negative_int, default=0, help="every Nth first-ask line gets prose, no JSON")
    ap.add_argument("--nonjson-reasks", action="store_true", help="re-ask lines get prose too")
    ap.add_argument("--filter-every", type=non_negative_int, default=0,
                    help="every Nth line is refused by the profile's content filter (zhipu, dashscope)")
    ap.add_argument("--expire-after", type=non_negative_int, default=None)
    ap.add_argument("--shuffle", action="store_true")
    args = ap.parse_args(argv)
    config = BatchConfig(SimConfig(host=args.host, port=args.port, api_key=args.api_key),
                         polls_per_step=args.polls_per_step, file_delay_s=args.file_delay,
                         error_every=args.error_every, nonjson_every=args.nonjson_every,
                         nonjson_reasks=args.nonjson_reasks, filter_every=args.filter_every,
                         expire_after=args.expire_after, shuffle=args.shuffle, profile=args.profile,
                         file_route=args.file_route, max_file_bytes=args.max_file_bytes,
                         max_line_bytes=args.max_line_bytes)
    if config.provider.prefix == "/v1":
        serve_command(make_app(config), config.sim.host, config.sim.port)
    else:
        asyncio.run(_serve_until_signal(config))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
