"""The bill: prices, usage.json and the dry runs of bin/score and bin/batch prepare.

The dry runs are run as a user runs them, against a real ``bin/sim-server``
process on loopback, whose ``/stats`` counts every request it got.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kit import env_for, make_inputs, records, score, score_cmd
from liveroom.async_client.record import Record
from liveroom.errors import InputError
from liveroom.prompts.stages import STAGES
from liveroom.scoring.cost_flags import add_cost_arguments, price_choice
from liveroom.scoring.dry_run import Estimate, Tally, table
from liveroom.scoring.prices import PriceChoice, Prices, file_prices, resolve_prices, worst_case
from liveroom.scoring.usage import FIELDS, USAGE, UsageTotals, check_usage, recompute

ROOT = Path(__file__).resolve().parent.parent
BIN = ROOT / "bin"
EXAMPLE = ROOT / "data" / "prices.example.json"
N = 6  # pitches: 6 x 3 stages x 8 personas = 144 requests


def run(cmd: str, *args: str, url: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OPENAI_BASE_URL": url}
    env.pop("OPENAI_API_KEY", None)
    return subprocess.run([sys.executable, str(BIN / cmd), *args], env=env, capture_output=True, text=True,
                          timeout=120)


def prepare(pitches: Path, goods: Path, out: Path, url: str, *flags: str) -> subprocess.CompletedProcess:
    return run("batch", "prepare", "--pitches", str(pitches), "--goods", str(goods), "--out", str(out),
               "--base-url", url, *flags, url=url)


def tree_digest(d: Path) -> dict[str, str]:
    return {str(p.relative_to(d)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(d.rglob("*"))
            if p.is_file()}


def table_rows(stdout: str) -> dict[str, list[str]]:
    """The dry run's table: stage (and 'total') -> its cells."""
    rows = {}
    for line in stdout.splitlines():
        cells = re.split(r"\s{2,}", line.strip())
        if cells[0] in (*STAGES, "total") and len(cells) >= 5:
            rows[cells[0]] = cells
    return rows


def number(cell: str) -> int:
    return int(cell.replace(",", ""))


# ----------------------------------------------------------------------------- dry runs

def test_dry_run_of_a_new_run_sends_nothing_and_writes_nothing(tmp_path, sim):
    pitches, goods = make_inputs(tmp_path, N)
    s = sim()
    out = tmp_path / "run"
    p = score(pitches, goods, out, s.url, "--dry-run", "--price-input", "2", "--price-output", "8")
    assert p.returncode == 0, p.stderr
    assert s.stats()["requests"] == 0
    assert not out.exists()  # not even the directory or a manifest
    rows = table_rows(p.stdout)
    assert [number(rows[st][1]) for st in STAGES] == [N * 8] * 3
    assert number(rows["total"][1]) == N * 3 * 8
    assert "not calibrated" in p.stdout and "nothing sent, nothing written" in p.stdout
    # no completion seen yet: the cost is a bound, prompt estimate + max_tokens per request
    assert rows["total"][4].startswith("up to ")


def test_dry_run_of_a_half_done_run_counts_exactly_changes_nothing_and_is_calibrated(tmp_path, sim):
    pitches, goods = make_inputs(tmp_path, N)
    s = sim("--fail-first", "7", "--fail-first-kind", "500")
    out = tmp_path / "run"
    first = score(pitches, goods, out, s.url, "--max-retries", "0", "--concurrency", "4")
    assert first.returncode == 1, first.stderr
    failed = [r for r in records(out) if r["status"] != "ok"]
    assert len(failed) == 7
    before, sent = tree_digest(out), s.stats()["requests"]

    p = score(pitches, goods, out, s.url, "--dry-run", "--max-retries", "0")
    assert p.returncode == 0, p.stderr
    assert tree_digest(out) == before and s.stats()["requests"] == sent
    rows = table_rows(p.stdout)
    for st in STAGES:
        assert number(rows[st][1]) == sum(r["stage"] == st for r in failed)
    assert number(rows["total"][1]) == 7
    assert "calibrated by the usage of" in p.stdout and "137 of its 144 requests done" in p.stdout
    predicted = number(rows["total"][2])

    prompt_before = s.stats()["prompt_tokens"]
    again = score(pitches, goods, out, s.url)
    assert again.returncode == 0, again.stderr
    assert s.stats()["requests"] - sent == 7  # exactly what the dry run said
    real = s.stats()["prompt_tokens"] - prompt_before
    assert abs(predicted - real) <= 0.05 * real  # the simulator counts half a token a character; so does the ratio


def test_dry_run_refuses_a_run_made_by_another_command(tmp_path, sim):
    pitches, goods = make_inputs(tmp_path, 2)
    s = sim()
    out = tmp_path / "run"
    assert score(pitches, goods, out, s.url).returncode == 0
    before = tree_digest(out)
    p = score(pitches, goods, out, s.url, "--dry-run", "--temperature", "0.9")
    assert p.returncode == 2 and "different command" in p.stderr and "Traceback" not in p.stderr
    assert tree_digest(out) == before


