"""``bin/sim-server``: a local OpenAI-compatible chat-completions simulator.

It answers the three scoring prompts of :mod:`liveroom.prompts.stages` with a
documented heuristic (:mod:`liveroom.sim.heuristic`); it is not a language
model. It lets the scoring client, the benchmarks and the tests run without a
model server, and it injects the failures real servers produce.

Usage::

    bin/sim-server --port 0                      # prints: listening on http://127.0.0.1:PORT/v1
    bin/sim-server --port 8000 --latency-ms 200 --jitter-ms 50 --p-429 0.05 --seed 1
    bin/sim-server --api-key secret --rpm-limit 600

Routes (``/v1`` and the bare paths both work for chat completions):

* ``POST /v1/chat/completions``, ``POST /chat/completions``: a chat.completion
  whose content is the stage's JSON reply, e.g. ``{"want_to_enter": 4,
  "reason": "..."}``, ``{"items": [{"idx": 1, "want_to_buy": 3, "reason":
  "..."}]}`` or ``{"impact": 3, "reason": "..."}``. The scores come from the
  heuristic applied to what the prompt shows (see :mod:`liveroom.sim.prompt`);
  ``--seed`` changes only the reason wording and which requests get faults.
  A re-ask conversation is answered from its first user message.
  ``response_format`` (absent, ``json_object`` or ``json_schema``) gets the
  same JSON. A body that is not JSON, lacks ``messages`` or holds a prompt the
  simulator cannot read gets 400 with an OpenAI-style error object.
* ``GET /v1/models``: the one model, ``--model``.
* ``GET /health``: ``{"status": "ok"}``.
* ``GET /stats``: counters since start: ``requests`` (chat requests received),
  ``replies`` (by HTTP status), ``faults`` (injected, by kind), ``duplicates``
  (requests whose conversation - for a first question the (system, user)
  pair - was already answered with a 200 before), ``reasks`` (conversations
  holding an earlier assistant reply), ``rate_limited`` (``--rpm-limit``
  refusals), ``stages``, ``prompt_tokens``, ``completion_tokens`` (estimated
  as characters // 2 + 1), ``in_flight``, ``max_in_flight`` and
  ``per_second`` (``[unix_second, requests]`` for the last 120 seconds).

Faults (each ``--p-KIND`` a probability; they are exclusive, so they must sum
to at most 1; decided per request from the seed, the conversation and how
many times that conversation was seen, so a run is reproducible and a retry
gets a fresh draw):

===============  ============================================================
``429``          429 ``rate_limit_exceeded`` with ``Retry-After`` (seconds,
                 ``--retry-after``) and ``retry-after-ms`` headers
``quota``        429 ``insufficient_quota`` (no retry headers: do not retry)
``500``, ``503`` server errors
``reset``        the connection is dropped without a response
``slow``         the answer comes after ``--slow-ms`` (to trip client timeouts)
``nonjson``      200 whose content is prose without JSON
``fenced``       200 whose JSON sits in a ```json fence among prose (valid)
``out_of_range`` 200 with a score of 7
``wrong_key``    200 with a misspelt score key (``wantToEnter``, ``score_x``,
                 ``impact_score``)
===============  ============================================================

``--fail-first N --fail-first-kind KIND`` gives the first N readable chat
requests (server-wide) that fault, for scripted tests. ``--rpm-limit N``
refuses requests beyond N in any sliding 60-second window with 429.

The same server is available in-process: :class:`SimConfig`,
:func:`make_app` and the async context manager :func:`run_server`, which
yields the base URL ``http://127.0.0.1:PORT/v1``.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import math
import signal
import socket
import struct
import sys
import time
from collections import deque
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, fields
from typing import Any, AsyncIterator, Sequence

import orjson
from aiohttp import web

from ..async_client.runner import run_loop
from ..errors import LiveroomError
from .heuristic import buy_scores, entry_score, read_score
from .prompt import Prompt, PromptError, read_prompt

FAULT_KINDS = ("429", "500", "503", "reset", "slow", "nonjson", "fenced", "out_of_range", "wrong_key", "quota")
PER_SECOND_WINDOW = 120  # seconds of per-second counts kept for /stats
RPM_WINDOW = 60.0

# ----------------------------------------------------------------- configuration


@dataclass
class SimConfig:
    """Everything the simulator does; the CLI flags map one to one onto these."""

    host: str = "127.0.0.1"
    port: int = 0
    seed: int = 0
    model: str = "liveroom-sim"
    api_key: str | None = field(default=None, repr=False)
    latency_ms: float = 0.0
    jitter_ms: float = 0.0
    p_429: float = 0.0
    p_500: float = 0.0
    p_503: float = 0.0
    p_reset: float = 0.0
    p_slow: float = 0.0
    p_nonjson: float = 0.0
    p_fenced: float = 0.0
    p_out_of_range: float = 0.0
    p_wrong_key: float = 0.0
    p_quota: float = 0.0
    retry_after: float = 1.0
    slow_ms: float = 30000.0
    fail_first: int = 0
    fail_first_kind: str = "500"
    rpm_limit: int = 0
    log_requests: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.fail_first_kind, str):
            self.fail_first_kind = self.fail_first_kind.replace("-", "_")

    def fault_probabilities(self) -> tuple[tuple[str, float], ...]:
        return tuple((k, getattr(self, "p_" + k)) for k in FAULT_KINDS if getattr(self, "p_" + k) > 0)

    def validate(self) -> None:
        """Raise :class:`LiveroomError` naming the first bad setting."""
        for f in fields(self):
            if f.name.startswith("p_"):
                p = getattr(self, f.name)
                if not (isinstance(p, (int, float)) and 0.0 <= p <= 1.0):
                    raise LiveroomError(f"--{_flag(f.name)} must be a probability in [0, 1], got {p!r}")
        total = sum(p for _, p in self.fault_probabilities())
        if total > 1.0 + 1e-9:
            raise LiveroomError(f"the fault probabilities are exclusive and must sum to at most 1, got {total:g}")
        for name in ("latency_ms", "jitter_ms", "retry_after", "slow_ms"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0):
                raise LiveroomError(f"--{_flag(name)} must be a number >= 0, got {v!r}")
        for name in ("fail_first", "rpm_limit"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 0:
                raise LiveroomError(f"--{_flag(name)} must be an integer >= 0, got {getattr(self, name)!r}")
        if self.fail_first_kind not in FAULT_KINDS:
            raise LiveroomError(
                f"--fail-first-kind must be one of {', '.join(FAULT_KINDS)}, got {self.fail_first_kind!r}")
        if not 0 <= self.port <= 65535:
            raise LiveroomError(f"--port must be in 0..65535, got {self.port}")
        if self.api_key is not None and not self.api_key:
            raise LiveroomError("--api-key must not be empty")


def _flag(name: str) -> str:
    return name.replace("_", "-")


# ----------------------------------------------------------------- replies

ENTRY_REASONS = {
    1: ("现在这个时间不方便，不会进去", "没空也没兴趣，直接划走"),
    2: ("时间不太合适，不太想进", "兴趣不大，大概会划走"),
    3: ("有点空，可能进去看一眼", "说不准，看心情"),
    4: ("正好有空，也挺感兴趣", "这个时间适合逛逛直播"),
    5: ("正是空闲时间，一定进去看看", "很感兴趣，马上进去"),
}
BUY_REASONS = {
    1: ("太贵了，超出预算", "价格远超我的承受范围"),
    2: ("有点贵，不太舍得", "价格偏高，再看看"),
    3: ("价格还行，可以考虑", "一般，需要时再买"),
    4: ("价格合适，正好需要", "在预算之内，挺想买"),
    5: ("很便宜，非常想买", "价格实惠，马上下单"),
}
READ_REASONS = {
    1: ("感觉在夸大其词，更不想买了", "讲解让人反感"),
    2: ("有些说法不太可信", "讲得有点虚"),
    3: ("没讲出什么新东西", "对购买意愿没什么影响"),
    4: ("讲得挺实在，有点心动", "优惠说得清楚，更想买了"),
    5: ("优惠力度很大，非常心动", "讲解很有说服力，马上想买"),
}
PROSE = (
    "我觉得这个直播间还可以，可能会看一看，不过也说不准。",
    "抱歉，作为这个身份我很难给出明确的判断，要看当时的心情和安排。",
    "这个问题挺有意思的。总体来说我比较犹豫，需要再想想。",
)
WRONG_KEYS = {"entry": ("want_to_enter", "wantToEnter"), "buy": ("want_to_buy", "score_x"),
              "read": ("impact", "impact_score")}


def _reason(table: dict[int, tuple[str, ...]], score: int, pick: int) -> str:
    options = table[min(5, max(1, score))]
    return options[pick % len(options)]


def answer(prompt: Prompt, pick: int = 0, fault: str | None = None) -> str:
    """The reply content for a prompt: the heuristic's scores as the stage's JSON.

    ``pick`` chooses among reason wordings; ``fault`` is one of the content
    faults (``nonjson``, ``fenced``, ``out_of_range``, ``wrong_key``) or None.
    """
    if fault == "nonjson":
        return PROSE[pick % len(PROSE)]
    bad = 7 if fault == "out_of_range" else None
    if prompt.stage == "entry":
        s = entry_score(prompt.persona, prompt.hour or 0, prompt.workday)
        obj: dict[str, Any] = {"want_to_enter": bad or s, "reason": _reason(ENTRY_REASONS, s, pick)}
    elif prompt.stage == "buy":
        scores = buy_scores(prompt.persona, list(prompt.prices))
        items = [{"idx": i, "want_to_buy": s, "reason": _reason(BUY_REASONS, s, pick + n)}
                 for n, (i, s) in enumerate(zip(prompt.idx, scores))]
        if bad:
            items[0]["want_to_buy"] = bad
        obj = {"items": items}
    else:
        s = read_score(prompt.persona, prompt.text)
        obj = {"impact": bad or s, "reason": _reason(READ_REASONS, s, pick)}
    if fault == "wrong_key":
        right, wrong = WRONG_KEYS[prompt.stage]
        rename = lambda d: {(wrong if k == right else k): v for k, v in d.items()}  # noqa: E731
        obj = {"items": [rename(it) for it in obj["items"]]} if prompt.stage == "buy" else rename(obj)
    text = orjson.dumps(obj).decode()
    if fault == "fenced":
        return f"好的，下面是我的回答：\n```json\n{text}\n```\n以上就是我的打分。"
    return text


def _error(message: str, type_: str, code: str | None = None, param: str | None = None) -> bytes:
    return orjson.dumps({"error": {"message": message, "type": type_, "param": param, "code": code}})


def _seconds(s: float) -> str:
    return str(int(s)) if float(s).is_integer() else f"{s:g}"


# ----------------------------------------------------------------- state


class SimState:
    """Counters and per-conversation memory of one running simulator."""

    def __init__(self, config: SimConfig):
        self.config = config
        self.faults_p = config.fault_probabilities()
        self.seed_bytes = struct.pack("<q", config.seed)
        self.requests = 0
        self.replies: dict[str, int] = {}
        self.faults: dict[str, int] = {}
        self.stages: dict[str, int] = {}
        self.duplicates = 0
        self.reasks = 0
        self.rate_limited = 0
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.in_flight = 0
        self.max_in_flight = 0
        # conversation digest -> (times seen << 1) | answered-with-200 bit
        self.seen: dict[bytes, int] = {}
        self.per_second: dict[int, int] = {}
        self.window: deque[float] = deque()
        self.fail_left = config.fail_first
        self.next_id = 0

    def count_second(self, now: float) -> None:
        sec = int(now)
        ps = self.per_second
        if sec in ps:
            ps[sec] += 1
            return
        ps[sec] = 1
        if len(ps) > PER_SECOND_WINDOW:
            for old in [s for s in ps if s <= sec - PER_SECOND_WINDOW]:
                del ps[old]

    def stats(self) -> dict[str, Any]:
        cut = int(time.time()) - PER_SECOND_WINDOW
        return {
            "requests": self.requests,
            "replies": dict(self.replies),
            "faults": dict(self.faults),
            "duplicates": self.duplicates,
            "reasks": self.reasks,
            "rate_limited": self.rate_limited,
            "stages": dict(self.stages),
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "in_flight": self.in_flight,
            "max_in_flight": self.max_in_flight,
            "per_second": sorted([s, n] for s, n in self.per_second.items() if s > cut),
        }


STATE = web.AppKey("liveroom_sim_state", SimState)


def _json(body: bytes, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(body=body, status=status, headers=headers, content_type="application/json")


def _reply(st: SimState, status: int, body: bytes, headers: dict[str, str] | None = None,
           note: str = "") -> web.Response:
    key = str(status)
    st.replies[key] = st.replies.get(key, 0) + 1
    if st.config.log_requests:
        print(f"sim-server: {status} {note}".rstrip(), file=sys.stderr, flush=True)
    return _json(body, status, headers)


def _authorized(request: web.Request, key: str) -> bool:
    got = request.headers.get("Authorization", "")
    return hmac.compare_digest(got.encode(), ("Bearer " + key).encode())


_UNAUTHORIZED = _error("Incorrect API key provided", "invalid_request_error", "invalid_api_key")


def _bad_request(st: SimState, message: str, param: str | None = None) -> web.Response:
    return _reply(st, 400, _error(message, "invalid_request_error", None, param), note=message)


# ----------------------------------------------------------------- handlers


async def chat_completions(request: web.Request) -> web.StreamResponse:
    arrived = time.monotonic()  # the latency counts from here, so parsing is part of it, as at a real API
    st = request.app[STATE]
    cfg = st.config
    st.requests += 1
    now = time.time()
    st.count_second(now)
    if cfg.api_key is not None and not _authorized(request, cfg.api_key):
        return _reply(st, 401, _UNAUTHORIZED, note="unauthorized")

    try:
        body = orjson.loads(await request.read())
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

    if cfg.rpm_limit:
        mono = time.monotonic()
        win = st.window
        while win and win[0] <= mono - RPM_WINDOW:
            win.popleft()
        if len(win) >= cfg.rpm_limit:
            st.rate_limited += 1
            wait = win[0] + RPM_WINDOW - mono
            headers = {"Retry-After": str(max(1, math.ceil(wait))), "retry-after-ms": str(max(1, math.ceil(wait * 1000)))}
            msg = f"Rate limit reached: {cfg.rpm_limit} requests per minute. Please try again in {wait:.1f}s."
            return _reply(st, 429, _error(msg, "requests", "rate_limit_exceeded"), headers, note="rpm limit")
        win.append(mono)

    convo = orjson.dumps([(m.get("role"), m.get("content")) for m in messages])
    digest = hashlib.blake2b(convo, digest_size=8).digest()
    seen = st.seen.get(digest, 0)
    if seen & 1:
        st.duplicates += 1
    st.seen[digest] = seen + 2
    attempt = seen >> 1
    if len(messages) > 2 and any(m.get("role") == "assistant" for m in messages):
        st.reasks += 1
    st.stages[prompt.stage] = st.stages.get(prompt.stage, 0) + 1

    fault: str | None = None
    delay = cfg.latency_ms / 1000.0
    if st.fail_left > 0:
        st.fail_left -= 1
        fault = cfg.fail_first_kind
    if st.faults_p or cfg.jitter_ms:
        h = hashlib.blake2b(digest + st.seed_bytes + attempt.to_bytes(4, "little"), digest_size=16).digest()
        u_fault = int.from_bytes(h[:8], "little") / 2.0**64
        u_jitter = int.from_bytes(h[8:], "little") / 2.0**64
        if fault is None:
            acc = 0.0
            for kind, p in st.faults_p:
                acc += p
                if u_fault < acc:
                    fault = kind
                    break
        if cfg.jitter_ms:
            delay = max(0.0, delay + (2.0 * u_jitter - 1.0) * cfg.jitter_ms / 1000.0)
    if fault is not None:
        st.faults[fault] = st.faults.get(fault, 0) + 1

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


def _respond(st: SimState, request: web.Request, body: dict, messages: list, prompt: Prompt,
             digest: bytes, fault: str | None) -> web.StreamResponse:
    cfg = st.config
    note = f"{prompt.stage} {prompt.persona}" + (f" fault={fault}" if fault else "")
    if fault == "429":
        ra = cfg.retry_after
        headers = {"Retry-After": _seconds(ra), "retry-after-ms": str(int(round(ra * 1000)))}
        msg = f"Rate limit reached for requests (simulated). Please try again in {_seconds(ra)}s."
        return _reply(st, 429, _error(msg, "requests", "rate_limit_exceeded"), headers, note)
    if fault == "quota":
        msg = "You exceeded your current quota, please check your plan and billing details. (simulated)"
        return _reply(st, 429, _error(msg, "insufficient_quota", "insufficient_quota"), None, note)
    if fault == "500":
        msg = "The server had an error while processing your request. (simulated)"
        return _reply(st, 500, _error(msg, "server_error"), None, note)
    if fault == "503":
        msg = "The server is overloaded or not ready yet. (simulated)"
        return _reply(st, 503, _error(msg, "server_error", "service_unavailable"), None, note)
    if fault == "reset":
        _reset(request)
        if cfg.log_requests:
            print(f"sim-server: reset {note}", file=sys.stderr, flush=True)
        return web.Response(status=204)  # never reaches the client: the connection is gone

    pick = int.from_bytes(digest[:4], "little") + cfg.seed
    content = answer(prompt, pick, fault)
    prompt_chars = 0
    for m in messages:
        c = m.get("content")
        prompt_chars += len(c) if isinstance(c, str) else len(orjson.dumps(c))
    pt, ct = prompt_chars // 2 + 1, len(content) // 2 + 1
    st.prompt_tokens += pt
    st.completion_tokens += ct
    st.next_id += 1
    model = body.get("model")
    reply = {
        "id": f"chatcmpl-sim{cfg.seed & 0xffff:04x}{st.next_id:08x}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model if isinstance(model, str) and model else cfg.model,
        "system_fingerprint": "liveroom-sim",
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": content, "refusal": None},
            "logprobs": None,
            "finish_reason": "stop",
        }],
        "usage": {"prompt_tokens": pt, "completion_tokens": ct, "total_tokens": pt + ct},
    }
    st.seen[digest] |= 1
    return _reply(st, 200, orjson.dumps(reply), None, note)


def _reset(request: web.Request) -> None:
    transport = request.transport
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        try:  # linger 0: close with a TCP RST, as a crashed server would
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
    transport.abort()


async def models(request: web.Request) -> web.Response:
    cfg = request.app[STATE].config
    if cfg.api_key is not None and not _authorized(request, cfg.api_key):
        return _json(_UNAUTHORIZED, 401)
    return _json(orjson.dumps({"object": "list", "data": [
        {"id": cfg.model, "object": "model", "created": 0, "owned_by": "liveroom"}]}))


async def health(request: web.Request) -> web.Response:
    return _json(b'{"status":"ok"}')


async def stats(request: web.Request) -> web.Response:
    return _json(orjson.dumps(request.app[STATE].stats()))


def make_app(config: SimConfig | None = None) -> web.Application:
    """The simulator as an aiohttp application (validates ``config`` first).

    Serve it with ``handler_cancellation=True`` (as :func:`run_server` does)
    so that a client giving up on a ``slow`` fault ends its handler.
    """
    config = config or SimConfig()
    config.validate()
    app = web.Application(client_max_size=16 * 1024 * 1024)
    app[STATE] = SimState(config)
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
    app = make_app(config)
    # handler_cancellation: a client that gives up on a slow reply frees its handler
    runner = web.AppRunner(app, handler_cancellation=True, shutdown_timeout=0.5, access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, config.host, config.port, backlog=4096)
        try:
            await site.start()
        except OSError as e:
            raise LiveroomError(f"cannot listen on {config.host}:{config.port}: {e.strerror or e}") from None
        host, port = runner.addresses[0][:2]
        if ":" in host:
            host = f"[{host}]"
        yield f"http://{host}:{port}/v1"
    finally:
        await runner.cleanup()


# ----------------------------------------------------------------- command line

DESCRIPTION = """Serve a local OpenAI-compatible chat-completions endpoint that answers the
liveroom scoring prompts (entry, buy, read) for testing and benchmarking.
It is not a language model: it simulates the answers with a documented
heuristic (liveroom/sim/heuristic.py: persona, hour and workday for entry;
item prices against the persona's budget for buy; selling and warning words
in the transcript for read). It can also inject the faults real servers
produce.

