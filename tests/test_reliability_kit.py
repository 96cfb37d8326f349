"""What the reliability tests share: a few lines of aiohttp on loopback, and bin/score as a user runs it.

The servers answer as a model would (or as a broken one does) from a handler
the test writes; bin/score and bin/collect run as subprocesses, so signals,
exit statuses, file-size limits and locks are the real ones. The one test
here checks the kit itself.
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import shutil
import subprocess
import sys
import threading
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

from aiohttp import web

from test_score import make_inputs  # noqa: F401  (re-exported: the inputs every reliability test scores)

ROOT = Path(__file__).resolve().parent.parent
BIN = ROOT / "bin"
MODEL = "gpt-4o-mini"  # the default model a run asks for
#: a reply both the entry and the read stage can use (``--stages entry,read``)
GOOD = '{"want_to_enter": 3, "impact": 3, "reason": "还行"}'
#: the stages a run asks when every reply is :data:`GOOD`
STAGES = ("--stages", "entry,read")

Handler = Callable[[web.Request, dict[str, Any]], Awaitable[web.StreamResponse]]


def completion(text: str = GOOD, model: str = MODEL, usage: Any = None) -> dict[str, Any]:
    """A chat completion body carrying ``text``."""
    return {"id": "c", "object": "chat.completion", "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 5, "completion_tokens": 5, "total_tokens": 10} if usage is None else usage}


async def answer_good(request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
    return web.json_response(completion())


class Server:
    """A chat-completions server in a thread of the test; ``handler`` answers every request.

    Every answer closes its connection, so when the server goes :meth:`down`
    the next request finds nothing listening (connection refused), as a
    restarted or unplugged endpoint does.
    """

    def __init__(self, handler: Handler = answer_good, port: int = 0) -> None:
        self.handler = handler
        self.bodies: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.loop = asyncio.new_event_loop()
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None
        self.port = port
        ready = threading.Event()
        self.thread = threading.Thread(target=self._serve, args=(ready,), daemon=True)
        self.thread.start()
        assert ready.wait(10)
        self.url = f"http://127.0.0.1:{self.port}/v1"

    def _serve(self, ready: threading.Event) -> None:
        asyncio.set_event_loop(self.loop)
        app = web.Application(client_max_size=64 << 20)
        app.router.add_post("/v1/chat/completions", self._chat)
        self._runner = web.AppRunner(app)
        self.loop.run_until_complete(self._runner.setup())
        self.loop.run_until_complete(self._listen())
        ready.set()
        self.loop.run_forever()

    async def _listen(self) -> None:
        assert self._runner is not None
        self._site = web.TCPSite(self._runner, "127.0.0.1", self.port, reuse_address=True)
        await self._site.start()
        self.port = self._runner.addresses[0][1]

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = json.loads(await request.read())
        self.bodies.append(body)
        self.headers.append(dict(request.headers))
        resp = await self.handler(request, body)
        resp.force_close()
        return resp

    def _call(self, coro: Awaitable[Any]) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(10)  # type: ignore[arg-type]

    @property
    def requests(self) -> int:
        return len(self.bodies)

    def down(self) -> None:
        """Stop listening: new connections are refused."""
        assert self._site is not None
        self._call(self._site.stop())

    def up(self) -> None:
        """Listen again on the same port."""
        self._call(self._listen())

    def stop(self) -> None:
        if self._runner is not None:
            self._call(self._runner.cleanup())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


def env_for(url: str | None, key: str | None = None, **extra: str) -> dict[str, str]:
    """The environment of a command: the base URL and key given here, nothing inherited of them."""
    env = {k: v for k, v in os.environ.items() if k not in ("OPENAI_BASE_URL", "OPENAI_API_KEY", "LIVEROOM_MODEL")}
    if url is not None:
        env["OPENAI_BASE_URL"] = url
    if key is not None:
        env["OPENAI_API_KEY"] = key
    return {**env, **extra}


def file_size_limit(n_bytes: int) -> Callable[[], None]:
    """A ``preexec_fn``: files the child writes cannot grow past ``n_bytes`` (a disk that is full)."""
    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (n_bytes, n_bytes))
    return limit


def score_cmd(pitches: Path, goods: Path, out: Path, *flags: str) -> list[str]:
    return [sys.executable, str(BIN / "score"), "--pitches", str(pitches), "--goods", str(goods),
            "--out", str(out), "--backoff", "0.05", *flags]


def score(pitches: Path, goods: Path, out: Path, url: str | None, *flags: str, key: str | None = None,
          timeout: float = 120, preexec_fn: Callable[[], None] | None = None) -> subprocess.CompletedProcess[str]:
    """bin/score as a user runs it."""
    return subprocess.run(score_cmd(pitches, goods, out, *flags), env=env_for(url, key), capture_output=True,
                          text=True, timeout=timeout, preexec_fn=preexec_fn)


def start_score(pitches: Path, goods: Path, out: Path, url: str, *flags: str,
                key: str | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(score_cmd(pitches, goods, out, *flags), env=env_for(url, key),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def collect(pitches: Path, run: Path, out: Path, *flags: str,
            preexec_fn: Callable[[], None] | None = None) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, str(BIN / "collect"), "--pitches", str(pitches), "--run", str(run), "--out", str(out),
           *flags]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, preexec_fn=preexec_fn)


def batch(*argv: str, key: str | None = "sk-test-0123456789") -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(BIN / "batch"), *argv], env=env_for(None, key),
                          capture_output=True, text=True, timeout=120)


def records(run: Path, groups: Sequence[str] = ("entry", "buy", "read")) -> list[dict[str, Any]]:
    """Every line of the run's checkpoint files, parsed (a damaged line fails the test)."""
    out = []
    for g in groups:
        f = run / f"{g}.jsonl"
        if f.exists():
            out += [json.loads(line) for line in f.read_bytes().splitlines()]
    return out


def ok_ids(run: Path) -> list[str]:
    return [r["id"] for r in records(run) if r["status"] == "ok"]


def one_line_error(p: subprocess.CompletedProcess[str], status: int = 2) -> str:
    """The single line a command printed for an error it could name."""
    assert p.returncode == status, (p.returncode, p.stderr)
    assert "Traceback" not in p.stderr, p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1, p.stderr
    return lines[0]


def have_namespaces() -> bool:
    """Whether this machine lets a test mount in a private mount namespace (``unshare -rm``)."""
    if shutil.which("unshare") is None:
        return False
    p = subprocess.run(["unshare", "-rm", "true"], capture_output=True)
    return p.returncode == 0


def test_the_kit_serves_and_goes_down_and_up(tmp_path: Path) -> None:
    import urllib.error
    import urllib.request

    srv = Server()
    try:
        def post() -> dict[str, Any]:
            req = urllib.request.Request(srv.url + "/chat/completions", data=b'{"model": "m"}', method="POST")
            with urllib.request.urlopen(req, timeout=5) as r:
                return dict(json.load(r))

        assert post()["choices"][0]["message"]["content"] == GOOD
        srv.down()
        try:
            post()
            raise AssertionError("a server that is down answered")
        except urllib.error.URLError as e:
            assert "refused" in str(e.reason).lower()
        srv.up()
        assert post()["model"] == MODEL and srv.requests == 2
    finally:
        srv.stop()
