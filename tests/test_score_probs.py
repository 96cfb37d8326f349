"""--score-probs end to end: bin/score and bin/batch against the simulator (in a thread of the test, on
loopback), real run directories; the scores' probabilities checked against the simulator's distribution."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from kit import BATCH_KEY as KEY
from kit import BATCH_SUBMIT, BATCH_WAIT, BatchServer, records, score
from kit import batch_inline as batch
from kit import prepare_inline as prepare
from liveroom.async_client.providers import CHAT_PROVIDERS, DASHSCOPE, DEEPSEEK, OPENAI, ZHIPU, logprobs_for
from liveroom.scoring.batch.importer import line_record
from liveroom.scoring.plan import ModelParams, make_plan, plan_jobs, scan_done
from liveroom.scoring.probs_flags import ask_probabilities
from liveroom.sim.batch_jobs import BatchConfig
from liveroom.sim.config import SimConfig
from liveroom.sim.heuristic import score_distribution
from liveroom.sim.logprobs import OTHER, OTHERS, latents
from liveroom.sim.prompt import read_prompt
from liveroom.sim.run_batch import RunBatchConfig, answer_line

DOC = Path(__file__).resolve().parent.parent / "docs" / "PROVIDERS.md"
LEVELS = (1, 2, 3, 4, 5)
MISSING = "returns no token probabilities"


@pytest.fixture
def threaded_sim():
    started: list[BatchServer] = []

    def start(**sim: object) -> BatchServer:
        started.append(BatchServer(BatchConfig(sim=SimConfig(api_key=KEY, **sim))))  # type: ignore[arg-type]
        return started[-1]

    yield start
    for s in started:
        s.stop()


def latents_by_id(inputs: tuple[Path, Path]) -> dict[str, list[float]]:
    """Each request's unrounded heuristic scores, from the messages the plan sends."""
    plan = make_plan(str(inputs[0]), str(inputs[1]), "entry,buy,read", None, ModelParams(), None)
    jobs, _ = plan_jobs(plan, scan_done(plan))
    return {j.id: latents(read_prompt(j.payload["messages"])) for j in jobs}


def check_probabilities(recs: list[dict], want: dict[str, list[float]]) -> None:
    """Every ok record carries the raw distribution of its scores, renormalised, and its expectation."""
    assert recs and all(r["status"] == "ok" for r in recs)
    for r in recs:
        s, lat = r["scores"], want[r["id"]]
        dists = [score_distribution(x, 1.0) for x in lat]
        if r["stage"] == "buy":
            assert len(s["items_probs"]) == len(dists)
            for got, d in zip(s["items_probs"], dists):
                assert got == pytest.approx(list(d), abs=1e-9)
            assert s["items_expected"] == pytest.approx([sum(k * p for k, p in zip(LEVELS, d)) for d in dists])
            assert s["state_expected"] == pytest.approx(sum(s["items_expected"]) / len(lat))
            assert s["action_probs"] == s["items_probs"][0] and s["action_expected"] == s["items_expected"][0]
            drawn = s["scores"]
        else:
            f = r["stage"]
            assert s[f"{f}_probs"] == pytest.approx(list(dists[0]), abs=1e-9)
            assert s[f"{f}_expected"] == pytest.approx(sum(k * p for k, p in zip(LEVELS, dists[0])))
            assert s[f"{f}_mass"] == pytest.approx(1 - OTHER * len(OTHERS))
            drawn = [s[f]]
        assert all(d[k - 1] > 0 for d, k in zip(dists, drawn))  # each integer a draw the distribution allows


def test_score_probs_end_to_end_exact_reproducible_and_kept_on_resume(tmp_path, threaded_sim, inputs):
    srv = threaded_sim()
    run = tmp_path / "run"
    p = score(*inputs, run, srv.url, "--concurrency", "8", "--score-probs", key=KEY)
    assert p.returncode == 0, p.stderr
    assert MISSING not in p.stderr
    recs = records(run)
    check_probabilities(recs, latents_by_id(inputs))
    assert json.loads((run / "manifest.json").read_text())["params"]["top_logprobs"] == 5
    # drawn at the method's temperature with the simulator's seed: a second run draws the same integers
    again = tmp_path / "again"
    assert score(*inputs, again, srv.url, "--score-probs", key=KEY).returncode == 0
    ints = {r["id"]: (r["scores"].get("scores"), r["scores"].get(r["stage"])) for r in recs}
    assert {r["id"]: (r["scores"].get("scores"), r["scores"].get(r["stage"])) for r in records(again)} == ints
    # the run resumes only as it was made: asking without probabilities is refused in one line
    p = score(*inputs, run, srv.url, key=KEY)
    assert p.returncode == 2 and "top_logprobs" in p.stderr and len(p.stderr.strip().splitlines()) == 1
    p = score(*inputs, run, srv.url, "--score-probs", "--top-logprobs", "5", key=KEY)
    assert p.returncode == 0 and "already done" in p.stdout


def test_a_server_that_ignores_logprobs_is_named_once_and_the_integers_stay(tmp_path, threaded_sim, inputs):
    srv = threaded_sim(no_logprobs=True)
    run = tmp_path / "run"
    p = score(*inputs, run, srv.url, "--score-probs", "--top-logprobs", "3", key=KEY)
    assert p.returncode == 0, p.stderr
    assert p.stderr.count(MISSING) == 1
    recs = records(run)
    assert recs and all(r["status"] == "ok" and not any(k.endswith("_expected") for k in r["scores"]) for r in recs)