The first line on stdout is "listening on http://HOST:PORT/v1"; with --port 0
a free port is chosen. SIGINT or SIGTERM stops it."""

EPILOG = """routes:
  POST /v1/chat/completions, POST /chat/completions   the stage's JSON reply
  GET /v1/models, GET /health, GET /stats              /stats: JSON counters

faults (--p-KIND probabilities are exclusive and sum to at most 1):
  429        429 rate_limit_exceeded with Retry-After and retry-after-ms
  quota      429 insufficient_quota
  500, 503   server errors
  reset      connection dropped without a response
  slow       answer delayed by --slow-ms (to trip client timeouts)
  nonjson    prose without JSON          fenced     JSON inside ```json fences
  out-of-range  a score of 7             wrong-key  a misspelt score key

examples:
  bin/sim-server --port 0
  bin/sim-server --port 8000 --latency-ms 200 --jitter-ms 50 --p-429 0.05 --seed 1
  bin/sim-server --api-key KEY --rpm-limit 600 --fail-first 3 --fail-first-kind 503"""


def build_parser() -> argparse.ArgumentParser:
    d = SimConfig()
    ap = argparse.ArgumentParser(
        prog="sim-server", description=DESCRIPTION, epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--host", default=d.host, help="address to bind (default %(default)s)")
    ap.add_argument("--port", type=int, default=8000, help="port to bind; 0 picks a free one (default %(default)s)")
    ap.add_argument("--seed", type=int, default=d.seed,
                    help="seed of fault choice and reason wording; scores do not depend on it (default %(default)s)")
    ap.add_argument("--model", default=d.model, help="model name reported (default %(default)s)")
    ap.add_argument("--api-key", default=None, metavar="KEY",
                    help="require 'Authorization: Bearer KEY' (default: no auth)")
    ap.add_argument("--latency-ms", type=float, default=d.latency_ms, help="mean reply latency (default %(default)s)")
    ap.add_argument("--jitter-ms", type=float, default=d.jitter_ms,
                    help="latency varies uniformly by +- this much (default %(default)s)")
    g = ap.add_argument_group("fault injection (probability per request)")
    for kind in FAULT_KINDS:
        g.add_argument(f"--p-{_flag(kind)}", dest=f"p_{kind}", type=float, default=0.0, metavar="P")
    g.add_argument("--retry-after", type=float, default=d.retry_after,
                   help="seconds in Retry-After of injected 429s (default %(default)s)")
    g.add_argument("--slow-ms", type=float, default=d.slow_ms, help="delay of a 'slow' fault (default %(default)s)")
    g.add_argument("--fail-first", type=int, default=0, metavar="N",
                   help="the first N chat requests get --fail-first-kind")
    g.add_argument("--fail-first-kind", default=d.fail_first_kind, metavar="KIND",
                   help=f"one of {', '.join(_flag(k) for k in FAULT_KINDS)} (default %(default)s)")
    ap.add_argument("--rpm-limit", type=int, default=0, metavar="N",
                    help="answer 429 beyond N requests in any 60-s window (default: no limit)")
    ap.add_argument("--log-requests", action="store_true", help="one line per request on stderr")
    return ap


def config_from_args(args: argparse.Namespace) -> SimConfig:
    values = {f.name: getattr(args, f.name) for f in fields(SimConfig)}
    config = SimConfig(**values)
    config.validate()
    return config


async def _serve(config: SimConfig) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with run_server(config) as url:
        print(f"listening on {url}", flush=True)
        await stop.wait()


def main(argv: Sequence[str] | None = None) -> int:
    config = config_from_args(build_parser().parse_args(argv))
    run_loop(_serve(config))
    return 0
