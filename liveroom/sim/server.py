"""``bin/sim-server``: a local OpenAI-compatible chat-completions simulator.

It answers the three scoring prompts of :mod:`liveroom.prompts.stages` with a
documented heuristic (:mod:`liveroom.sim.heuristic`); it is not a language
model. It lets the scoring client, the benchmarks and the tests run without a
model server, and it injects the failures real servers produce.

Usage::

    bin/sim-server --port 0                      # prints: listening on http://127.0.0.1:PORT/v1
    bin/sim-server --port 8000 --latency-ms 200 --jitter-ms 50 --p-429 0.05 --seed 1
    bin/sim-server --api-key secret --rpm-limit 600
    bin/sim-server --profile zhipu --max-inflight 16 --latency-ms 200 --arrears-after 5000
    bin/sim-server run-batch -i requests.jsonl -o output.jsonl [--model M] [--p-error 0.1]
                                                 # vLLM's offline runner: see liveroom.sim.run_batch

Routes (``/v1`` and the bare paths both work for chat completions):

* ``POST /v1/chat/completions``, ``POST /chat/completions``: a chat.completion
  whose content is the stage's JSON reply, e.g. ``{"want_to_enter": 4,
  "reason": "..."}``, ``{"items": [{"idx": 1, "want_to_buy": 3, "reason":
  "..."}]}`` or ``{"impact": 3, "reason": "..."}``. The scores come from the
  heuristic applied to what the prompt shows (see :mod:`liveroom.sim.prompt`);
  ``--seed`` changes only the reason wording and which requests get faults.
  A re-ask conversation is answered from its first user message.
  A request with ``logprobs: true`` (and ``top_logprobs: K``) gets each score
  drawn at its ``temperature`` from the heuristic's distribution and
  ``choices[0].logprobs`` with every token (:mod:`liveroom.sim.logprobs`);
  without it the reply is the heuristic's mode, as always; ``--no-logprobs``
  answers ``logprobs: null`` whatever is asked (a server that ignores it).
  ``response_format`` (absent, ``json_object`` or ``json_schema``) gets the
  same JSON. A body that is not JSON, lacks ``messages`` or holds a prompt the
  simulator cannot read gets 400 with an OpenAI-style error object.
* ``GET /v1/models``: the one model, ``--served-model``.
* ``GET /health``: ``{"status": "ok"}``.
* ``GET /stats``: counters since start: ``requests`` (chat requests received),
  ``replies`` (by HTTP status), ``faults`` (injected, by kind), ``duplicates``
  (requests whose conversation - for a first question the (system, user)
  pair - was already answered with a 200 before), ``reasks`` (conversations
  holding an earlier assistant reply), ``rate_limited`` (``--rpm-limit``
  refusals), ``token_limited`` (``--tpm-limit`` refusals), ``capped``
  (``--max-inflight`` refusals), ``answered`` (200 replies), ``error_codes``
  (error replies by HTTP status, then by the body's ``error.code``, else its
  ``error.type``: ``{"429": {"1302": 5}}``), ``stages``, ``prompt_tokens``,
  ``completion_tokens`` (estimated as characters // 2 + 1), ``in_flight``,
  ``max_in_flight``, ``per_second`` and ``per_second_answered``
  (``[unix_second, n]`` of requests and of 200 replies, last 120 seconds),
  ``arrears_started_at`` (unix time of the first arrears answer, or null),
  ``arrears_start_request`` (the ``requests`` count when it was sent) and
  ``requests_after_arrears`` (chat requests received after it).

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
``content_filter`` the profile's content-filter error (Zhipu 400 ``1301``,
                 DashScope 400 ``data_inspection_failed``; OpenAI a 200 with
                 ``content: null``, ``finish_reason: "content_filter"``)
``think``        200 whose content opens with ``<think>...</think>`` holding a
                 JSON-looking draft, then the real JSON
``null_content`` 200 with ``content: null``, ``reasoning_content`` set and
                 ``finish_reason: "length"`` (``max_tokens`` spent thinking)
===============  ============================================================

``--profile openai|zhipu|dashscope`` (default openai) answers every error
with that provider's documented status, code and body
(:mod:`liveroom.sim.profiles`, from ``docs/PROVIDERS.md``): 429 and quota
faults, ``--rpm-limit``/``--tpm-limit`` refusals, the in-flight cap, arrears,
a wrong or missing key, the content filter, 500 and 503.
``--max-inflight N`` answers a request that finds N in flight at once with
the profile's cap signal (Zhipu 429 ``1302``, OpenAI 429
``rate_limit_exceeded``, DashScope 429 ``Throttling.RateQuota``; no retry
header); ``--cap-code none`` makes it OpenAI's ``rate_limit_exceeded``
whatever the profile. ``--arrears-after K``: once K requests were answered
with a 200, every request gets the profile's arrears error at once (Zhipu
429 ``1113``, DashScope 400 ``Arrearage``, OpenAI 429 ``insufficient_quota``).
``--ratelimit-headers`` adds OpenAI's ``x-ratelimit-limit-*``,
``x-ratelimit-remaining-*`` and ``x-ratelimit-reset-*`` headers (``requests``
from ``--rpm-limit``, ``tokens`` from ``--tpm-limit``; a reset is the time
until the oldest amount leaves the 60-s window, written ``20ms``, ``1s``,
``6m0s``) to every chat reply.

``--fail-first N --fail-first-kind KIND`` gives the first N readable chat
requests (server-wide) that fault, for scripted tests. ``--rpm-limit N``
refuses requests beyond N in any sliding 60-second window with the profile's
rate-limit 429 and ``Retry-After`` / ``retry-after-ms`` (the wait until the
window has room); ``--tpm-limit N`` the same for N tokens (a request's prompt
estimate at arrival, its answer's when answered).

The same server is available in-process: :class:`~liveroom.sim.config.SimConfig`,
:func:`~liveroom.sim.chat_server.make_app` and the async context manager
:func:`~liveroom.sim.chat_server.run_server`, which yields the base URL
``http://127.0.0.1:PORT/v1``. The answers come from
:mod:`liveroom.sim.completion`, the faults from :mod:`liveroom.sim.faults`.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import fields
from typing import Sequence

from ..cliargs import command_parser, non_negative_float, non_negative_int, port_number, probability
from . import run_batch
from .chat_server import make_app
from .config import CAP_CODES, FAULT_KINDS, SimConfig, flag
from .profiles import PROFILES
from .prompt import BUY_STAGE, ENTRY_STAGE, READ_STAGE
from .serving import serve_command

DESCRIPTION = f"""Serve a local OpenAI-compatible chat-completions endpoint that answers the
liveroom scoring prompts ({ENTRY_STAGE}, {BUY_STAGE}, {READ_STAGE}) for testing and benchmarking.
It is not a language model: it simulates the answers with a documented
heuristic (liveroom/sim/heuristic.py: persona, hour and workday for {ENTRY_STAGE};
item prices against the persona's budget for {BUY_STAGE}; selling and warning words
in the transcript for {READ_STAGE}). It can also inject the faults real servers
produce.