def test_batch_prepare_dry_run_says_what_prepare_then_writes(tmp_path, sim):
    pitches, goods = make_inputs(tmp_path, N)
    s = sim("--fail-first", "5", "--fail-first-kind", "nonjson")
    out = tmp_path / "run"
    first = score(pitches, goods, out, s.url, "--max-reasks", "0", "--concurrency", "4")
    assert first.returncode == 1, first.stderr
    assert sum(r["status"] == "invalid" for r in records(out)) == 5
    before, sent = tree_digest(out), s.stats()["requests"]

    exhausted = prepare(pitches, goods, out, s.url, "--dry-run", "--max-reasks", "0")
    assert exhausted.returncode == 0, exhausted.stderr
    assert number(table_rows(exhausted.stdout)["total"][1]) == 0 and "5 left out" in exhausted.stdout

    p = prepare(pitches, goods, out, s.url, "--dry-run", "--max-reasks", "1",
                "--price-input", "2", "--price-output", "8", "--batch-discount", "0.25")
    assert p.returncode == 0, p.stderr
    assert tree_digest(out) == before and not (out / "batch").exists() and s.stats()["requests"] == sent
    assert number(table_rows(p.stdout)["total"][1]) == 5
    assert "5 request(s) sent as re-asks" in p.stdout and "x0.25 at the batch price" in p.stdout
    assert "would write 1 request file(s)" in p.stdout

    real = prepare(pitches, goods, out, s.url, "--max-reasks", "1")
    assert real.returncode == 0, real.stderr
    assert "prepared 5 request(s) in 1 file(s)" in real.stdout and "5 of them re-ask(s)" in real.stdout


def test_table_arithmetic_with_a_calibration_sample():
    est = Estimate(todo={"entry": Tally(10, 20_000), "buy": Tally(4, 8_000)},
                   seen={"entry": Tally(5, 10_000, 4_000, 150), "buy": Tally()}, planned=19, done=5)
    prices = Prices(2.0, 8.0, "CNY", 0.5)
    rows = table_rows("\n".join(table(est, 100, prices, batch=True)))
    # entry: 20,000 x (4,000 / 10,000) prompt tokens; 10 x 30 .. 10 x 100 completion tokens
    assert rows["entry"][2:4] == ["8,000", "300 - 1,000"]
    low, high = (8000 * 2 + 300 * 8) / 1e6 * 0.5, (8000 * 2 + 1000 * 8) / 1e6 * 0.5
    assert [float(v) for v in rows["entry"][4].split(" - ")] == pytest.approx([low, high], rel=1e-2)
    assert rows["buy"][5].startswith("other stages")  # buy has no sample of its own: the pooled one
    assert number(rows["total"][1]) == 14


# ----------------------------------------------------------------------------- usage.json

