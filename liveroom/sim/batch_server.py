"""A local OpenAI-compatible Batch API on top of the chat simulator.

The application is the simulator of :mod:`liveroom.sim.server` (so
``POST /v1/chat/completions`` answers as usual and a run can be finished in
direct mode against the same base URL) plus:

* ``POST /v1/files`` (multipart: ``purpose=batch``, ``file``), ``GET
  /v1/files/{id}``, ``GET /v1/files/{id}/content``;
* ``POST /v1/batches`` (``input_file_id``, ``endpoint``,
  ``completion_window``), ``GET /v1/batches`` (newest first, ``limit``),
  ``GET /v1/batches/{id}``, ``POST /v1/batches/{id}/cancel``;
* ``GET /batch-stats``: counters (uploads, batches made, batches per input
  file, Batch API calls, ...).

A batch really is processed: every line's body is read back with
:func:`~liveroom.sim.prompt.read_prompt` and answered with the simulator's
:func:`~liveroom.sim.server.answer`, so its replies carry the same scores as
direct mode. Its lifecycle moves one step every ``polls_per_step``
retrievals: ``validating`` -> ``in_progress`` (half the lines counted) ->
``in_progress`` (all) -> ``finalizing`` -> ``completed`` (or ``expired`` /
``failed``). What real providers do wrong or slowly can be switched on in
:class:`BatchConfig`: an upload that stays invisible for a while, lines that
end in the error file, replies without JSON, an expired batch that did only
part of its lines, output lines out of order, failing API calls, a slow
batch creation.

Run it alone with ``python -m liveroom.sim.batch_server --port 0``.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import random
import signal
import time
from collections import Counter
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Sequence

import orjson
from aiohttp import web

from ..errors import LiveroomError
from .prompt import PromptError, read_prompt
from .server import STATE, SimConfig, answer, make_app as make_sim_app

ENDPOINTS = ("/v1/chat/completions",)
WINDOWS = ("24h",)
STEPS = ("validating", "in_progress", "in_progress", "finalizing")  # then the end state


@dataclass
class BatchConfig:
    sim: SimConfig = field(default_factory=SimConfig)
    polls_per_step: int = 1        # retrievals per lifecycle step
    file_delay_s: float = 0.0      # an upload is unknown (404) for this long
    error_every: int = 0           # every Nth line (input order) ends in the error file (HTTP 500 body)
    nonjson_every: int = 0         # every Nth line is answered with prose, no JSON
    expire_after: int | None = None  # do only this many lines, then end as expired
    shuffle: bool = False          # output lines in a random order
    api_fail_first: int = 0        # the first N Batch API calls get 503
    create_delay_s: float = 0.0    # POST /batches answers after this long


@dataclass
class Batch:
    obj: dict[str, Any]
    lines: list[dict[str, Any]]     # the validated input lines
    errors: list[dict[str, Any]]    # validation errors: the batch fails
    polls: int = 0
    cancel_at: int | None = None    # lines done when a cancel came


class BatchState:
    def __init__(self, config: BatchConfig):
        self.config = config
        self.files: dict[str, dict[str, Any]] = {}
        self.contents: dict[str, bytes] = {}
        self.batches: dict[str, Batch] = {}
        self.counts: Counter[str] = Counter()
        self.per_file: Counter[str] = Counter()
        self.fail_left = config.api_fail_first
        self.next_id = 0

    def new_id(self, prefix: str) -> str:
        self.next_id += 1
        return f"{prefix}-{self.next_id:06d}"

    def stats(self) -> dict[str, Any]:
        return {**self.counts, "batches_per_file": dict(self.per_file)}


BATCH_STATE = web.AppKey("liveroom_batch_state", BatchState)


def _json(obj: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(obj), status=status, content_type="application/json")


def _err(status: int, message: str, code: str | None = None, type_: str = "invalid_request_error") -> web.Response:
    return _json({"error": {"message": message, "type": type_, "param": None, "code": code}}, status)


def _gate(request: web.Request) -> web.Response | None:
    """Auth and injected failures shared by every Batch API route."""
    bs = request.app[BATCH_STATE]
    bs.counts["api_calls"] += 1
    key = request.app[STATE].config.api_key
    if key is not None and not hmac.compare_digest(
            request.headers.get("Authorization", "").encode(), ("Bearer " + key).encode()):
        bs.counts["unauthorized"] += 1
        return _err(401, "Incorrect API key provided", "invalid_api_key")
    if bs.fail_left > 0:
        bs.fail_left -= 1
        bs.counts["injected_503"] += 1
        return _err(503, "The server is overloaded (simulated).", "service_unavailable", "server_error")
    return None


def _visible(bs: BatchState, file_id: str) -> dict[str, Any] | None:
    f = bs.files.get(file_id)
    if f is None or time.time() < f["_visible_at"]:
        return None
    return {k: v for k, v in f.items() if not k.startswith("_")}


# ----------------------------------------------------------------- files

async def upload(request: web.Request) -> web.Response:
    if (r := _gate(request)) is not None:
        return r
    bs = request.app[BATCH_STATE]
    if not request.content_type.startswith("multipart/"):
        return _err(400, "expected multipart/form-data with 'purpose' and 'file'")
    purpose, data, filename = None, None, None
    async for part in await request.multipart():
        if part.name == "purpose":
            purpose = (await part.text()).strip()
        elif part.name == "file":
            filename = part.filename or "upload.jsonl"
            data = bytes(await part.read())
    if purpose != "batch":
        return _err(400, f"'purpose' must be 'batch', got {purpose!r}")
    if data is None:
        return _err(400, "'file' is a required field")
    bs.counts["uploads"] += 1
    fid = bs.new_id("file")
    now = time.time()
    bs.files[fid] = {"id": fid, "object": "file", "bytes": len(data), "created_at": int(now),
                     "filename": filename, "purpose": "batch", "status": "processed",
                     "_visible_at": now + bs.config.file_delay_s}
    bs.contents[fid] = data
    return _json({**{k: v for k, v in bs.files[fid].items() if not k.startswith("_")}, "status": "uploaded"})


async def get_file(request: web.Request) -> web.Response:
    if (r := _gate(request)) is not None:
        return r
    bs = request.app[BATCH_STATE]
    bs.counts["file_gets"] += 1
    info = _visible(bs, request.match_info["id"])
    if info is None:
        bs.counts["file_not_found"] += 1
        return _err(404, f"No such File object: {request.match_info['id']}", "file_not_found")
    return _json(info)


async def file_content(request: web.Request) -> web.Response:
    if (r := _gate(request)) is not None:
        return r
    bs = request.app[BATCH_STATE]
    fid = request.match_info["id"]
    if _visible(bs, fid) is None:
        return _err(404, f"No such File object: {fid}", "file_not_found")
    bs.counts["downloads"] += 1
    return web.Response(body=bs.contents[fid], content_type="application/octet-stream")


# ----------------------------------------------------------------- batches

def _validate(data: bytes, endpoint: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    lines, errors, ids = [], [], set()
    for n, raw in enumerate(data.splitlines(), 1):
        if not raw.strip():
            continue
        try:
            obj = orjson.loads(raw)
        except orjson.JSONDecodeError:
            errors.append({"code": "invalid_json_line", "message": "This line is not parseable as valid JSON.",
                           "line": n})
            continue
        cid = obj.get("custom_id") if isinstance(obj, dict) else None
        if not isinstance(cid, str) or not cid:
            errors.append({"code": "missing_required_parameter", "message": "custom_id is required", "line": n})
        elif cid in ids:
            errors.append({"code": "duplicate_custom_id", "message": f"duplicate custom_id {cid!r}", "line": n})
        elif obj.get("method") != "POST" or obj.get("url") != endpoint:
            errors.append({"code": "invalid_url", "message": f"method must be POST and url {endpoint}", "line": n})
        elif not isinstance(obj.get("body"), dict):
            errors.append({"code": "invalid_request", "message": "body must be an object", "line": n})
        else:
            ids.add(cid)
            lines.append(obj)
    if not lines and not errors:
        errors.append({"code": "empty_file", "message": "The input file is empty.", "line": None})
    return lines, errors


async def create_batch(request: web.Request) -> web.Response:
    if (r := _gate(request)) is not None:
        return r
    bs = request.app[BATCH_STATE]
    bs.counts["create_calls"] += 1
    try:
        body = orjson.loads(await request.read())
        fid, endpoint, window = body["input_file_id"], body["endpoint"], body["completion_window"]
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return _err(400, "input_file_id, endpoint and completion_window are required")
    if bs.config.create_delay_s:
        await asyncio.sleep(bs.config.create_delay_s)  # a client gone meanwhile cancels this handler
    if endpoint not in ENDPOINTS:
        return _err(400, f"endpoint must be one of {', '.join(ENDPOINTS)}", "invalid_value")
    if window not in WINDOWS:
        return _err(400, "completion_window must be '24h'", "invalid_value")
    info = _visible(bs, fid)
    if info is None:
        bs.counts["create_before_visible"] += 1
        return _err(400, f"No such File object: {fid}", "file_not_found")
    lines, errors = _validate(bs.contents[fid], endpoint)
    bid = bs.new_id("batch")
    now = int(time.time())
    obj = {"id": bid, "object": "batch", "endpoint": endpoint, "errors": None, "input_file_id": fid,
           "completion_window": window, "status": "validating", "output_file_id": None, "error_file_id": None,
           "created_at": now, "in_progress_at": None, "expires_at": now + 86400, "finalizing_at": None,
           "completed_at": None, "failed_at": None, "expired_at": None, "cancelling_at": None,
           "cancelled_at": None, "request_counts": {"total": 0, "completed": 0, "failed": 0},
           "metadata": body.get("metadata")}
    bs.batches[bid] = Batch(obj, lines, errors)
    bs.counts["batches_created"] += 1
    bs.per_file[fid] += 1
    return _json(obj)


def _done_lines(bs: BatchState, b: Batch, step: int) -> int:
    n = len(b.lines)
    if bs.config.expire_after is not None:
        n = min(n, bs.config.expire_after)
    if b.cancel_at is not None:
        return min(n, b.cancel_at)
    return 0 if step <= 0 else (n // 2 if step == 1 else n)


def _process(bs: BatchState, app: web.Application, b: Batch, upto: int) -> tuple[list[bytes], list[bytes]]:
    """Output and error lines for the first ``upto`` input lines."""
    cfg = bs.config
    sim = app[STATE].config
    out, err = [], []
    for n, line in enumerate(b.lines[:upto], 1):
        rid = f"batch_req_{b.obj['id']}_{n}"
        if cfg.error_every and n % cfg.error_every == 0:
            err.append(orjson.dumps({"id": rid, "custom_id": line["custom_id"], "response": {
                "status_code": 500, "request_id": rid, "body": {"error": {
                    "message": "The server had an error processing your request (simulated).",
                    "type": "server_error", "param": None, "code": None}}}, "error": None}))
            continue
        messages = line["body"].get("messages") or []
        try:
            prompt = read_prompt(messages)
        except PromptError as e:
            err.append(orjson.dumps({"id": rid, "custom_id": line["custom_id"], "response": {
                "status_code": 400, "request_id": rid, "body": {"error": {
                    "message": f"unrecognised prompt: {e}", "type": "invalid_request_error",
                    "param": "messages", "code": None}}}, "error": None}))
            continue
        convo = orjson.dumps([(m.get("role"), m.get("content")) for m in messages if isinstance(m, dict)])
        digest = hashlib.blake2b(convo, digest_size=8).digest()
        pick = int.from_bytes(digest[:4], "little") + sim.seed  # the same wording as a chat request
        fault = "nonjson" if cfg.nonjson_every and n % cfg.nonjson_every == 0 else None
        content = answer(prompt, pick, fault)
        pt = sum(len(str(m.get("content", ""))) for m in messages if isinstance(m, dict)) // 2 + 1
        ct = len(content) // 2 + 1
        model = line["body"].get("model")
        out.append(orjson.dumps({"id": rid, "custom_id": line["custom_id"], "response": {
            "status_code": 200, "request_id": rid, "body": {
                "id": f"chatcmpl-{rid}", "object": "chat.completion", "created": int(time.time()),
                "model": model if isinstance(model, str) and model else sim.model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                             "logprobs": None, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": pt, "completion_tokens": ct, "total_tokens": pt + ct}}},
            "error": None}))
    if cfg.shuffle:
        random.Random(sim.seed).shuffle(out)
        random.Random(sim.seed + 1).shuffle(err)
    return out, err


def _store(bs: BatchState, lines: list[bytes], purpose: str) -> str | None:
    if not lines:
        return None
    fid = bs.new_id("file")
    data = b"\n".join(lines) + b"\n"
    bs.files[fid] = {"id": fid, "object": "file", "bytes": len(data), "created_at": int(time.time()),
                     "filename": f"{purpose}.jsonl", "purpose": purpose, "status": "processed", "_visible_at": 0}
    bs.contents[fid] = data
    return fid


def _finish(bs: BatchState, app: web.Application, b: Batch, status: str) -> None:
    o = b.obj
    upto = _done_lines(bs, b, len(STEPS))
    out, err = _process(bs, app, b, upto)
    if status == "expired":
        for n, line in enumerate(b.lines[upto:], upto + 1):
            err.append(orjson.dumps({"id": f"batch_req_{o['id']}_{n}", "custom_id": line["custom_id"],
                                     "response": None, "error": {
                                         "code": "batch_expired",
                                         "message": "This request could not be executed before the "
                                                    "completion window expired."}}))
    o["output_file_id"] = _store(bs, out, "batch_output")
    o["error_file_id"] = _store(bs, err, "batch_output")
    o["request_counts"] = {"total": len(b.lines), "completed": len(out), "failed": len(err)}
    o["status"] = status
    o[f"{status}_at"] = int(time.time())


def _advance(bs: BatchState, app: web.Application, b: Batch) -> None:
    o = b.obj
    if o["status"] in ("completed", "failed", "expired", "cancelled"):
        return
    b.polls += 1
    if o["status"] == "cancelling":
        _finish(bs, app, b, "cancelled")
        return
    step = b.polls // max(1, bs.config.polls_per_step)
    if step >= 1 and b.errors:
        o.update(status="failed", failed_at=int(time.time()), errors={"object": "list", "data": b.errors})
        return
    if step >= len(STEPS):
        expired = bs.config.expire_after is not None and bs.config.expire_after < len(b.lines)
        _finish(bs, app, b, "expired" if expired else "completed")
        return
    o["status"] = STEPS[step]
    if step >= 1:
        o["in_progress_at"] = o["in_progress_at"] or int(time.time())
        done = _done_lines(bs, b, step)
        failed = sum(1 for n in range(1, done + 1) if bs.config.error_every and n % bs.config.error_every == 0)
        o["request_counts"] = {"total": len(b.lines), "completed": done - failed, "failed": failed}
    if o["status"] == "finalizing":
        o["finalizing_at"] = int(time.time())


def _batch(request: web.Request) -> tuple[BatchState, Any] | web.Response:
    """The state and the batch the path names, or the error response (auth, 404)."""
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
    _advance(bs, request.app, b)
    return _json(b.obj)


async def list_batches(request: web.Request) -> web.Response:
    if (r := _gate(request)) is not None:
        return r
    bs = request.app[BATCH_STATE]
    try:
        limit = max(1, min(100, int(request.query.get("limit", "20"))))
    except ValueError:
        return _err(400, "limit must be an integer")
    data = [b.obj for b in reversed(bs.batches.values())][:limit]
    return _json({"object": "list", "data": data, "has_more": len(bs.batches) > limit})


async def cancel_batch(request: web.Request) -> web.Response:
    if isinstance(found := _batch(request), web.Response):
        return found
    bs, b = found
    if b.obj["status"] in ("completed", "failed", "expired", "cancelled"):
        return _err(409, f"Cannot cancel a batch with status {b.obj['status']}", "invalid_state")
    bs.counts["cancels"] += 1
    step = b.polls // max(1, bs.config.polls_per_step)
    b.cancel_at = _done_lines(bs, b, step)
    b.obj.update(status="cancelling", cancelling_at=int(time.time()))
    return _json(b.obj)


async def batch_stats(request: web.Request) -> web.Response:
    return _json(request.app[BATCH_STATE].stats())


def make_app(config: BatchConfig | None = None) -> web.Application:
    """The chat simulator with the Batch API routes added."""
    config = config or BatchConfig()
    app = make_sim_app(config.sim)
    app[BATCH_STATE] = BatchState(config)
    app.router.add_post("/v1/files", upload)
    app.router.add_get("/v1/files/{id}", get_file)
    app.router.add_get("/v1/files/{id}/content", file_content)
    app.router.add_post("/v1/batches", create_batch)
    app.router.add_get("/v1/batches", list_batches)
    app.router.add_get("/v1/batches/{id}", get_batch)
    app.router.add_post("/v1/batches/{id}/cancel", cancel_batch)
    app.router.add_get("/batch-stats", batch_stats)
    return app


@asynccontextmanager
async def run_batch_server(config: BatchConfig | None = None,
                           app: web.Application | None = None) -> AsyncIterator[str]:
    """Serve on ``config.sim.host:port`` for the block; yields ``http://HOST:PORT/v1``."""
    config = config or BatchConfig()
    app = app or make_app(config)
    runner = web.AppRunner(app, handler_cancellation=True, shutdown_timeout=0.5, access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, config.sim.host, config.sim.port)
        try:
            await site.start()
        except OSError as e:
            raise LiveroomError(f"cannot listen on {config.sim.host}:{config.sim.port}: {e.strerror or e}") from None
        host, port = runner.addresses[0][:2]
        yield f"http://{host}:{port}/v1"
    finally:
        await runner.cleanup()


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="batch-server", description=__doc__.split("\n\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8000)
    ap.add_argument("--api-key", default=None)
    ap.add_argument("--polls-per-step", type=int, default=1)
    ap.add_argument("--file-delay", type=float, default=0.0, help="seconds an upload stays invisible")
    ap.add_argument("--error-every", type=int, default=0)
    ap.add_argument("--nonjson-every", type=int, default=0)
    ap.add_argument("--expire-after", type=int, default=None)
    ap.add_argument("--shuffle", action="store_true")
    args = ap.parse_args(argv)
    config = BatchConfig(SimConfig(host=args.host, port=args.port, api_key=args.api_key),
                         polls_per_step=args.polls_per_step, file_delay_s=args.file_delay,
                         error_every=args.error_every, nonjson_every=args.nonjson_every,
                         expire_after=args.expire_after, shuffle=args.shuffle)

    async def serve() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        async with run_batch_server(config) as url:
            print(f"listening on {url}", flush=True)
            await stop.wait()

    asyncio.run(serve())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
