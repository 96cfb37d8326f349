"""The bill while a run goes: usage.json kept by bin/score (killed and resumed), the money on the
progress line, ``--budget`` and the batch imports.

bin/score runs as a user runs it, against a real ``bin/sim-server`` process,
whose replies carry ``usage`` (half a token a character); the batch commands
run against the local Batch API server, in-process through bin/batch's entry
point. Prices are made up, large enough that each request costs about one unit.

What the budget tests hold to: the rule "spent + worst case of the jobs in
flight <= budget" is checked before each job is sent, so the spent cost never
passes the budget (while no request costs more than its worst case). A job that
does not fit waits for the jobs in flight to be released and is asked again; the
run stops only when a job does not fit with nothing in flight: there
budget - spent < W(refused job) <= the largest worst case of a job, whatever
the concurrency (``--concurrency 8`` as much as 1).
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from kit import BATCH_PITCHES, batch_state, env_for, make_inputs, records, score, score_cmd
from kit import batch_inline as batch_cmd
from kit import get_with_key as get
from liveroom.async_client.engine import Job
from liveroom.async_client.record import Record
from liveroom.prompts.stages import STAGES
from liveroom.scoring.budget import REASK_WORDS, WorstCase
from liveroom.scoring.plan import DEFAULT_MODEL, ModelParams, make_plan, plan_jobs, scan_done
from liveroom.scoring.prices import Prices
from liveroom.scoring.usage import FIELDS, USAGE, check_usage

PRICES = ("--price-input", "2000", "--price-output", "8000")
P = Prices(2000.0, 8000.0)
MAX_TOKENS = 100  # the simulator's replies here take 18 to 77 tokens


def by_hand(recs: list[dict]) -> dict[str, int]:
    """usage.json's counts, summed over the records."""
    return {"requests_ok": sum(r["status"] == "ok" for r in recs),
            "requests_failed": sum(r["status"] != "ok" for r in recs),
            "prompt_tokens": sum(r["usage"].get("prompt_tokens", 0) for r in recs),
            "completion_tokens": sum(r["usage"].get("completion_tokens", 0) for r in recs)}


def usage(run_dir: Path) -> dict:
    return json.loads((run_dir / USAGE).read_text())


def spent_on_progress(stderr: str) -> list[float]:
    return [float(m.replace(",", "")) for m in re.findall(r"^progress: .*; spent ([\d,.]+) CNY$", stderr, re.M)]


# ----------------------------------------------------------------------------- usage.json

