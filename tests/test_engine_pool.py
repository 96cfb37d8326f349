"""One run over several endpoints of one model: outcomes against real bin/sim-server processes.

``bin/score --endpoints FILE`` (or a repeated ``--base-url``) as a user runs it: every record
exact and once whatever endpoint answered it, a fatal answer that retires one endpoint with
one line while the others finish the run, exit 2 only when none is left, an endpoint killed
mid-run whose jobs the others do, a run resumed on another set of endpoints, and no key in
the run directory. What is checked is what happened, never how fast (bench/ has the speed).
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import time
from pathlib import Path

from kit import env_for, make_inputs, one_line_error, records, score, score_cmd

SECRET = "sk-pool-secret-0123456789"


def declare(tmp_path: Path, *endpoints: dict[str, object]) -> Path:
    """An endpoints file with one [[endpoint]] table per mapping."""
    lines = []
    for e in endpoints:
        lines.append("[[endpoint]]")
        lines += [f"{k} = {json.dumps(v)}" for k, v in e.items()]
    path = tmp_path / "endpoints.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def pooled(pitches: Path, goods: Path, run: Path, *flags: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(score_cmd(pitches, goods, run, *flags), env=env_for(None, **env), capture_output=True,
                          text=True, timeout=180)


def by_id(run: Path) -> dict[str, dict]:
    recs = records(run)
    ids = [r["id"] for r in recs]
    assert len(ids) == len(set(ids)), "a job recorded twice"
    return {r["id"]: r for r in recs}


def test_every_record_is_exact_and_once_over_three_endpoints_with_different_caps(tmp_path, sim):
    pitches, goods = make_inputs(tmp_path, 5)  # 120 requests
    lone = sim("--latency-ms", "5")
    alone = score(pitches, goods, tmp_path / "alone", lone.url, "--concurrency", "8")
    assert alone.returncode == 0, alone.stderr
    servers = [sim("--profile", "zhipu", "--max-inflight", str(cap), "--latency-ms", "20", "--api-key", SECRET)
               for cap in (2, 4, 8)]
    f = declare(tmp_path, *({"name": n, "base_url": s.url, "key_env": "POOL_KEY", "max_concurrency": c}
                            for n, s, c in zip("abc", servers, (2, 4, 16))))
    p = pooled(pitches, goods, tmp_path / "run", "--endpoints", str(f), "--concurrency", "16", POOL_KEY=SECRET)
    assert p.returncode == 0, p.stderr
    got, want = by_id(tmp_path / "run"), by_id(tmp_path / "alone")
    assert set(got) == set(want) and len(got) == 120
    assert all(got[i]["status"] == "ok" and got[i]["scores"] == want[i]["scores"] for i in want)
    assert {r["endpoint"] for r in got.values()} <= {"a", "b", "c"}
    answered = [s.stats()["answered"] for s in servers]
    assert sum(answered) == 120 and all(n > 0 for n in answered), answered
    assert [sum(r["endpoint"] == n for r in got.values()) for n in "abc"] == answered
    end = next(line for line in p.stdout.splitlines() if line.startswith("score: 120/120"))
    assert "endpoints: a limit" in end and " ok" in end, end
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["endpoint"] is None  # the set of endpoints is not the run's: another may resume it
    for path in (tmp_path / "run").rglob("*"):  # the key is nowhere in the run directory
        assert not path.is_file() or SECRET.encode() not in path.read_bytes(), path


def test_arrears_on_one_endpoint_retire_it_with_one_line_and_the_others_finish(tmp_path, sim):
    pitches, goods = make_inputs(tmp_path, 5)
    good = sim("--latency-ms", "20")
    broke = sim("--profile", "zhipu", "--arrears-after", "10", "--latency-ms", "20")
    f = declare(tmp_path, {"name": "good", "base_url": good.url}, {"name": "broke", "base_url": broke.url})
    p = pooled(pitches, goods, tmp_path / "run", "--endpoints", str(f), "--concurrency", "4")
    assert p.returncode == 0, p.stderr
    lines = [line for line in p.stderr.splitlines() if "retired" in line]
    assert len(lines) == 1 and "endpoint broke retired" in lines[0] and "1113" in lines[0], p.stderr
    got = by_id(tmp_path / "run")
    assert len(got) == 120 and all(r["status"] == "ok" for r in got.values())
    assert sum(r["endpoint"] == "broke" for r in got.values()) == 10
    assert broke.stats()["requests_after_arrears"] <= 4 + 5
    assert "broke limit" in p.stdout and "retired" in p.stdout


def test_the_run_stops_with_exit_2_only_when_every_endpoint_is_retired(tmp_path, sim):
    pitches, goods = make_inputs(tmp_path, 5)
    a = sim("--profile", "zhipu", "--arrears-after", "5", "--latency-ms", "10")
    b = sim("--profile", "zhipu", "--arrears-after", "5", "--latency-ms", "10")
    p = pooled(pitches, goods, tmp_path / "run", "--base-url", a.url, "--base-url", b.url, "--concurrency", "2",
               OPENAI_API_KEY=SECRET)
    assert p.returncode == 2, p.stderr
    assert "Traceback" not in p.stderr
    retired = [line for line in p.stderr.splitlines() if "retired" in line]
    assert len(retired) == 2, p.stderr  # the first as a warning, the last as the error line
    assert retired[1] == p.stderr.strip().splitlines()[-1], p.stderr
    named = [re.search(r"endpoint (\S+) retired", line) for line in retired]
    assert all(named) and {m.group(1).split("/")[0] for m in named if m} == {s.url.split("/")[2] for s in (a, b)}
    assert "1113" in retired[1] and "no endpoint is left" in retired[1], retired[1]
    got = by_id(tmp_path / "run")
    assert len(got) == 10 and all(r["status"] == "ok" for r in got.values())  # nothing recorded failed for it


def test_an_endpoint_killed_mid_run_leaves_its_jobs_to_the_others(tmp_path, sim):
    pitches, goods = make_inputs(tmp_path, 8)  # 192 requests
    stays = sim("--latency-ms", "40")
    dies = sim("--latency-ms", "40")
    f = declare(tmp_path, {"name": "stays", "base_url": stays.url}, {"name": "dies", "base_url": dies.url})
    cmd = score_cmd(pitches, goods, tmp_path / "run", "--endpoints", str(f), "--concurrency", "4")
    proc = subprocess.Popen(cmd, env=env_for(None), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while dies.stats()["answered"] < 20 and time.monotonic() < deadline:
            time.sleep(0.05)
        dies.proc.kill()  # in the middle of its requests
        dies.proc.wait(10)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    got = by_id(tmp_path / "run")
    assert len(got) == 192 and all(r["status"] == "ok" for r in got.values())
    assert sum(r["endpoint"] == "dies" for r in got.values()) >= 20
    assert "dies limit" in out and "waiting" in out  # the end line names it down
    # its requests cut by the kill went to 'stays' at once, ahead of new jobs: none waited for the
    # dead endpoint's probe, or for the new jobs to run out, to be moved
    order = sorted(got.values(), key=lambda r: r["t"])
    moved = [i for i, r in enumerate(order) if r["attempts"] > 1]
    assert moved and max(moved) < len(order) - 40, (moved, len(order))


def test_a_run_resumes_on_another_set_of_endpoints(tmp_path, sim):
    pitches, goods = make_inputs(tmp_path, 3)  # 24 entry, 24 buy, 24 read
    a, b, c = (sim("--latency-ms", "5") for _ in range(3))
    run = tmp_path / "run"
    first = score(pitches, goods, run, a.url, "--stages", "entry")  # a manifest that names its endpoint
    assert first.returncode == 0, first.stderr
    f = declare(tmp_path, {"name": "b", "base_url": b.url}, {"name": "c", "base_url": c.url})
    second = pooled(pitches, goods, run, "--endpoints", str(f), "--stages", "entry,buy")
    assert second.returncode == 0, second.stderr
    assert b.stats()["answered"] + c.stats()["answered"] == 24  # buy only: entry was done
    third = pooled(pitches, goods, run, "--base-url", a.url, "--base-url", c.url)
    assert third.returncode == 0, third.stderr
    got = by_id(run)
    assert len(got) == 72 and all(r["status"] == "ok" for r in got.values())
    assert sum(s.stats()["answered"] for s in (a, b, c)) == 72  # nothing asked twice


def test_a_bad_endpoints_file_is_one_line_naming_the_endpoint_and_field(tmp_path):
    pitches, goods = make_inputs(tmp_path, 1)
    run = tmp_path / "run"
    cases = [
        ({"name": "a", "base_url": "http://127.0.0.1:9/v1", "api_key": SECRET}, "endpoint 'a': field 'api_key'"),
        ({"name": "a", "base_url": "http://127.0.0.1:9/v1", "key_env": "NO_SUCH_KEY_VAR"}, "key_env NO_SUCH_KEY_VAR"),
        ({"name": "a", "base_url": "http://127.0.0.1:9/v1", "max_concurrency": 0}, "'a': max_concurrency"),
        ({"name": "a"}, "endpoint 'a': base_url is missing"),
        ({"name": "a", "base_url": "http://127.0.0.1:9/v1", "weight": 0}, "'a': weight must be a positive number"),
        ({"name": "a", "base_url": "http://127.0.0.1:9/v1", "price_input": 1}, "'a': price_input and price_output"),
        ({"name": "a", "base_url": "http://127.0.0.1:9/v1", "price_input": 1, "price_output": -2},
         "'a': price_output must be a number of at least 0"),
    ]
    for table, says in cases:
        p = pooled(pitches, goods, run, "--endpoints", str(declare(tmp_path, table)))
        line = one_line_error(p)
        assert says in line and SECRET not in line, line
    assert not run.exists()


def test_weight_decides_among_endpoints_with_room_when_jobs_are_fewer_than_room(tmp_path, sim):
    pitches, goods = make_inputs(tmp_path, 1)  # 8 entry requests, 32 slots: every endpoint has room
    a, b = sim("--latency-ms", "20"), sim("--latency-ms", "20")

    def answered(weights: tuple[float, float], run: str) -> list[int]:
        before = [s.stats()["answered"] for s in (a, b)]
        f = declare(tmp_path, *({"name": n, "base_url": s.url, "max_concurrency": 16, "weight": w}
                                for n, s, w in zip("ab", (a, b), weights)))
        p = pooled(pitches, goods, tmp_path / run, "--endpoints", str(f), "--concurrency", "16",
                   "--stages", "entry")
        assert p.returncode == 0, p.stderr
        assert len(by_id(tmp_path / run)) == 8
        return [s.stats()["answered"] - n for s, n in zip((a, b), before)]

    assert answered((1, 1), "even") == [4, 4]  # the least loaded relative to its limit, in turn
    a_n, b_n = answered((1, 4), "weighted")   # b fills to four times a's share of its limit first
    assert a_n + b_n == 8 and b_n >= 6, (a_n, b_n)


def test_each_answer_is_charged_at_the_prices_of_the_endpoint_that_gave_it(tmp_path, sim):
    pitches, goods = make_inputs(tmp_path, 2)  # 16 entry requests
    a, b = sim("--latency-ms", "5"), sim("--latency-ms", "5")
    f = declare(tmp_path, {"name": "own", "base_url": a.url, "price_input": 1.0, "price_output": 3.0},
                {"name": "run", "base_url": b.url})
    run = tmp_path / "run"
    p = pooled(pitches, goods, run, "--endpoints", str(f), "--stages", "entry", "--concurrency", "4",
               "--price-input", "10", "--price-output", "30")
    assert p.returncode == 0, p.stderr
    got = by_id(run)
    assert {r["endpoint"] for r in got.values()} == {"own", "run"}
    per_million = {"own": (1.0, 3.0), "run": (10.0, 30.0)}
    want = sum((r["usage"]["prompt_tokens"] * per_million[r["endpoint"]][0]
                + r["usage"]["completion_tokens"] * per_million[r["endpoint"]][1]) / 1e6 for r in got.values())
    usage = json.loads((run / "usage.json").read_text())
    assert abs(usage["cost"] - want) < 1e-6 and usage["endpoint_prices"] == {"own": {"input": 1.0, "output": 3.0}}
    assert f"spent {want:.4f} CNY" in p.stdout, p.stdout
    dry = pooled(pitches, goods, tmp_path / "dry", "--endpoints", str(f), "--dry-run", "--price-input", "10",
                 "--price-output", "30")
    assert dry.returncode == 0 and "10 / 30 CNY" in dry.stdout and "the highest of the endpoints' prices" in dry.stdout
    # --budget needs a price for every answer: the run's prices, or every endpoint its own
    p = pooled(pitches, goods, tmp_path / "budget", "--endpoints", str(f), "--budget", "1")
    assert "--budget needs the prices" in one_line_error(p)
    first = pooled(pitches, goods, tmp_path / "budget", "--endpoints", str(f), "--stages", "entry")
    assert first.returncode == 0, first.stderr  # no run prices: the answers of 'run' have none
    own = declare(tmp_path, {"name": "own", "base_url": a.url, "price_input": 1.0, "price_output": 3.0})
    p = pooled(pitches, goods, tmp_path / "budget", "--endpoints", str(own), "--budget", "1000")
    assert "--budget:" in one_line_error(p) and "without prices" in p.stderr
    assert len(by_id(tmp_path / "budget")) == 16  # nothing more was asked


def test_a_run_over_several_endpoints_stopped_by_sigint_resumes_with_nothing_asked_twice(tmp_path, sim):
    pitches, goods = make_inputs(tmp_path, 8)  # 192 requests
    a, b = sim("--latency-ms", "100"), sim("--latency-ms", "100")
    f = declare(tmp_path, {"name": "a", "base_url": a.url}, {"name": "b", "base_url": b.url})
    run = tmp_path / "run"
    proc = subprocess.Popen(score_cmd(pitches, goods, run, "--endpoints", str(f), "--concurrency", "4"),
                            env=env_for(None), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while a.stats()["answered"] + b.stats()["answered"] < 20 and time.monotonic() < deadline:
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)  # workers waiting for a job are cancelled while jobs are handed out
        err = proc.communicate(timeout=60)[1]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err
    assert "run the same command again to resume" in err and "Traceback" not in err
    assert 0 < len(by_id(run)) < 192
    p = pooled(pitches, goods, run, "--endpoints", str(f), "--concurrency", "4")
    assert p.returncode == 0, p.stderr
    got = by_id(run)
    assert len(got) == 192 and all(r["status"] == "ok" for r in got.values())
    assert a.stats()["answered"] + b.stats()["answered"] == 192  # what was in flight at the stop was recorded
