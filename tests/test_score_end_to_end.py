"""bin/score and bin/collect end to end, against the simulator on loopback.

Every test starts a real ``bin/sim-server`` process (faults injected there)
and runs ``bin/score`` / ``bin/collect`` as subprocesses, the way a user does.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from aiohttp import web

from kit import BIN, collect, make_inputs, ok_ids, one_line_error, records, score, start_score
from liveroom.data.inputs import load_showcase
from liveroom.data.moment import day_facts
from liveroom.data.personas import PERSONA_KEYS
from liveroom.sim.heuristic import buy_scores, entry_score, read_score


def matrices(d: Path) -> dict[str, np.ndarray]:
    return {f: np.load(d / f"{f}.npy") for f in ("entry", "state", "action", "read")}


def tree_digest(d: Path) -> dict[str, str]:
    return {str(p.relative_to(d)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(d.rglob("*")) if p.is_file()}


# ----------------------------------------------------------------------------- results

def test_clean_run_gives_the_heuristic_scores(tmp_path, sim):
    pitches, goods = make_inputs(tmp_path, 6)
    s = sim()
    p = score(pitches, goods, tmp_path / "run", s.url)
    assert p.returncode == 0, p.stderr
    assert s.stats()["requests"] == 6 * 3 * 8
    c = collect(pitches, tmp_path / "run", tmp_path / "feat")
    assert c.returncode == 0, c.stderr
    m = matrices(tmp_path / "feat")
    assert all(v.shape == (6, 8) and not np.isnan(v).any() for v in m.values())
    assert list(np.load(tmp_path / "feat" / "index.npy")) == list(range(100, 106))
    # independent expectation from the simulator's documented heuristic
    showcase = load_showcase(goods)
    import pandas as pd
    df = pd.read_csv(pitches, keep_default_na=False)
    for r, row in df.iterrows():
        when = dt.datetime.strptime(row["start"], "%Y-%m-%d %H:%M")
        prices = [it.price for it in showcase[row["start"]]]
        for c_, key in enumerate(PERSONA_KEYS):
            assert m["entry"][r, c_] == entry_score(key, when.hour, day_facts(when.date())[0])
            b = buy_scores(key, prices)
            assert m["state"][r, c_] == pytest.approx(sum(b) / len(b))
            assert m["action"][r, c_] == b[0]
            assert m["read"][r, c_] == read_score(key, row["text"])


def test_all_faults_survived_with_exact_results(tmp_path, sim):
    pitches, goods = make_inputs(tmp_path, 5)
    clean = sim()
    assert score(pitches, goods, tmp_path / "clean", clean.url).returncode == 0
    assert collect(pitches, tmp_path / "clean", tmp_path / "f_clean").returncode == 0

    faulty = sim("--seed", "3", "--p-429", "0.08", "--retry-after", "0.05", "--p-500", "0.06", "--p-503", "0.06",
                 "--p-reset", "0.06", "--p-slow", "0.04", "--slow-ms", "3000", "--p-nonjson", "0.06",
                 "--p-fenced", "0.08", "--p-out-of-range", "0.06", "--p-wrong-key", "0.06")
    p = score(pitches, goods, tmp_path / "run", faulty.url, "--timeout", "1", "--max-retries", "10",
              "--max-reasks", "6", "--concurrency", "16")
    assert p.returncode == 0, p.stderr
    st = faulty.stats()
    for kind in ("429", "500", "503", "reset", "slow", "nonjson", "fenced", "out_of_range", "wrong_key"):
        assert st["faults"].get(kind, 0) > 0, (kind, st["faults"])
    assert collect(pitches, tmp_path / "run", tmp_path / "f").returncode == 0
    got, want = matrices(tmp_path / "f"), matrices(tmp_path / "f_clean")
    for name in want:
        np.testing.assert_array_equal(got[name], want[name])
    ids = ok_ids(tmp_path / "run")
    assert len(ids) == len(set(ids)) == 5 * 24
    recs = records(tmp_path / "run")
    assert any(r["reasks"] > 0 for r in recs) and any(r["attempts"] > 1 for r in recs)
    assert "retries" in p.stdout and "invalid" in p.stdout  # counted in the closing line


def test_unusable_replies_are_recorded_then_retried_by_the_next_run(tmp_path, sim):
    pitches, goods = make_inputs(tmp_path, 2)
    bad = sim("--p-nonjson", "1")
    p = score(pitches, goods, tmp_path / "run", bad.url, "--stages", "entry", "--max-reasks", "1")
    assert p.returncode == 1 and "16 request(s) failed" in p.stderr
    assert bad.stats()["requests"] == 32  # one ask + one re-ask each
    rec = json.loads((tmp_path / "run" / "entry.jsonl").read_text().splitlines()[0])
    assert rec["status"] == "invalid" and "no JSON" in rec["error"] and rec["reply"]
    c = collect(pitches, tmp_path / "run", tmp_path / "f")
    assert c.returncode == 2 and "missing" in c.stderr
    cov = json.loads((tmp_path / "f" / "coverage.json").read_text())
    assert cov["stages"]["entry"]["missing"] == 16 and cov["missing"]["entry"][0]["error"]
    assert collect(pitches, tmp_path / "run", tmp_path / "f", "--allow-missing").returncode == 0
    assert np.isnan(np.load(tmp_path / "f" / "entry.npy")).all()

    bad.stop()
    good = sim("--port", bad.port)  # the same endpoint: a run is bound to its endpoint
    p = score(pitches, goods, tmp_path / "run", good.url, "--stages", "entry")
    assert p.returncode == 0, p.stderr
    assert good.stats()["requests"] == 16
    assert collect(pitches, tmp_path / "run", tmp_path / "f", "--allow-missing").returncode == 0
    cov = json.loads((tmp_path / "f" / "coverage.json").read_text())
    assert cov["stages"]["entry"]["missing"] == 0 and cov["stages"]["read"]["missing"] == 16  # never asked
    assert not np.isnan(np.load(tmp_path / "f" / "entry.npy")).any()


def test_other_4xx_is_not_retried(tmp_path):
    """A plain aiohttp server that refuses every request with 400."""
    import asyncio
    import threading

    hits = []

    async def refuse(request):
        hits.append(1)
        return web.json_response({"error": {"message": "bad thing", "type": "invalid_request_error"}}, status=400)

    loop = asyncio.new_event_loop()
    app = web.Application()
    app.router.add_post("/v1/chat/completions", refuse)
    runner = web.AppRunner(app)
    loop.run_until_complete(runner.setup())
    site = web.TCPSite(runner, "127.0.0.1", 0)
    loop.run_until_complete(site.start())
    port = runner.addresses[0][1]
    t = threading.Thread(target=loop.run_forever, daemon=True)
    t.start()
    try:
        pitches, goods = make_inputs(tmp_path, 1)
        p = score(pitches, goods, tmp_path / "run", f"http://127.0.0.1:{port}/v1", "--stages", "read")
        assert p.returncode == 1
        assert len(hits) == 8
        rec = json.loads((tmp_path / "run" / "read.jsonl").read_text().splitlines()[0])
        assert rec["status"] == "error" and "HTTP 400" in rec["error"] and "bad thing" in rec["error"]
    finally:
        loop.call_soon_threadsafe(loop.stop)
        t.join(5)


# ----------------------------------------------------------------------------- resume

def test_kill_9_then_rerun_loses_nothing_and_resends_at_most_concurrency(tmp_path, sim):
    pitches, goods = make_inputs(tmp_path, 40)
    s = sim("--latency-ms", "40", "--jitter-ms", "30")
    run = tmp_path / "run"
    proc = start_score(pitches, goods, run, s.url, "--concurrency", "16")
    deadline = time.time() + 60
    while time.time() < deadline:
        lines = sum(f.read_bytes().count(b"\n") for f in run.glob("*.jsonl")) if run.exists() else 0
        if lines >= 300:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = sum(f.read_bytes().count(b"\n") for f in run.glob("*.jsonl"))
    assert 300 <= before < 960
    p = score(pitches, goods, run, s.url, "--concurrency", "16")
    assert p.returncode == 0, p.stderr
    ids = ok_ids(run)
    assert len(ids) == len(set(ids)) == 960
    st = s.stats()
    assert st["duplicates"] <= 16, st["duplicates"]
    assert st["requests"] <= 960 + 16
    # and a rerun over the complete checkpoint sends nothing
    p = score(pitches, goods, run, s.url)
    assert p.returncode == 0 and "nothing sent" in p.stdout
    assert s.stats()["requests"] == st["requests"]


def test_sigterm_flushes_and_says_how_to_resume(tmp_path, sim):
    pitches, goods = make_inputs(tmp_path, 20)
    s = sim("--latency-ms", "100")
    run = tmp_path / "run"
    proc = start_score(pitches, goods, run, s.url, "--concurrency", "8", "--grace", "2")
    while not run.exists() or sum(f.stat().st_size for f in run.glob("*.jsonl")) == 0:
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    err = proc.communicate(timeout=20)[1]
    assert proc.returncode == 143, err
    assert "run the same command again to resume" in err and "Traceback" not in err
    done = len(ok_ids(run))
    assert 0 < done < 480
    assert s.stats()["requests"] <= done + 8  # in-flight requests were let finish, nothing else sent


def test_a_second_signal_stops_at_once(tmp_path, sim):
    pitches, goods = make_inputs(tmp_path, 4)
    s = sim("--latency-ms", "20000")  # nothing would finish within the grace period
    run = tmp_path / "run"
    proc = start_score(pitches, goods, run, s.url, "--concurrency", "8", "--grace", "60")
    deadline = time.time() + 30
    while s.stats()["in_flight"] < 8 and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    time.sleep(0.3)
    proc.send_signal(signal.SIGINT)
    err = proc.communicate(timeout=20)[1]  # not the 60 s grace, nor the 20 s replies
    assert proc.returncode == 130, err
    assert "run the same command again to resume" in err and "Traceback" not in err


def test_torn_last_line_is_dropped_on_resume(tmp_path, sim):
    pitches, goods = make_inputs(tmp_path, 2)
    s = sim()
    run = tmp_path / "run"
    assert score(pitches, goods, run, s.url, "--stages", "read").returncode == 0
    f = run / "read.jsonl"
    lines = f.read_bytes().splitlines(keepends=True)
    f.write_bytes(b"".join(lines[:-1]) + lines[-1][:25])  # the last record cut mid-write
    p = score(pitches, goods, run, s.url, "--stages", "read")
    assert p.returncode == 0, p.stderr
    assert s.stats()["requests"] == 16 + 1
    assert len(ok_ids(run)) == 16
    assert all(json.loads(line) for line in f.read_text().splitlines())


# ----------------------------------------------------------------------------- limits

def test_rpm_is_spread_evenly(tmp_path, sim):
    pitches, goods = make_inputs(tmp_path, 3)
    s = sim()
    t0 = time.monotonic()
    p = score(pitches, goods, tmp_path / "run", s.url, "--stages", "entry,read", "--rpm", "600", "--concurrency", "32")
    elapsed = time.monotonic() - t0
    assert p.returncode == 0, p.stderr
    counts = [c for _, c in s.stats()["per_second"]]
    assert sum(counts) == 48
    assert max(counts) <= 600 / 60 + 1, counts
    assert elapsed >= 47 * 0.1 - 0.2


def test_a_scattered_429_delays_its_own_request_only(tmp_path, sim):
    pitches, goods = make_inputs(tmp_path, 4)
    s = sim("--fail-first", "1", "--fail-first-kind", "429", "--retry-after", "1.5")
    run = tmp_path / "run"
    p = score(pitches, goods, run, s.url, "--stages", "entry", "--concurrency", "4")
    assert p.returncode == 0, p.stderr
    recs = records(run, ("entry",))
    t = sorted(r["t"] for r in recs)
    # the first request gets a 429 at once and waits its Retry-After holding no slot:
    # the other 31 are answered meanwhile, well under a second
    early = [x for x in t if x - t[0] < 1.0]
    assert len(early) == 31, len(early)
    assert t[-1] - t[0] >= 1.2
    assert s.stats()["faults"]["429"] == 1


def test_tpm_limit_holds_tokens_per_second_to_the_limit(tmp_path, sim):
    pitches, goods = make_inputs(tmp_path, 4)
    s = sim()
    tpm = 120000  # 2,000 tokens/s; the bucket holds one second's worth
    t0 = time.monotonic()
    p = score(pitches, goods, tmp_path / "run", s.url, "--stages", "entry", "--tpm", str(tpm), "--max-tokens", "200")
    elapsed = time.monotonic() - t0
    assert p.returncode == 0, p.stderr
    used = s.stats()["prompt_tokens"] + s.stats()["completion_tokens"]
    assert used > tpm / 60 * 3  # several times what the bucket holds: the limit had to act
    assert elapsed >= (used - tpm / 60) / (tpm / 60) * 0.8


# ----------------------------------------------------------------------------- errors and secrets

def test_wrong_key_stops_fast_and_the_key_never_reaches_disk(tmp_path, sim):
    pitches, goods = make_inputs(tmp_path, 10)
    s = sim("--api-key", "sk-right-key-0000")
    p = score(pitches, goods, tmp_path / "run", s.url, key="sk-wrong-key-123456789")
    line = one_line_error(p)
    assert "401" in line and "OPENAI_API_KEY" in line
    assert "sk-wrong-key-123456789" not in p.stderr + p.stdout
    assert s.stats()["requests"] <= 64  # stopped at the first answers: not one retry of the 240 questions

    secret = "sk-right-key-0000"
    p = score(pitches, goods, tmp_path / "ok", s.url, key=secret)
    assert p.returncode == 0, p.stderr
    for f in [*(tmp_path / "ok").rglob("*"), *(tmp_path / "run").rglob("*")]:
        if f.is_file():
            assert secret.encode() not in f.read_bytes(), f
            assert b"sk-wrong" not in f.read_bytes(), f
    assert secret not in p.stderr


def test_quota_stops_the_run(tmp_path, sim):
    pitches, goods = make_inputs(tmp_path, 3)
    s = sim("--p-quota", "1")
    p = score(pitches, goods, tmp_path / "run", s.url)
    assert "insufficient_quota" in one_line_error(p)
    assert s.stats()["requests"] <= 64


def test_bad_input_sends_nothing_and_leaves_the_run_intact(tmp_path, sim):
    pitches, goods = make_inputs(tmp_path, 2)
    s = sim()
    run = tmp_path / "run"
    assert score(pitches, goods, run, s.url, "--stages", "entry").returncode == 0
    sent = s.stats()["requests"]
    before = tree_digest(run)

    bad = tmp_path / "bad.csv"
    text = pitches.read_text().splitlines()
    text[2] = text[2].replace("2024-03-01", "2024-13-45", 1)
    bad.write_text("\n".join(text) + "\n")
    line = one_line_error(score(bad, goods, run, s.url))
    assert line.startswith("score: error: bad.csv line 3: start '2024-13-45")

    gbad = tmp_path / "gbad.json"
    gbad.write_text("{}")
    assert "no showcase items" in one_line_error(score(pitches, gbad, run, s.url))

    line = one_line_error(score(pitches, goods, run, s.url, "--stages", "entry", "--model", "other-model"))
    assert "model" in line and "other-model" in line

    line = one_line_error(score(pitches, goods, run, s.url, "--stages", "entyr"))
    assert "unknown stage" in line

    assert s.stats()["requests"] == sent
    assert tree_digest(run) == before
    assert not (tmp_path / "never").exists()
    one_line_error(score(bad, goods, tmp_path / "never", s.url))
    assert not (tmp_path / "never").exists()


def test_a_run_can_be_extended_by_another_stage(tmp_path, sim):
    pitches, goods = make_inputs(tmp_path, 2)
    s = sim()
    run = tmp_path / "run"
    assert score(pitches, goods, run, s.url, "--stages", "entry").returncode == 0
    assert score(pitches, goods, run, s.url).returncode == 0
    assert s.stats()["requests"] == 48
    manifest = json.loads((run / "manifest.json").read_text())
    assert set(manifest["groups"]) == {"entry", "buy", "read"}


def test_help_describes_the_command():
    p = subprocess.run([sys.executable, str(BIN / "score"), "--help"], capture_output=True, text=True)
    assert p.returncode == 0 and "--concurrency" in p.stdout and "OPENAI_API_KEY" in p.stdout
