"""What the tests share beside conftest.py's fixtures: inputs, servers on loopback, the commands as a user runs them.

- :func:`make_inputs`: a pitches CSV and its showcase JSON of ``n`` pitches.
- :class:`Server`: a chat-completions server in a thread of the test, answering from
  a handler the test writes (as a model would, or as a broken one does).
- :func:`score`, :func:`start_score`, :func:`collect`, :func:`batch`: bin/score,
  bin/collect and bin/batch as subprocesses, so signals, exit statuses, file-size
  limits and locks are the real ones; :func:`batch_inline` and its kin run bin/batch
  in-process through its entry point (with the Batch API server of
  :class:`BatchServer`, the ``server`` fixture); :func:`start_server` runs bin/serve or
  bin/sim-server (the ``servers`` fixture), :func:`call` asks them.
- :func:`records`: every record of a run directory; :func:`one_line_error`: the
  one line a command prints for an error it can name.
- :func:`python_steps`: how much Python a call executes, counted, not timed; :func:`at_once` and
  :func:`before_timer`: whether a coroutine waited, and for less than a timer, by the event loop's order.

The kit's own server is checked in test_kit_server.py.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import http.client
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np
from aiohttp import web

from conftest import pitch_row, write_goods, write_pitches
from liveroom.cli import batch_main, collect_main, train_main
from liveroom.sim.batch_jobs import BatchConfig
from liveroom.sim.batch_server import BATCH_STATE, make_app, run_batch_server
from liveroom.sim.chat_server import STATE
from liveroom.synthetic import make_synthetic, write_synthetic

ROOT = Path(__file__).resolve().parent.parent
BIN = ROOT / "bin"
MODEL = "gpt-4o-mini"  # the default model a run asks for
#: a reply both the entry and the read stage can use (``--stages entry,read``)
GOOD = '{"want_to_enter": 3, "impact": 3, "reason": "还行"}'
#: the stages a run asks when every reply is :data:`GOOD`
STAGES = ("--stages", "entry,read")

TEXTS = ("今天限时优惠，全场包邮，福利多多", "这款质量很好，大家放心买", "库存不多，马上涨价，没货了就不补了", "")


def make_inputs(tmp_path: Path, n: int) -> tuple[Path, Path]:
    """``n`` pitches seven hours apart and their showcases (one to four items), written in ``tmp_path``."""
    rows, goods = [], {}
    base = dt.datetime(2024, 3, 1, 0, 15)
    for i in range(n):
        start = (base + dt.timedelta(hours=7 * i)).strftime("%Y-%m-%d %H:%M")
        rows.append(pitch_row(100 + i, start, title=f"宠粉专场第{i}场", prod=f"好物{i}号", text=TEXTS[i % 4]))
        goods[start] = [[j, f"商品{i}-{j}", float(20 * (i % 7 + 1) * (j + 1) ** 2)] for j in range(1 + i % 4)]
    return write_pitches(tmp_path, rows), write_goods(tmp_path, goods)


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
            "--run", str(out), "--backoff", "0.05", *flags]


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
    """Every line of the run's checkpoint files, stage by stage, parsed (a damaged line fails the test)."""
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


def one_line_main(capsys: Any, main: Callable[[list[str]], int], argv: list[str]) -> str:
    """The one stderr line of a command's ``main`` that exits 2, run in this process."""
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return err


def have_namespaces() -> bool:
    """Whether this machine lets a test mount in a private mount namespace (``unshare -rm``)."""
    if shutil.which("unshare") is None:
        return False
    p = subprocess.run(["unshare", "-rm", "true"], capture_output=True)
    return p.returncode == 0


def python_steps(call: Callable[[], Any]) -> int:
    """How many Python lines and calls (into Python or C) ``call()`` executes: its work, counted, not timed.

    The count is the same on a busy machine and an idle one, so a test can bound
    the work of a parser where a clock would fail for the wrong reason.
    """
    n = 0

    def line(frame: Any, event: str, arg: Any) -> Any:
        nonlocal n
        n += 1
        return line

    def calls(frame: Any, event: str, arg: Any) -> None:
        nonlocal n
        n += event == "c_call"

    sys.setprofile(calls)
    sys.settrace(line)
    try:
        call()
    finally:
        sys.settrace(None)
        sys.setprofile(None)
    return n


def at_once(coro: Any) -> bool:
    """Whether ``coro`` ends without ever suspending: it waited for nothing."""
    try:
        coro.send(None)
    except StopIteration:
        return True
    coro.close()
    return False