def test_usage_totals_recompute_equal_the_sum_over_records_across_a_kill_and_restarts(tmp_path, sim):
    pitches, goods = make_inputs(tmp_path, 12)
    s = sim("--fail-first", "9", "--fail-first-kind", "nonjson", "--latency-ms", "30")
    out = tmp_path / "run"
    assert score(pitches, goods, out, s.url, "--max-reasks", "0", "--stages", "entry").returncode == 1
    kept = recompute(out, STAGES)
    kept.prices = Prices(2.0, 8.0)
    kept.save(out)  # what the run had used when it stopped

    proc = subprocess.Popen(score_cmd(pitches, goods, out, "--concurrency", "4"), env=env_for(s.url),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while len(records(out)) < 120 and time.time() < deadline:
        time.sleep(0.05)
    proc.kill()  # kill -9: nothing saved, maybe a torn last line
    proc.wait(10)
    assert score(pitches, goods, out, s.url).returncode == 0  # resumed to the end

    totals = UsageTotals.load(out)
    totals.catch_up(out, STAGES)  # the saved totals plus exactly the records written since
    recs = records(out)
    by_hand = {"requests_ok": sum(r["status"] == "ok" for r in recs),
               "requests_failed": sum(r["status"] != "ok" for r in recs),
               "prompt_tokens": sum(r["usage"].get("prompt_tokens", 0) for r in recs),
               "completion_tokens": sum(r["usage"].get("completion_tokens", 0) for r in recs)}
    assert by_hand["requests_ok"] == 12 * 24 and by_hand["requests_failed"] == 9
    again = recompute(out, STAGES)
    assert totals == again and totals.counted == again.counted
    assert {k: again.to_json()[k] for k in by_hand} == by_hand
    totals.save(out)
    saved = json.loads((out / USAGE).read_text())
    assert set(FIELDS) <= saved.keys()
    assert saved["cost"] == pytest.approx((by_hand["prompt_tokens"] * 2 + by_hand["completion_tokens"] * 8) / 1e6)
    assert check_usage(out, STAGES)["usage_json"] == "agrees"

    lines = (out / "read.jsonl").read_bytes().splitlines(keepends=True)
    (out / "read.jsonl").write_bytes(b"".join(lines[:-3]))  # a file cut shorter than the totals cover
    totals.catch_up(out, STAGES)
    assert totals == recompute(out, STAGES) and totals.prices is not None


def test_batch_records_are_priced_at_the_batch_discount():
    totals = UsageTotals(prices=Prices(2.0, 8.0, batch_discount=0.5))
    usage = {"prompt_tokens": 1_000_000, "completion_tokens": 100_000}
    totals.add(Record("entry:1:Z", "ok", usage=usage, latency_ms=120.0))  # direct mode: timed
    totals.add(Record("entry:2:Z", "ok", usage=usage))  # imported from a batch: no latency
    totals.add(Record("entry:3:Z", "error", error="HTTP 500"))
    assert (totals.requests_ok, totals.requests_failed) == (2, 1)
    assert totals.cost() == pytest.approx(2.8 + 2.8 * 0.5)
    assert UsageTotals.from_json(totals.to_json()) == totals
    assert UsageTotals().to_json()["cost"] is None and UsageTotals().to_json()["currency"] is None
    assert worst_case(500, 1000, Prices(2.0, 8.0)) == pytest.approx((500 * 2 + 1000 * 8) / 1e6)
    assert worst_case(500, 1000, Prices(2.0, 8.0), batch=True) == pytest.approx((500 * 2 + 1000 * 8) / 2e6)


def test_collect_prints_the_totals_and_says_when_usage_json_differs(tmp_path, sim):
    pitches, goods = make_inputs(tmp_path, 2)
    s = sim()
    out = tmp_path / "run"
    assert score(pitches, goods, out, s.url).returncode == 0
    feats = tmp_path / "features"
    cmd = [sys.executable, str(BIN / "collect"), "--pitches", str(pitches), "--run", str(out), "--out", str(feats)]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert "collect: usage: 48 request(s) ok, 0 failed" in p.stderr
    usage = json.loads((feats / "coverage.json").read_text())["usage"]
    assert usage["usage_json"] == "agrees" and usage["prompt_tokens"] == s.stats()["prompt_tokens"]  # bin/score's
    (out / USAGE).unlink()  # a run of before usage.json
    assert subprocess.run(cmd, capture_output=True, text=True, timeout=60).returncode == 0
    assert json.loads((feats / "coverage.json").read_text())["usage"]["usage_json"] == "absent"

    wrong = recompute(out, STAGES)
    wrong.prompt_tokens += 5
    wrong.save(out)
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert "usage.json differs from the records: prompt_tokens" in p.stderr
    assert json.loads((feats / "coverage.json").read_text())["usage"]["usage_json"] == "differs"


# ----------------------------------------------------------------------------- prices

def cost_args(*argv: str) -> PriceChoice:
    """What the cost flags of bin/batch prepare give for ``argv``."""
    p = argparse.ArgumentParser()
    add_cost_arguments(p, batch=True)
    return price_choice(p.parse_args(argv))


def test_prices_from_flags_and_files(tmp_path):
    assert resolve_prices(cost_args(), "m") is None
    flags = resolve_prices(cost_args("--price-input", "1.5", "--price-output", "6", "--currency", "USD"), "m")
    assert (flags.input, flags.output, flags.currency, flags.batch_discount) == (1.5, 6.0, "USD", 0.5)
    with pytest.raises(InputError, match="go together"):
        resolve_prices(cost_args("--price-input", "1"), "m")

    toml = tmp_path / "p.toml"
    toml.write_text('currency = "CNY"\n[models."glm-4-plus"]\ninput = 5\noutput = 5\nbatch_discount = 0.4\n')
    got = resolve_prices(cost_args("--price-file", str(toml)), "GLM-4-Plus")
    assert (got.input, got.output, got.currency, got.batch_discount) == (5.0, 5.0, "CNY", 0.4)
    assert resolve_prices(cost_args("--price-file", str(toml), "--batch-discount", "0.5"), "glm-4-plus").batch_discount == 0.5
    wins = resolve_prices(cost_args("--price-file", str(toml), "--price-input", "1", "--price-output", "2"), "other")
    assert (wins.input, wins.output) == (1.0, 2.0)
    with pytest.raises(InputError, match="no prices for model 'other'.*glm-4-plus"):
        resolve_prices(cost_args("--price-file", str(toml)), "other")
    bad = tmp_path / "bad.json"
    bad.write_text('{"models": {"m": {"input": -1, "output": 2}}}')
    with pytest.raises(InputError, match="'input' must be a number of at least 0"):
        file_prices(bad, "m")
    with pytest.raises(SystemExit):
        cost_args("--price-input", "-1")


def test_the_example_price_file_is_dated_sourced_and_readable():
    obj = json.loads(EXAMPLE.read_text())
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", obj["date"]) and "example" in obj["note"].lower()
    for name in ("glm-4-flash", "glm-4-plus", "qwen-plus", "gpt-4o-mini"):
        assert obj["models"][name]["source"].startswith("https://")
        prices = file_prices(EXAMPLE, name)
        assert prices.input >= 0 and prices.output >= 0 and prices.currency in ("CNY", "USD")
