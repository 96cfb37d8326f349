"""``bin/serve``: the forecast service and its page, until SIGINT or SIGTERM.

The arguments are checked before the model's code (torch) is loaded.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from aiohttp import web

from ..async_client.runner import run_loop
from ..async_client.transport import endpoint_host, target
from ..cliargs import command_parser, non_negative_int, port_number, positive_float
from ..errors import InputError, LiveroomError
from ..scoring.engine_flags import ChatSettings, add_engine_arguments, add_model_arguments, chat_settings
from ..scoring.probs_flags import add_probability_arguments, ask_probabilities, requested_top_logprobs

CACHE = "forecast-cache"  # under MODEL_DIR unless --run names another
PER_MINUTE = 60  # new pitches per client per minute, unless --pitches-per-minute says otherwise


def build_parser() -> argparse.ArgumentParser:
    """The flags of bin/serve; numbers are checked as they are parsed."""
    p = command_parser(
        "serve",
        description="Serve forecasts of new pitches over HTTP: POST /v1/forecast (one pitch), "
                    "POST /v1/forecast:batch (a list), GET /v1/model, GET /healthz, and a page at / to "
                    "compare two pitches. Each pitch's 24 questions (3 stages x 8 personas) go through one "
                    "shared engine and rate limits; every answer is kept in the cache, so the same pitch "
                    "again sends nothing.",
        epilog="The first line on stdout is 'listening on http://HOST:PORT'. The API key is read from "
               "$OPENAI_API_KEY only and is never shown in a response or the log.")
    p.add_argument("--model-dir", "--model", dest="model_dir", required=True, metavar="MODEL_DIR",
                   help="directory written by bin/train (best.pt) (--model: the same)")
    p.add_argument("--run", "--cache", dest="run", metavar="RUN_DIR",
                   help=f"run directory keeping every answer (default: MODEL_DIR/{CACHE}) (--cache: the same)")
    add_probability_arguments(p)  # a model trained on expected scores (bin/train --scores expected) asks them anyway
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default %(default)s)")
    p.add_argument("--port", type=port_number, default=8080,
                   help="port to bind; 0 picks a free one (default %(default)s)")
    g = p.add_argument_group("who may spend the key (see the README's threat model)")
    g.add_argument("--allowed-host", action="append", default=[], metavar="NAME",
                   help="also answer requests whose Host is NAME (the name clients use, e.g. behind a reverse "
                        "proxy); repeatable. This machine's names and the bound address are always answered; "
                        "any other Host is refused with 421")
    g.add_argument("--token-env", metavar="NAME",
                   help="require 'Authorization: Bearer TOKEN' on the API and /metrics, TOKEN read from the "
                        "environment variable NAME (the page asks for it); required when --host is not a "
                        "loopback address")
    g.add_argument("--pitches-per-minute", type=non_negative_int, default=PER_MINUTE, metavar="N",
                   help="new pitches (not all answered in the cache) one client address may send in any 60 s; "
                        "past it 429 with Retry-After; 0: no limit (default %(default)s)")
    g.add_argument("--header-timeout", type=positive_float, default=15.0, metavar="S",
                   help="close a connection whose request line and headers have not all arrived within S "
                        "seconds, and an idle kept-alive one after S (default %(default)s)")
    g.add_argument("--body-timeout", type=positive_float, default=30.0, metavar="S",
                   help="answer 408 when a request body takes longer than S seconds to arrive (default %(default)s)")
    add_model_arguments(p, "--llm")
    add_engine_arguments(p, over=" over all forecasts", limit="the one live limit of all forecasts")
    return p


def read_token(env: str | None, host: str) -> str | None:
    """The token of ``--token-env``, or None; an InputError when it is unset, or missing off loopback."""
    from .guard import is_loopback

    if env is None:
        if not is_loopback(host):
            raise InputError(f"--host {host} serves other machines: give --token-env NAME with a token in $NAME, "
                             "so that only those who hold it spend the key")
        return None
    token = os.environ.get(env, "").strip()
    if not token:
        raise InputError(f"--token-env {env}: ${env} is not set or empty")
    return token


async def serve_until_signal(app: web.Application, host: str, port: int, header_timeout: float = 15.0) -> None:
    """Print ``listening on URL`` once the app is up, then serve until SIGINT or SIGTERM."""
    from .app import http_logger

    # keepalive_timeout also closes a connection that has not sent a whole request line and headers:
    # aiohttp arms it when the connection is made (aio-libs/aiohttp#13681, in the 3.14.5 setup.cfg
    # requires), so it is a header read timeout as well as the idle keep-alive time
    # lingering_time: after answering a request whose body has not all arrived (a 408 after
    # --body-timeout, a 413), aiohttp reads and drops the rest for this long before closing, so the client
    # can read the answer; its default (10 s, aiohttp/web_protocol.py) would hold a stalled sender's
    # connection 10 s past --body-timeout
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=2.0, keepalive_timeout=header_timeout,
                           lingering_time=1.0, logger=http_logger())
    await runner.setup()  # opens the forecaster: a bad cache fails here, before listening
    try:
        site = web.TCPSite(runner, host, port)
        try:
            await site.start()
        except OSError as e:
            raise LiveroomError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):  # before the line that tells a caller it may signal
            loop.add_signal_handler(sig, stop.set)
        bound, bound_port = runner.addresses[0][:2]
        print(f"listening on http://{f'[{bound}]' if ':' in bound else bound}:{bound_port}", flush=True)
        await stop.wait()
    finally:
        await runner.cleanup()


def _where(settings: ChatSettings) -> str:
    """Where the questions go, for the first line: the endpoint, or the names of those declared."""
    if not settings.endpoints:
        return endpoint_host(settings.base_url)
    return f"{len(settings.endpoints)} endpoints ({', '.join(e.name for e in settings.endpoints)})"


def main(argv: Sequence[str] | None = None) -> int:
    """bin/serve: 0 after SIGINT/SIGTERM; 2 (one line) when the model or cache cannot be used."""
    args = build_parser().parse_args(argv)
    settings = chat_settings(args, args.llm)
    target(settings.base_url, settings.api_key).require_key()  # a remote endpoint without a key: before serving
    params, notes = ask_probabilities(settings.params, requested_top_logprobs(args), [s.provider for s in settings.pool])
    settings = replace(settings, params=params)
    for spec in settings.endpoints:  # --endpoints: each one's key, named
        spec.require_key()
    token = read_token(args.token_env, args.host)
    from .app import make_app  # the model, so torch: only once the arguments are good
    from .guard import Rules, served_names
    from .service import Forecaster

    cache = Path(args.run) if args.run else Path(args.model_dir) / CACHE
    service = Forecaster(args.model_dir, cache, settings)  # a model on expected scores asks probabilities
    for note in notes + service.notes:  # a provider that caps or returns no probabilities: said once
        print(f"serve: note: {note}", file=sys.stderr, flush=True)
    limits = ", ".join(f"{v:g} {k}" for k, v in (("rpm", args.rpm), ("tpm", args.tpm)) if v) or "no rate limit"
    print(f"serve: model {args.model_dir} ({service.model_brief()['inputs']}); questions to "
          f"{_where(settings)} ({args.llm}, {limits}); cache {cache}", file=sys.stderr, flush=True)
    rules = Rules(served_names(args.host, args.allowed_host), token)
    app = make_app(service, rules, args.pitches_per_minute, args.body_timeout)
    run_loop(serve_until_signal(app, args.host, args.port, args.header_timeout))
    return 0