async def before_timer(seconds: float, coro: Any) -> Any:
    """``coro``'s result; the test fails unless it ended before a timer of ``seconds`` started with it.

    The event loop fires due timers in the order of their deadlines, so on a busy machine both
    merely fire late and the answer stays the same: no wall-clock bound on the test itself.
    """
    order: list[str] = []
    timer, task = asyncio.ensure_future(asyncio.sleep(seconds)), asyncio.ensure_future(coro)
    timer.add_done_callback(lambda _: order.append("timer"))
    task.add_done_callback(lambda _: order.append("coro"))
    await asyncio.wait({timer, task}, return_when=asyncio.FIRST_COMPLETED)
    result = await task
    timer.cancel()
    assert order[0] == "coro", f"still waiting after a {seconds} s timer fired"
    return result

# ----------------------------------------------------------------- bin/batch in-process, and its Batch API server

BATCH_KEY = "sk-batchtest-0123456789abcdef"  # the key of the ``env`` fixture; never to be written anywhere
BATCH_PITCHES = 5  # the pitches of the ``inputs`` fixture
BATCH_REQUESTS = BATCH_PITCHES * 3 * 8
BATCH_SUBMIT = ("--file-poll", "0.05", "--backoff", "0.01")  # bin/batch submit, without its waits
BATCH_WAIT = ("--wait", "--interval", "0.01", "--backoff", "0.01")  # bin/batch fetch --wait, polling at once


class BatchServer:
    """The Batch API server (:mod:`liveroom.sim.batch_server`) in a thread with its own event loop."""

    def __init__(self, config: BatchConfig):
        self.config = config
        self.app = make_app(config)
        self.loop = asyncio.new_event_loop()
        ready = threading.Event()

        async def start() -> None:
            self._cm = run_batch_server(config, self.app)
            self.url = await self._cm.__aenter__()

        def run() -> None:
            asyncio.set_event_loop(self.loop)
            self.loop.run_until_complete(start())
            ready.set()
            self.loop.run_forever()

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()
        assert ready.wait(10)

    @property
    def counts(self) -> dict:
        return self.app[BATCH_STATE].stats()

    @property
    def chat_requests(self) -> int:
        return self.app[STATE].requests

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._cm.__aexit__(None, None, None), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


def batch_inline(capsys: Any, *argv: str) -> tuple[int, str]:
    """bin/batch through its entry point in this process: (exit status, what it printed)."""
    capsys.readouterr()
    rc = batch_main(list(argv))
    out = capsys.readouterr()
    return rc, out.out + out.err


def prepare_inline(capsys: Any, inputs: tuple[Path, Path], run: Path, url: str, *flags: str) -> tuple[int, str]:
    pitches, goods = inputs
    return batch_inline(capsys, "prepare", "--pitches", str(pitches), "--goods", str(goods), "--run", str(run),
                        "--base-url", url, *flags)


def collect_inline(capsys: Any, pitches: Path, run: Path, out: Path) -> dict[str, np.ndarray]:
    """bin/collect in this process; the matrices it wrote."""
    capsys.readouterr()
    assert collect_main(["--pitches", str(pitches), "--run", str(run), "--out", str(out)]) == 0, \
        capsys.readouterr().err
    return {f: np.load(out / f"{f}.npy") for f in ("entry", "state", "action", "read")}


def batch_state(run: Path) -> dict:
    return dict(json.loads((run / "batch" / "state.json").read_text()))


def prepared_ids(run: Path) -> set[str]:
    """custom_ids of the request files not yet submitted."""
    out = set()
    for s in batch_state(run)["shards"]:
        if not s["file_id"] and not s["batch_id"]:
            for line in (run / "batch" / s["name"]).read_text().splitlines():
                out.add(json.loads(line)["custom_id"])
    return out


def assert_no_key(run: Path) -> None:
    """Not a file under ``run`` holds :data:`BATCH_KEY` or a piece of it."""
    for path in run.rglob("*"):
        if path.is_file():
            assert BATCH_KEY.encode() not in path.read_bytes(), path
            assert b"batchtest" not in path.read_bytes(), path