def test_a_provider_without_logprobs_is_told_at_start_and_not_asked(tmp_path, threaded_sim, inputs):
    asked = tmp_path / "requests.jsonl"
    srv = threaded_sim(record_requests=str(asked))
    run = tmp_path / "run"
    p = score(*inputs, run, srv.url, "--provider", "zhipu", "--score-probs", "--stages", "entry", key=KEY)
    assert p.returncode == 0, p.stderr
    notes = [line for line in p.stderr.splitlines() if "zhipu returns no token probabilities" in line]
    assert len(notes) == 1 and notes[0].startswith("score: note:")
    bodies = [json.loads(line) for line in asked.read_text().splitlines()]
    assert bodies and not any("logprobs" in b or "top_logprobs" in b for b in bodies)
    assert "top_logprobs" not in json.loads((run / "manifest.json").read_text())["params"]


def test_batch_lines_ask_and_import_keeps_the_probabilities(tmp_path, capsys, server, env, inputs):
    srv = server()
    run = tmp_path / "run"
    rc, out = prepare(capsys, inputs, run, srv.url, "--provider", "openai", "--score-probs", "--top-logprobs", "30",
                      "--stages", "entry,buy")
    assert rc == 0, out
    assert out.count("--top-logprobs 30: openai takes at most 20; asking 20") == 1
    line = json.loads(next((run / "batch").glob("*.jsonl")).read_text().splitlines()[0])
    assert line["body"]["logprobs"] is True and line["body"]["top_logprobs"] == 20
    assert batch(capsys, "submit", "--run", str(run), *BATCH_SUBMIT)[0] == 0
    rc, out = batch(capsys, "fetch", "--run", str(run), *BATCH_WAIT)
    assert rc == 0, out
    check_probabilities(records(run, ("entry", "buy")), latents_by_id(inputs))


def test_a_batch_whose_replies_carry_no_logprobs_is_said_once(tmp_path, capsys, env, threaded_sim, inputs):
    srv = threaded_sim(no_logprobs=True)
    run = tmp_path / "run"
    assert prepare(capsys, inputs, run, srv.url, "--score-probs", "--stages", "entry")[0] == 0
    assert batch(capsys, "submit", "--run", str(run), *BATCH_SUBMIT)[0] == 0
    rc, out = batch(capsys, "fetch", "--run", str(run), *BATCH_WAIT)
    assert rc == 0, out
    assert out.count("40 ok reply(ies) carry no token probabilities") == 1
    assert all("entry_expected" not in r["scores"] for r in records(run, ("entry",)))


def test_vllm_run_batch_answers_logprobs_when_the_line_asks(inputs):
    plan = make_plan(str(inputs[0]), str(inputs[1]), "buy", None, ModelParams(top_logprobs=2), None)
    job = next(plan_jobs(plan, scan_done(plan))[0])
    req = {"custom_id": job.id, "method": "POST", "url": "/v1/chat/completions", "body": job.payload}
    out = answer_line(req, RunBatchConfig())
    digits = [e for e in out["response"]["body"]["choices"][0]["logprobs"]["content"]
              if len(e["top_logprobs"]) == 2 + len(OTHERS)]
    assert len(digits) == job.meta["n_items"]  # each item's score: its 2 likeliest digits, then the non-digits
    rec = line_record(out, {"stage": "buy", "n_items": job.meta["n_items"]}, None)
    assert rec.status == "ok" and len(rec.scores["items_probs"]) == job.meta["n_items"]
    plain = answer_line({**req, "body": {**job.payload, "logprobs": False}}, RunBatchConfig())
    assert plain["response"]["body"]["choices"][0]["logprobs"] is None


@pytest.mark.parametrize("provider, model, top, want", [
    (OPENAI, "gpt-4o-mini", 30, 20), (OPENAI, "gpt-4o-mini", 5, 5), (OPENAI, "o3-mini", 5, None),
    (DASHSCOPE, "qwen-plus-2025-01-25", 10, 5), (ZHIPU, "glm-4-flash", 5, None),
    (DEEPSEEK, "deepseek-chat", 25, 20), (DEEPSEEK, "deepseek-reasoner", 5, None),
    (CHAT_PROVIDERS["vllm"], "any", 50, 50), (None, "any", 7, 7)])
def test_what_each_provider_is_asked(provider, model, top, want):
    asked, note = logprobs_for(provider, model, top)
    assert asked == want and (note is None) == (want == top)
    params, notes = ask_probabilities(ModelParams(model=model), top, [provider, provider])
    assert params.top_logprobs == want and len(notes) == (0 if want == top else 1)


def test_providers_md_section_7_is_the_code_table():
    """docs/PROVIDERS.md section 7 gives, per provider of the code, whether logprobs come and the cap."""
    text = DOC.read_text(encoding="utf-8")
    start = text.index("## 7. ")
    rows = [line for line in text[start:].splitlines() if line.startswith("| `")]
    seen = {}
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        name = re.fullmatch(r"`([a-z]+)`", cells[0])
        if name:
            seen[name.group(1)] = (cells[1], cells[2])
    assert set(seen) == set(CHAT_PROVIDERS)
    for name, (returned, cap) in seen.items():
        lp = CHAT_PROVIDERS[name].logprobs
        assert returned.startswith("yes" if lp.returned else "no"), name
        assert cap == (str(lp.max_top) if lp.max_top is not None else "–"), name
