"""One ``llama-server`` process on 127.0.0.1: started on a free port, ready once ``/health`` says ok, stopped."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..errors import LiveroomError
from ..process import stop_process
from .install import DEFAULT_MODEL, MODELS, Installed
from .logs import last_error, tail

HOST = "127.0.0.1"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        port: int = s.getsockname()[1]
        return port


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
                 extra: Sequence[str] = ()) -> None:
        self.inst, self.model, self.port = inst, MODELS[model], port
        self.parallel, self.threads, self.ctx_size = parallel, threads, ctx_size
        self.log_arg, self.start_timeout, self.extra = log, start_timeout, tuple(extra)
        self.proc: subprocess.Popen[bytes] | None = None
        self.log: Path | None = None
        self.url = ""

    def command(self, port: int) -> list[str]:
        """llama-server's command line; ``--ctx-size`` is the total, shared by the slots."""
        return [str(self.inst.binary), "--model", str(self.inst.model_path(self.model.name)),
                "--host", HOST, "--port", str(port), "--parallel", str(self.parallel),
                "--threads", str(self.threads), "--ctx-size", str(self.ctx_size * self.parallel),
                "--alias", self.model.name, "--no-webui", *self.model.flags, *self.extra]

    def start(self) -> str:
        """Start the server and wait until it is ready; its base URL (``http://127.0.0.1:PORT/v1``)."""
        for _ in range(3):  # a port picked here may be taken before the server binds it
            port = self.port or _free_port()
            self.log = self.log_arg or self.inst.root / "logs" / f"server-{port}.log"
            self.log.parent.mkdir(parents=True, exist_ok=True)
            with open(self.log, "wb") as out:
                self.proc = subprocess.Popen(self.command(port), stdout=out, stderr=subprocess.STDOUT,
                                             stdin=subprocess.DEVNULL, start_new_session=True,
                                             preexec_fn=_die_with_parent)
            if self._wait_ready(self.proc, port):
                self.url = f"http://{HOST}:{port}/v1"
                return self.url
            if self.port or "couldn't bind" not in tail(self.log):
                break
        rc = self.proc.returncode if self.proc else None
        raise LiveroomError(f"llama-server exited with status {rc} before it was ready"
                            f"{last_error(self.log) if self.log else ''}; log: {self.log}")

    def _wait_ready(self, proc: subprocess.Popen[bytes], port: int) -> bool:
        """True once /health answers ok; False if the server exited; LiveroomError on timeout."""
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
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

    def wait(self) -> int:
        """Block until the server exits by itself; its exit status."""
        if self.proc is None:
            raise LiveroomError("llama-server was not started")
        return self.proc.wait()

    def stop(self, grace: float = 10.0) -> None:
        if self.proc is not None:
            stop_process(self.proc, grace)

    def __enter__(self) -> Server:
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()