The first line on stdout is "listening on http://HOST:PORT/v1"; with --port 0
a free port is chosen. SIGINT or SIGTERM stops it."""

EPILOG = """routes:
  POST /v1/chat/completions, POST /chat/completions   the stage's JSON reply
  GET /v1/models, GET /health, GET /stats              /stats: JSON counters

faults (--p-KIND probabilities are exclusive and sum to at most 1):
  429        429 rate limit (openai: rate_limit_exceeded) with Retry-After, retry-after-ms
  quota      the profile's quota error (openai: 429 insufficient_quota)
  content-filter  the profile's content-filter error (openai: a 200, finish_reason content_filter)
  think      <think>...</think> before the JSON
  null-content  content null, reasoning_content set, finish_reason length
  500, 503   server errors
  reset      connection dropped without a response
  slow       answer delayed by --slow-ms (to trip client timeouts)
  nonjson    prose without JSON          fenced     JSON inside ```json fences
  out-of-range  a score of 7             wrong-key  a misspelt score key

examples:
  bin/sim-server --port 0
  bin/sim-server --port 8000 --latency-ms 200 --jitter-ms 50 --p-429 0.05 --seed 1
  bin/sim-server --api-key KEY --rpm-limit 600 --fail-first 3 --fail-first-kind 503
  bin/sim-server --profile zhipu --max-inflight 16 --latency-ms 200 --arrears-after 5000
  bin/sim-server --rpm-limit 600 --tpm-limit 200000 --ratelimit-headers
  bin/sim-server run-batch -i IN -o OUT --model M --p-error 0.1   (as vllm run-batch; see run-batch --help)"""


def build_parser() -> argparse.ArgumentParser:
    """The flags, one per :class:`SimConfig` field (defaults from it, but --port 8000)."""
    d = SimConfig()
    ap = command_parser(
        "sim-server", description=DESCRIPTION, epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--host", default=d.host, help="address to bind (default %(default)s)")
    ap.add_argument("--port", type=port_number, default=8000, help="port to bind; 0 picks a free one (default %(default)s)")
    ap.add_argument("--seed", type=non_negative_int, default=d.seed,
                    help="seed of fault choice and reason wording; scores do not depend on it (default %(default)s)")
    ap.add_argument("--served-model", "--model", dest="model", default=d.model, metavar="NAME",
                    help="model name the replies report (default %(default)s) (--model: the same)")
    ap.add_argument("--api-key", default=None, metavar="KEY",
                    help="require 'Authorization: Bearer KEY' (default: no auth)")
    ap.add_argument("--latency-ms", type=non_negative_float, default=d.latency_ms, help="mean reply latency (default %(default)s)")
    ap.add_argument("--jitter-ms", type=non_negative_float, default=d.jitter_ms,
                    help="latency varies uniformly by +- this much (default %(default)s)")
    g = ap.add_argument_group("fault injection (probability per request)")
    for kind in FAULT_KINDS:
        g.add_argument(f"--p-{flag(kind)}", dest=f"p_{kind}", type=probability, default=0.0, metavar="P")
    g.add_argument("--retry-after", type=non_negative_float, default=d.retry_after,
                   help="seconds in Retry-After of injected 429s (default %(default)s)")
    g.add_argument("--retry-after-ms", type=non_negative_float, default=None, metavar="MS",
                   help="value of their retry-after-ms header (default: --retry-after in ms)")
    g.add_argument("--slow-ms", type=non_negative_float, default=d.slow_ms, help="delay of a 'slow' fault (default %(default)s)")
    g.add_argument("--fail-first", type=non_negative_int, default=0, metavar="N",
                   help="the first N chat requests get --fail-first-kind")
    g.add_argument("--fail-first-kind", default=d.fail_first_kind, metavar="KIND",
                   help=f"one of {', '.join(flag(k) for k in FAULT_KINDS)} (default %(default)s)")
    p = ap.add_argument_group("provider limits")
    p.add_argument("--profile", choices=tuple(PROFILES), default=d.profile,
                   help="answer errors with this provider's documented codes and bodies (default %(default)s)")
    p.add_argument("--rpm-limit", type=non_negative_int, default=0, metavar="N",
                   help="answer 429 beyond N requests in any 60-s window (default: no limit)")
    p.add_argument("--tpm-limit", type=non_negative_int, default=0, metavar="N",
                   help="answer 429 beyond N tokens in any 60-s window (default: no limit)")
    p.add_argument("--ratelimit-headers", action="store_true",
                   help="replies carry x-ratelimit-{limit,remaining,reset}-{requests,tokens} of those windows")
    p.add_argument("--max-inflight", type=non_negative_int, default=0, metavar="N",
                   help="beyond N requests in flight, answer the profile's cap signal at once (default: no cap)")
    p.add_argument("--cap-code", choices=CAP_CODES, default=d.cap_code,
                   help="'none': the cap answer is OpenAI's rate_limit_exceeded, no provider code "
                        "(default %(default)s)")
    p.add_argument("--arrears-after", type=non_negative_int, default=None, metavar="K",
                   help="after K answered requests, every answer is the profile's arrears error")
    ap.add_argument("--log-requests", action="store_true", help="one line per request on stderr")
    ap.add_argument("--record-requests", metavar="FILE",
                    help="append every readable chat request body to FILE, one JSON line each (what a client sent)")
    ap.add_argument("--no-logprobs", action="store_true",
                    help="answer logprobs: null even when a request asks them (a server that ignores the parameter)")
    return ap


def config_from_args(args: argparse.Namespace) -> SimConfig:
    """The checked config of parsed flags (a bad value is a one-line user error)."""
    values = {f.name: getattr(args, f.name) for f in fields(SimConfig)}
    config = SimConfig(**values)
    config.validate()
    return config


def main(argv: Sequence[str] | None = None) -> int:
    """``bin/sim-server``: serve until SIGINT or SIGTERM; ``bin/sim-server run-batch ...``: vLLM's batch runner."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["run-batch"]:
        return run_batch.main(argv[1:])
    config = config_from_args(build_parser().parse_args(argv))
    serve_command(make_app(config), config.host, config.port)
    return 0