def test_usage_json_equals_the_records_after_a_kill_and_a_resume_and_progress_shows_the_money(tmp_path, sim):
    pitches, goods = make_inputs(tmp_path, 12)  # 288 requests
    s = sim("--fail-first", "9", "--fail-first-kind", "nonjson", "--latency-ms", "40")
    out = tmp_path / "run"
    proc = subprocess.Popen(score_cmd(pitches, goods, out, "--concurrency", "2", "--max-reasks", "0", *PRICES),
                            env=env_for(s.url), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while not ((out / USAGE).exists() and len(records(out)) >= 100) and time.time() < deadline:
        time.sleep(0.05)
    proc.kill()  # kill -9: no last save, maybe a torn last line
    proc.wait(10)
    saved = usage(out)  # written during the run, whole
    assert 0 < saved["requests_ok"] + saved["requests_failed"] < 288
    assert saved["cost"] == pytest.approx((saved["prompt_tokens"] * 2000 + saved["completion_tokens"] * 8000) / 1e6)

    p = score(pitches, goods, out, s.url, "--concurrency", "2", "--max-reasks", "0", "--progress-every", "0.05",
              *PRICES)
    assert p.returncode == 0, p.stderr  # resumed to the end (the 9 unusable replies asked again)
    recs = records(out)
    hand = by_hand(recs)
    assert hand["requests_ok"] == 288 and hand["requests_failed"] == 9
    final = usage(out)
    assert {k: final[k] for k in hand} == hand
    assert set(FIELDS) <= final.keys() and final["currency"] == "CNY"
    assert final["cost"] == pytest.approx((hand["prompt_tokens"] * 2000 + hand["completion_tokens"] * 8000) / 1e6)
    assert check_usage(out, STAGES)["usage_json"] == "agrees"

    shown = spent_on_progress(p.stderr)
    assert len(shown) >= 3, p.stderr
    assert shown == sorted(shown) and shown[0] >= saved["cost"] - 0.01 and shown[-1] <= final["cost"] + 0.01
    assert f"; spent {final['cost']:,.2f} CNY; checkpoint" in p.stdout  # the summary line: the result

    rerun = score(pitches, goods, out, s.url, *PRICES)
    assert rerun.returncode == 0 and "nothing sent" in rerun.stdout
    assert usage(out) == final  # a rerun with nothing to do writes nothing


# ----------------------------------------------------------------------------- --budget

def worst_of_every_job(pitches: Path, goods: Path, reasks: int) -> float:
    """The largest worst case of the run's requests, from the plan bin/score makes."""
    params = ModelParams(DEFAULT_MODEL, 0.2, MAX_TOKENS)
    plan = make_plan(str(pitches), str(goods), ",".join(STAGES), None, params, "http://127.0.0.1/v1")
    worst = WorstCase(P, reasks)
    return max(worst(job) for job in plan_jobs(plan, scan_done(plan))[0])


def budget_run(pitches: Path, goods: Path, out: Path, url: str, budget: float, concurrency: int
               ) -> subprocess.CompletedProcess:
    return score(pitches, goods, out, url, "--model", DEFAULT_MODEL, "--max-tokens", str(MAX_TOKENS),
                 "--concurrency", str(concurrency), "--budget", str(budget), *PRICES)


@pytest.mark.parametrize("concurrency, budget, faults", [
    (1, 60.0, ()), (8, 60.0, ()), (8, 25.0, ()),
    (8, 25.0, ("--p-429", "0.3", "--retry-after", "0.05")),  # jobs parked for a retry come back to a slot
])
def test_a_budget_stop_lands_within_one_worst_case_and_a_higher_budget_completes(tmp_path, sim, concurrency,
                                                                                budget, faults):
    pitches, goods = make_inputs(tmp_path, 6)  # 144 requests, about 103 CNY in all at these prices
    s = sim("--latency-ms", "5", *faults)
    out = tmp_path / "run"
    w = worst_of_every_job(pitches, goods, reasks=2)  # --max-reasks 2, the default: three asks each
    assert 25.0 < 3 * w  # a small budget: under three worst cases, where a round of C = 8 may hold eight

    p = budget_run(pitches, goods, out, s.url, budget, concurrency)
    assert p.returncode == 130, p.stderr
    spent = usage(out)["cost"]
    line = f"score: budget reached: spent {spent:.2f} of {budget:.2f} CNY; raise --budget to go on"
    assert line in p.stderr, p.stderr
    assert spent == pytest.approx((sum(r["usage"]["prompt_tokens"] for r in records(out)) * 2000
                                   + sum(r["usage"]["completion_tokens"] for r in records(out)) * 8000) / 1e6)
    assert spent <= budget  # never passed
    assert budget - spent < w  # a refused job waited for those in flight: it stopped with nothing in flight
    assert bool(faults) == (s.stats()["requests"] > len(records(out)))  # the 429s were retried
    print(f"\nconcurrency {concurrency}: budget {budget}, spent {spent}, worst case of a job {w:.4f}, "
          f"short by {budget - spent:.4f}, exit {p.returncode}, {len(records(out))} of 144 requests")

    # the same budget again: a job with a smaller worst case than the one refused may still fit
    again = budget_run(pitches, goods, out, s.url, budget, concurrency)
    assert again.returncode == 130 and spent <= usage(out)["cost"] <= budget
    assert budget - usage(out)["cost"] < w and sum(r["attempts"] for r in records(out)) == s.stats()["requests"]
    if concurrency == 1:  # the job refused is the first one asked again: nothing is sent
        assert usage(out)["cost"] == spent

    done = budget_run(pitches, goods, out, s.url, 1000.0, concurrency)  # raised: it resumes and completes
    assert done.returncode == 0, done.stderr
    recs = records(out)
    assert len(recs) == 144 and all(r["status"] == "ok" for r in recs)
    assert {k: usage(out)[k] for k in by_hand(recs)} == by_hand(recs)
    assert usage(out)["cost"] <= 1000.0 and check_usage(out, STAGES)["usage_json"] == "agrees"


def test_a_stop_ends_the_jobs_waiting_for_room_in_the_budget(tmp_path, sim):
    pitches, goods = make_inputs(tmp_path, 6)  # 144 requests
    s = sim("--latency-ms", "1500")
    out = tmp_path / "run"
    w = worst_of_every_job(pitches, goods, reasks=2)
    proc = subprocess.Popen(score_cmd(pitches, goods, out, "--model", DEFAULT_MODEL, "--max-tokens", str(MAX_TOKENS),
                                      "--concurrency", "8", "--budget", str(2.5 * w), *PRICES),
                            env=env_for(s.url), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 60
        while s.stats()["requests"] < 2 and time.time() < deadline:
            time.sleep(0.05)
        assert s.stats()["requests"] == 2  # two fit; the other workers wait for room
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)  # the waits end: no hang
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert proc.returncode == 130, err
    assert "sigint: 142 request(s) left" in err, err  # the two in flight finished in the grace, nothing else sent
    assert s.stats()["requests"] == len(records(out)) == 2


def test_budget_needs_prices_and_a_worst_case_counts_every_ask(tmp_path, sim):
    pitches, goods = make_inputs(tmp_path, 1)
    s = sim()
    p = score(pitches, goods, tmp_path / "run", s.url, "--budget", "5")
    assert p.returncode == 2 and p.stderr.count("\n") == 1 and "--budget needs the prices" in p.stderr
    assert s.stats()["requests"] == 0 and not (tmp_path / "run").exists()

    job = Job("entry:1:Z", "entry", {"messages": [{"role": "user", "content": "x" * 100}], "max_tokens": 10}, {}, 110)
    per_token = Prices(1e6, 1e6)  # one unit a token: the worst case reads as tokens
    assert WorstCase(per_token, 0)(job) == 110
    # each re-ask: the prompt before it, twice the reply before it, the re-ask's words; its max_tokens
    ask1 = 100 + 2 * 10 + REASK_WORDS
    assert WorstCase(per_token, 2)(job) == pytest.approx(110 + (ask1 + 10) + (ask1 + 2 * 10 + REASK_WORDS + 10))
    ask2 = ask1 + 2 * 50 + REASK_WORDS
    assert WorstCase(per_token, 2, reask_max_tokens=50)(job) == pytest.approx(110 + (ask1 + 50) + (ask2 + 50))
    worst = WorstCase(per_token, 0)
    worst.learn(job, Record(job.id, "ok", usage={"prompt_tokens": 150, "completion_tokens": 12}, reasks=0))
    assert (worst.prompt_ratio, worst.reply_ratio) == (1.5, 1.2)  # a tokenizer that bills more raises it
    assert worst(job) == pytest.approx(150 + 12)


# ----------------------------------------------------------------------------- batch imports

def test_batch_fetch_and_import_update_usage_json_at_the_batch_price(tmp_path, capsys, server, env):
    pitches, goods = make_inputs(tmp_path, BATCH_PITCHES)
    srv = server(shuffle=True)
    run = tmp_path / "run"
    prep = ("prepare", "--pitches", str(pitches), "--goods", str(goods), "--base-url", srv.url, *PRICES)
    rc, err = batch_cmd(capsys, *prep, "--out", str(run), "--batch-discount", "0.4")
    assert rc == 0, err
    assert usage(run)["requests_ok"] == 0 and usage(run)["batch_discount"] == 0.4  # the prices are kept
    assert batch_cmd(capsys, "submit", "--run", str(run), "--file-poll", "0.05")[0] == 0
    rc, err = batch_cmd(capsys, "fetch", "--run", str(run), "--wait", "--interval", "0.01")
    assert rc == 0, err
    recs = records(run)
    hand = by_hand(recs)
    got = usage(run)
    assert hand["requests_ok"] == 120 and {k: got[k] for k in hand} == hand
    assert (got["batch_prompt_tokens"], got["batch_completion_tokens"]) == (hand["prompt_tokens"],
                                                                            hand["completion_tokens"])
    assert got["cost"] == pytest.approx(0.4 * (hand["prompt_tokens"] * 2000 + hand["completion_tokens"] * 8000) / 1e6)

    # by hand: files downloaded elsewhere, imported; no prices given to this prepare, none known
    other = tmp_path / "other"
    assert batch_cmd(capsys, *prep[:-4], "--out", str(other))[0] == 0
    assert not (other / USAGE).exists()
    assert batch_cmd(capsys, "submit", "--run", str(other), "--file-poll", "0.05")[0] == 0
    (shard,) = batch_state(other)["shards"]
    for _ in range(20):
        b = json.loads(get(srv.url, f"/batches/{shard['batch_id']}"))
        if b["status"] == "completed":
            break
    output = tmp_path / "output.jsonl"
    output.write_bytes(get(srv.url, f"/files/{b['output_file_id']}/content"))
    rc, err = batch_cmd(capsys, "import", "--run", str(other), str(output))
    assert rc == 0, err
    hand = by_hand(records(other))
    got = usage(other)
    assert hand["requests_ok"] == 120 and {k: got[k] for k in hand} == hand and got["cost"] is None
    assert check_usage(other, STAGES)["usage_json"] == "agrees"
