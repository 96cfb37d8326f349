"""The chat-completions simulator as an aiohttp application: state, routes, serving.

:func:`make_app` builds it from a :class:`~liveroom.sim.config.SimConfig`;
:func:`run_server` serves it for a block and yields its base URL. The routes,
counters and faults are documented in :mod:`liveroom.sim.server` (the
``bin/sim-server`` command).
"""

from __future__ import annotations

import asyncio
import struct
import sys
import time
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator

import orjson
from aiohttp import web

from .completion import (
    complete,
    completion_body,
    conversation_digest,
    error_object,
    logprobs_asked,
    max_tokens_of,
    model_of,
    prompt_tokens,
)
from .config import SimConfig
from .faults import Refusal, Window, draw, http_fault, reset, retry_headers, window_retry
from .profiles import OPENAI, PROFILES
from .prompt import Prompt, PromptError, read_prompt
from .serving import json_response, require_key, serve

PER_SECOND_WINDOW = 120  # seconds of per-second counts kept for /stats
OPEN_PATHS = {"/health", "/stats"}  # answered without the API key


def _tick(per_second: dict[int, int]) -> None:
    """Count one in the current second of ``per_second``, dropping seconds older than the window."""
    sec = int(time.time())
    if sec in per_second:
        per_second[sec] += 1
        return
    per_second[sec] = 1
    if len(per_second) > PER_SECOND_WINDOW:
        for old in [s for s in per_second if s <= sec - PER_SECOND_WINDOW]:
            del per_second[old]


class SimState:
    """Counters and per-conversation memory of one running simulator."""

    def __init__(self, config: SimConfig):
        self.config = config
        self.profile = PROFILES[config.profile]
        self.cap_profile = OPENAI if config.cap_code == "none" else self.profile
        self.retry = retry_headers(config.retry_after, config.retry_after_ms)
        self.faults_p = config.fault_probabilities()
        self.seed_bytes = struct.pack("<q", config.seed)
        self.requests = 0
        self.answered = 0
        self.replies: dict[str, int] = {}
        self.error_codes: dict[str, dict[str, int]] = {}
        self.faults: dict[str, int] = {}
        self.stages: dict[str, int] = {}
        self.duplicates = 0
        self.reasks = 0
        self.rate_limited = 0
        self.token_limited = 0
        self.capped = 0
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.in_flight = 0
        self.max_in_flight = 0
        # conversation digest -> (times seen << 1) | answered-with-200 bit
        self.seen: dict[bytes, int] = {}
        self.per_second: dict[int, int] = {}
        self.per_second_answered: dict[int, int] = {}
        self.rpm = Window(config.rpm_limit) if config.rpm_limit else None
        self.tpm = Window(config.tpm_limit) if config.tpm_limit else None
        # one test per request decides whether any refusal before the latency can apply
        self.gated = bool(config.max_inflight or self.rpm or self.tpm or config.arrears_after is not None)
        self.arrears_started_at: float | None = None
        self.arrears_start_request: int | None = None
        self.fail_left = config.fail_first
        self.next_id = 0
        self.serial = 0  # numbers the ids of error bodies

    def arrived(self) -> None:
        """Count a chat request (in ``requests`` and its second of ``per_second``)."""
        self.requests += 1
        _tick(self.per_second)

    def count_reply(self, status: int, note: str = "") -> None:
        """Count a chat reply by status (and log it with ``--log-requests``)."""
        key = str(status)
        self.replies[key] = self.replies.get(key, 0) + 1
        if self.config.log_requests:
            print(f"sim-server: {status} {note}".rstrip(), file=sys.stderr, flush=True)

    def count_code(self, status: int, body: Any) -> None:
        """Count an error reply by status and its body's ``error.code`` (else ``error.type``)."""
        err = body.get("error") if isinstance(body, dict) else None
        code = (err.get("code") or err.get("type")) if isinstance(err, dict) else None
        by_code = self.error_codes.setdefault(str(status), {})
        by_code[str(code)] = by_code.get(str(code), 0) + 1

    def reply(self, status: int, body: Any, headers: dict[str, str] | None = None, note: str = "") -> web.Response:
        """A chat reply, counted (with the rate-limit headers under ``--ratelimit-headers``)."""
        if status != 200:
            self.count_code(status, body)
        if self.config.ratelimit_headers:
            headers = {**(headers or {}), **self.ratelimit_headers()}
        self.count_reply(status, note)
        return json_response(body, status, headers)

    def ratelimit_headers(self) -> dict[str, str]:
        now = time.monotonic()
        headers = self.rpm.headers(now, "requests") if self.rpm is not None else {}
        if self.tpm is not None:
            headers.update(self.tpm.headers(now, "tokens"))
        return headers

    def in_arrears(self) -> bool:
        """``--arrears-after K``: K requests were answered, every answer is now the arrears error."""
        return self.config.arrears_after is not None and self.answered >= self.config.arrears_after

    def arrears(self) -> Refusal:
        if self.arrears_started_at is None:
            self.arrears_started_at = time.time()
            self.arrears_start_request = self.requests
        self.serial += 1
        return (*self.profile.error("arrears", self.serial), None)

    def gate(self, messages: list[dict[str, Any]], model: str) -> Refusal | None:
        """The answer given at once, before any latency: arrears, the in-flight cap, the windows."""
        cfg = self.config
        if self.in_arrears():
            return self.arrears()
        self.serial += 1
        if cfg.max_inflight and self.in_flight >= cfg.max_inflight:
            self.capped += 1
            return (*self.cap_profile.error("cap", self.serial), None)
        now = time.monotonic()
        if self.rpm is not None and (wait := self.rpm.take(now)) is not None:
            self.rate_limited += 1
            return (*self.profile.error("rate_limit", self.serial, limit=cfg.rpm_limit, wait=f"{wait:.1f}"),
                    window_retry(wait))
        if self.tpm is not None:
            requested = prompt_tokens(messages)
            if (wait := self.tpm.take(now, requested)) is not None:
                self.token_limited += 1
                return (*self.profile.error("token_limit", self.serial, limit=cfg.tpm_limit, used=self.tpm.used,
                                            requested=requested, wait=f"{wait:.1f}",
                                            wait_ms=max(1, round(wait * 1000)), model=model),
                        window_retry(wait))
        return None

    def stats(self) -> dict[str, Any]:
        cut = int(time.time()) - PER_SECOND_WINDOW
        start = self.arrears_start_request
        return {
            "requests": self.requests,
            "answered": self.answered,
            "replies": dict(self.replies),
            "error_codes": {s: dict(c) for s, c in self.error_codes.items()},
            "faults": dict(self.faults),
            "duplicates": self.duplicates,
            "reasks": self.reasks,
            "rate_limited": self.rate_limited,
            "token_limited": self.token_limited,
            "capped": self.capped,
            "stages": dict(self.stages),
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "in_flight": self.in_flight,
            "max_in_flight": self.max_in_flight,
            "per_second": sorted([s, n] for s, n in self.per_second.items() if s > cut),
            "per_second_answered": sorted([s, n] for s, n in self.per_second_answered.items() if s > cut),
            "arrears_started_at": self.arrears_started_at,
            "arrears_start_request": start,
            "requests_after_arrears": 0 if start is None else self.requests - start,
        }