def get_with_key(url: str, path: str) -> bytes:
    """GET ``url + path`` with :data:`BATCH_KEY`."""
    req = urllib.request.Request(url + path, headers={"Authorization": f"Bearer {BATCH_KEY}"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return bytes(r.read())


def downloaded(srv: BatchServer, run: Path) -> tuple[list[str], list[str]]:
    """The output and error lines of the run's one batch, downloaded by hand once it has completed."""
    (shard,) = batch_state(run)["shards"]
    for _ in range(20):
        b = json.loads(get_with_key(srv.url, f"/batches/{shard['batch_id']}"))
        if b["status"] == "completed":
            break
    assert b["status"] == "completed"

    def lines(key: str) -> list[str]:
        return get_with_key(srv.url, f"/files/{b[key]}/content").decode().splitlines() if b.get(key) else []

    return lines("output_file_id"), lines("error_file_id")


# ----------------------------------------------------------------- bin/serve and bin/sim-server as processes

SERVE_KEY = "sk-servetest-5f3a9c1e7b"  # what the service is given; must never come back


def make_pitch(n: int = 0, **change: Any) -> dict[str, Any]:
    """A valid API pitch; ``n`` makes a different one (other title, so other questions)."""
    pitch = {"start": "2024-03-08 20:00", "title": f"女神节宠粉专场第{n}场", "prod": "加厚保暖羊毛袜",
             "text": "家人们看过来，这款羊毛袜加厚保暖，今天三双只要二十九块九，库存不多。",
             "duration": 3, "user_cnt": 12000, "showcase": [[0, "加厚保暖羊毛袜", 29.9], [1, "羊绒围巾", 259]]}
    pitch.update(change)
    return pitch


class Listening:
    """A command that prints ``listening on URL`` first; stderr kept in a file."""

    def __init__(self, cmd: list[str], log: Path, env: dict[str, str] | None = None) -> None:
        self.log = log
        self._err = log.open("w")
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self._err, text=True, env=env)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line.startswith("listening on "), line + self.stderr()
        self.url = line.split()[-1]

    def stderr(self) -> str:
        if not self._err.closed:
            self._err.flush()
        return self.log.read_text()

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(15)
        self._err.close()
        return self.proc.returncode


def call(url: str, body: Any = None, timeout: float = 120, token: str | None = None) -> tuple[int, Any]:
    """(status, JSON body) of a GET, or a POST of ``body`` (bytes as they are, else JSON), with ``token``."""
    data = None if body is None else body if isinstance(body, bytes) else json.dumps(body).encode()
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {token}"} if token else {})}
    req = urllib.request.Request(url, data=data, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.load(r)
    except urllib.error.HTTPError as e:
        return e.code, json.load(e)


def train_tiny_model(syn: Path, out: Path) -> Path:
    """A tiny model with the persona features in ``out``, trained on synthetic pitches written to ``syn``."""
    write_synthetic(syn, *make_synthetic(200, seed=5))
    assert train_main(["--pitches", str(syn / "pitches.csv"), "--features", str(syn), "--out", str(out),
                       "--epochs", "2", "--hidden", "16"]) == 0
    return out


def start_server(kind: str, flags: tuple[str, ...], log: Path, key: str | None) -> Listening:
    """bin/sim-server or bin/serve on a free port, with ``key`` as the only API key in its environment."""
    env = {k: v for k, v in os.environ.items() if k not in ("OPENAI_API_KEY", "OPENAI_BASE_URL")}
    if key:
        env["OPENAI_API_KEY"] = key
    return Listening([sys.executable, str(BIN / kind), "--port", "0", *flags], log, env)


def sim_stats(sim: Listening) -> dict[str, Any]:
    return call(sim.url.removesuffix("/v1") + "/stats")[1]


def serve_flags(sim: Listening, model_dir: Path, cache: Path, *flags: str) -> tuple[str, ...]:
    return ("--model-dir", str(model_dir), "--run", str(cache), "--base-url", sim.url, "--llm", "liveroom-sim",
            "--backoff", "0.05", *flags)


def serve_over(servers: Any, sim: Listening, model_dir: Path, cache: Path, *flags: str) -> Listening:
    """bin/serve over ``sim`` with the model of ``model_dir``, started by the ``servers`` fixture."""
    return servers("serve", *serve_flags(sim, model_dir, cache, *flags), key=SERVE_KEY)


def raw(url: str, method: str, path: str, headers: dict[str, str], body: bytes | None = None
        ) -> tuple[int, dict[str, str], Any]:
    """(status, headers, JSON body or text) of one request sent with exactly ``headers`` (Host included)."""
    u = urlsplit(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=60)
    try:
        conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
        for k, v in headers.items():
            conn.putheader(k, v)
        if body is not None:
            conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body)
        r = conn.getresponse()
        data = r.read()
        try:
            parsed: Any = json.loads(data)
        except ValueError:
            parsed = data.decode(errors="replace")
        return r.status, {k.lower(): v for k, v in r.getheaders()}, parsed
    finally:
        conn.close()


def host_of(url: str) -> str:
    return urlsplit(url).netloc