STATE = web.AppKey("liveroom_sim_state", SimState)


def _bad_request(st: SimState, message: str, param: str | None = None) -> web.Response:
    return st.reply(400, error_object(message, "invalid_request_error", None, param), note=message)


def _refused(request: web.Request) -> None:
    """A chat request refused for its key still counts as received and as a 401."""
    st = request.app[STATE]
    st.arrived()
    kind = "auth" if "Authorization" in request.headers else "auth_missing"
    st.count_code(401, st.profile.error(kind, 0)[1])
    st.count_reply(401, "unauthorized")


def _read(st: SimState, raw: bytes) -> tuple[dict[str, Any], list[dict[str, Any]], Prompt] | web.Response:
    """(body, messages, prompt) of a readable request, or its 400."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return _bad_request(st, "We could not parse the JSON body of your request.")
    if not isinstance(body, dict):
        return _bad_request(st, "The request body must be a JSON object.")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return _bad_request(st, "'messages' is a required property and must be a non-empty list", "messages")
    if body.get("stream"):
        return _bad_request(st, "streaming is not supported by the simulator", "stream")
    rf = body.get("response_format")
    if rf is not None and not (isinstance(rf, dict) and rf.get("type") in ("text", "json_object", "json_schema")):
        return _bad_request(st, "'response_format.type' must be 'text', 'json_object' or 'json_schema'",
                            "response_format")
    try:
        prompt = read_prompt(messages)
    except PromptError as e:
        return _bad_request(st, f"unrecognised prompt: {e}", "messages")
    return body, messages, prompt


async def chat_completions(request: web.Request) -> web.StreamResponse:
    arrived = time.monotonic()  # the latency counts from here, so parsing is part of it, as at a real API
    st = request.app[STATE]
    cfg = st.config
    st.arrived()
    read = _read(st, await request.read())
    if isinstance(read, web.Response):
        return read
    body, messages, prompt = read
    if cfg.record_requests:
        with open(cfg.record_requests, "ab") as f:
            f.write(orjson.dumps(body) + b"\n")

    if st.gated and (refusal := st.gate(messages, model_of(body, cfg.model))) is not None:
        return st.reply(*refusal, note=f"refused {refusal[0]}")

    digest = conversation_digest(messages)
    seen = st.seen.get(digest, 0)
    if seen & 1:
        st.duplicates += 1
    st.seen[digest] = seen + 2
    if len(messages) > 2 and any(m.get("role") == "assistant" for m in messages):
        st.reasks += 1
    st.stages[prompt.stage] = st.stages.get(prompt.stage, 0) + 1

    fault, u_jitter = draw(st.faults_p, bool(cfg.jitter_ms), st.seed_bytes, digest, seen >> 1)
    if st.fail_left > 0:
        st.fail_left -= 1
        fault = cfg.fail_first_kind
    if fault is not None:
        st.faults[fault] = st.faults.get(fault, 0) + 1
    delay = cfg.latency_ms / 1000.0
    if cfg.jitter_ms:
        delay = max(0.0, delay + (2.0 * u_jitter - 1.0) * cfg.jitter_ms / 1000.0)

    st.in_flight += 1
    if st.in_flight > st.max_in_flight:
        st.max_in_flight = st.in_flight
    try:
        if delay > 0:
            await asyncio.sleep(max(0.0, arrived + delay - time.monotonic()))
        if fault == "slow":
            await asyncio.sleep(cfg.slow_ms / 1000.0)
            fault = None
        return _respond(st, request, body, messages, prompt, digest, fault)
    finally:
        st.in_flight -= 1


def _respond(st: SimState, request: web.Request, body: dict[str, Any], messages: list[dict[str, Any]],
             prompt: Prompt, digest: bytes, fault: str | None) -> web.StreamResponse:
    cfg = st.config
    note = f"{prompt.stage} {prompt.persona}" + (f" fault={fault}" if fault else "")
    if st.gated and st.in_arrears():  # it began while this request was in flight
        return st.reply(*st.arrears(), note=note + " arrears")
    if fault:
        st.serial += 1
        refusal = http_fault(fault, st.profile, st.serial, st.retry)
        if refusal is not None:
            return st.reply(*refusal, note=note)
    if fault == "reset":
        reset(request)
        if cfg.log_requests:
            print(f"sim-server: reset {note}", file=sys.stderr, flush=True)
        return web.Response(status=204)  # never reaches the client: the connection is gone

    top, temperature = logprobs_asked(body)
    if cfg.no_logprobs:  # a server that ignores the parameter: the mode, and logprobs null
        top = None
    c = complete(prompt, messages, digest, cfg.seed, fault, max_tokens_of(body) if fault == "null_content" else None,
                 top, temperature)
    st.prompt_tokens += c.prompt_tokens
    st.completion_tokens += c.completion_tokens
    if st.tpm is not None:
        st.tpm.add(time.monotonic(), c.completion_tokens)
    st.answered += 1
    _tick(st.per_second_answered)
    st.next_id += 1
    reply = completion_body(f"chatcmpl-sim{cfg.seed & 0xffff:04x}{st.next_id:08x}", model_of(body, cfg.model), c)
    st.seen[digest] |= 1
    return st.reply(200, reply, None, note)


async def models(request: web.Request) -> web.Response:
    cfg = request.app[STATE].config
    return json_response({"object": "list", "data": [
        {"id": cfg.model, "object": "model", "created": 0, "owned_by": "liveroom"}]})


async def health(request: web.Request) -> web.Response:
    return json_response(b'{"status":"ok"}')


async def stats(request: web.Request) -> web.Response:
    return json_response(request.app[STATE].stats())


def make_app(config: SimConfig | None = None) -> web.Application:
    """The simulator as an aiohttp application (validates ``config`` first).

    Serve it with ``handler_cancellation=True`` (as :func:`run_server` does)
    so that a client giving up on a ``slow`` fault ends its handler.
    """
    config = config or SimConfig()
    config.validate()
    app = web.Application(client_max_size=16 * 1024 * 1024)
    app[STATE] = st = SimState(config)
    wrong, missing = (orjson.dumps(st.profile.error(kind, 0)[1]) for kind in ("auth", "auth_missing"))
    require_key(app, config.api_key, OPEN_PATHS, wrong, missing).refused[chat_completions] = _refused
    app.router.add_post("/v1/chat/completions", chat_completions)
    app.router.add_post("/chat/completions", chat_completions)
    app.router.add_get("/v1/models", models)
    app.router.add_get("/models", models)
    app.router.add_get("/health", health)
    app.router.add_get("/stats", stats)
    return app


@asynccontextmanager
async def run_server(config: SimConfig | None = None) -> AsyncIterator[str]:
    """Serve the simulator on ``config.host:config.port`` (default 127.0.0.1, a
    free port) for the duration of the block; yields ``http://HOST:PORT/v1``."""
    config = config or SimConfig()
    async with serve(make_app(config), config.host, config.port) as url:
        yield url
