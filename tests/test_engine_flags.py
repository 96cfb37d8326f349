"""The engine's flags are one declaration: bin/score and bin/serve take the same ones, check them the
same way and build the same settings from them, and bin/serve's reach its requests.

The serve checks run the real bin/serve over a real bin/sim-server (directly, or behind a recording
proxy that keeps every request body), with a model trained here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from kit import SERVE_KEY as KEY
from kit import Server as Recorder
from kit import call, make_pitch, serve_flags, sim_stats
from liveroom.scoring.engine_flags import chat_settings
from liveroom.scoring.score import build_parser as score_parser
from liveroom.serve.cli import build_parser as serve_parser

ROOT = Path(__file__).resolve().parent.parent
BIN = ROOT / "bin"
SHARED = ("--base-url", "--response-format", "--temperature", "--max-tokens", "--concurrency",
          "--fixed-concurrency", "--provider", "--extra-body", "--rpm", "--tpm", "--max-retries", "--max-reasks",
          "--reask-max-tokens", "--timeout", "--backoff")
SCORE_ONLY = ("--out", "--retry-filtered", "--grace", "--progress-every", "--give-up-after", "--encoding",
              "--budget", "--price-input", "--dry-run")
SCORE_ARGS = ["--pitches", "p.csv", "--out", "o"]
SERVE_ARGS = ["--model", "m"]


def options(p: Any) -> set[str]:
    return {s for a in p._actions for s in a.option_strings}


def command(name: str, *flags: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k not in ("OPENAI_BASE_URL", "OPENAI_API_KEY", "LIVEROOM_MODEL")}
    return subprocess.run([sys.executable, str(BIN / name), *flags], capture_output=True, text=True, timeout=60,
                          env={**base, **(env or {})})


# ----------------------------------------------------------------- one declaration


def test_both_commands_take_the_shared_flags_and_score_keeps_its_own():
    score, serve = options(score_parser()), options(serve_parser())
    assert set(SHARED) <= score and set(SHARED) <= serve
    assert "--model" in score and "--llm" in serve  # serve's --model is MODEL_DIR
    assert set(SCORE_ONLY) <= score and not set(SCORE_ONLY) & serve


@pytest.mark.parametrize("flags", [
    [],
    ["--concurrency", "8", "--fixed-concurrency", "--provider", "zhipu", "--extra-body", '{"thinking": {"type": '
     '"disabled"}}', "--rpm", "600", "--tpm", "90000", "--max-retries", "3", "--max-reasks", "1",
     "--reask-max-tokens", "3000", "--timeout", "30", "--backoff", "0.5", "--base-url", "http://h:1/v1",
     "--response-format", "json_schema", "--temperature", "0.7", "--max-tokens", "400"],
])
def test_the_same_flags_make_the_same_settings(monkeypatch, flags):
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-x")
    score = chat_settings(score_parser().parse_args([*SCORE_ARGS, "--model", "m1", *flags]), "m1")
    serve = chat_settings(serve_parser().parse_args([*SERVE_ARGS, "--llm", "m1", *flags]), "m1")
    assert score == serve
    if flags:
        assert serve.provider is not None and serve.provider.name == "zhipu"
        assert serve.params.extra_body == {"thinking": {"type": "disabled"}}
        e = serve.engine
        assert (e.concurrency, e.adaptive, e.reask_max_tokens, e.backoff_initial) == (8, False, 3000, 0.5)
        assert (serve.rpm, serve.tpm, serve.timeout, serve.base_url) == (600, 90000, 30, "http://h:1/v1")
    else:
        assert serve.engine.adaptive and serve.params.extra_body == {} and serve.provider is not None


@pytest.mark.parametrize("flag, value, words", [
    ("--backoff", "-1", "must be a number above 0"),
    ("--backoff", "0", "must be a number above 0"),
    ("--extra-body", "[1]", "must be a JSON object, got list"),
    ("--extra-body", "{nope", "must be a JSON object such as"),
    ("--extra-body", '{"messages": []}', "cannot set 'messages'"),
    ("--concurrency", "0", "must be a whole number of at least 1"),
    ("--reask-max-tokens", "0", "must be a whole number of at least 1"),
    ("--max-tokens", "-5", "must be a whole number of at least 1"),
    ("--temperature", "-0.1", "must be a number of at least 0"),
])
@pytest.mark.parametrize("name, args", [("score", SCORE_ARGS), ("serve", SERVE_ARGS)])
def test_a_bad_value_is_one_line_naming_the_flag(name, args, flag, value, words):
    p = command(name, *args, flag, value)
    assert p.returncode == 2 and "Traceback" not in p.stderr, p.stderr
    assert p.stderr.splitlines()[-1].startswith(f"{name}: error: argument {flag}: {words}"), p.stderr


def test_the_help_says_what_each_limit_counts_over():
    score, serve = command("score", "--help").stdout, command("serve", "--help").stdout
    for text in (score, serve):
        assert all(flag in text for flag in SHARED), text
        assert "--provider's" in " ".join(text.split())  # --base-url's default names the provider's
    flat = " ".join(serve.split())
    assert "requests in flight over all forecasts" in flat and "per minute limit over all forecasts" in flat
    assert "the one live limit of all forecasts" in flat and "--llm NAME" in flat and "--model MODEL_DIR" in flat
    assert "over all forecasts" not in score and "--model NAME" in score


def test_a_local_server_provider_needs_its_address_on_serve_too(tmp_path):
    p = command("serve", "--model", str(tmp_path), "--provider", "vllm")
    assert p.returncode == 2 and p.stderr.strip() == "serve: error: --provider vllm: name the server with " \
                                                       "--base-url or OPENAI_BASE_URL", p.stderr


def test_serve_refuses_a_remote_endpoint_without_a_key_before_serving(tmp_path):
    p = command("serve", "--model", str(tmp_path), "--base-url", "https://llm.example.com/v1", "--port", "0")
    assert p.returncode == 2 and "Traceback" not in p.stderr, p.stderr
    assert p.stderr.strip() == "serve: error: no API key for https://llm.example.com/v1: set OPENAI_API_KEY (a server that " \
                               "needs none: set it to any value, e.g. OPENAI_API_KEY=none)", p.stderr
    assert "listening" not in p.stdout


# ----------------------------------------------------------------- bin/serve's flags reach its requests


def forward_to(url: str):
    """A recorder's handler: the request goes on to ``url`` and its answer comes back as it is."""
    async def forward(request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
        async with aiohttp.ClientSession() as s, s.post(url + "/chat/completions", json=body) as r:
            return web.json_response(await r.json(), status=r.status)
    return forward


def test_serve_sends_extra_body_and_reasks_with_more_tokens(servers, model_dir, tmp_path):
    sim = servers("sim-server", "--fail-first", "24", "--fail-first-kind", "null-content")
    proxy = Recorder(forward_to(sim.url))
    extra = '{"thinking": {"type": "disabled"}}'
    try:
        serve = servers("serve", *serve_flags(proxy, model_dir, tmp_path / "cache", "--extra-body", extra,
                                              "--reask-max-tokens", "3000"), key=KEY)
        status, got = call(serve.url + "/v1/forecast", make_pitch())
        assert status == 200, got
        bodies = proxy.bodies
    finally:
        proxy.stop()
    assert got["requests_sent"] == len(bodies) >= 48  # every question asked, then asked again
    assert all(b["thinking"] == {"type": "disabled"} for b in bodies)
    firsts = [b for b in bodies if len(b["messages"]) <= 2]
    again = [b for b in bodies if len(b["messages"]) > 2]
    assert len(firsts) == 24 and {b["max_tokens"] for b in firsts} == {1000}
    assert len(again) >= 24 and {b["max_tokens"] for b in again} == {3000}
    # the cache keeps the body: answers asked with another one are not these
    manifest = json.loads((tmp_path / "cache" / "manifest.json").read_text())
    assert manifest["params"]["extra_body"] == {"thinking": {"type": "disabled"}}
    assert serve.stop() == 0
    p = command("serve", *serve_flags(sim, model_dir, tmp_path / "cache", "--port", "0"), env={"OPENAI_API_KEY": KEY})
    assert p.returncode == 2 and "extra_body" in p.stderr.splitlines()[-1], p.stderr


def capped_over(servers, sim, model_dir, cache: Path, *flags: str) -> int:
    """The capped answers of one forecast (24 questions, all at once) through bin/serve ``flags``."""
    before = sim_stats(sim)["capped"]
    serve = servers("serve", *serve_flags(sim, model_dir, cache, "--concurrency", "24", "--max-retries", "12", "--backoff", "0.01",
                                          *flags), key=KEY)
    status, got = call(serve.url + "/v1/forecast", make_pitch())
    assert status == 200, got
    assert serve.stop() == 0
    return sim_stats(sim)["capped"] - before


def test_serve_keeps_asking_over_the_cap_only_with_fixed_concurrency(servers, model_dir, tmp_path):
    sim = servers("sim-server", "--profile", "zhipu", "--max-inflight", "4", "--latency-ms", "100")
    adaptive = capped_over(servers, sim, model_dir, tmp_path / "a")
    fixed = capped_over(servers, sim, model_dir, tmp_path / "f", "--fixed-concurrency")
    assert fixed > 2 * adaptive, (adaptive, fixed)  # the same cap, asked over and over


def test_forecasts_share_one_live_limit_so_later_ones_start_from_what_was_learned(servers, model_dir, tmp_path):
    sim = servers("sim-server", "--profile", "zhipu", "--max-inflight", "4", "--latency-ms", "100")
    serve = servers("serve", *serve_flags(sim, model_dir, tmp_path / "cache", "--concurrency", "24",
                                          "--max-retries", "12", "--backoff", "0.01"), key=KEY)
    capped = []
    for first in (0, 5):  # five new pitches at once, twice
        before = sim_stats(sim)["capped"]
        status, got = call(serve.url + "/v1/forecast:batch", {"pitches": [make_pitch(first + i) for i in range(5)]})
        assert status == 200 and got["requests_sent"] >= 120, got
        capped.append(sim_stats(sim)["capped"] - before)
    status, health = call(serve.url + "/healthz")
    current, ceiling = map(int, health["concurrency"].removeprefix("limit ").split("/"))
    assert ceiling == 24 and current <= 6, health  # one limit, and it found the cap
    assert capped[1] < capped[0] / 2, capped  # the second batch did not learn the cap again


def test_serve_reads_error_codes_as_the_provider_means_them(servers, model_dir, tmp_path):
    # DashScope's token throttle answers 429 insufficient_quota, OpenAI's code for an empty account
    sim = servers("sim-server", "--profile", "dashscope", "--tpm-limit", "1", "--latency-ms", "100")
    flags = ("--concurrency", "24", "--max-retries", "0")
    generic = servers("serve", *serve_flags(sim, model_dir, tmp_path / "g", *flags), key=KEY)
    status, got = call(generic.url + "/v1/forecast", make_pitch())
    assert status == 502 and "quota is used up" in got["error"]["message"], got  # fatal: not known as DashScope
    ds = servers("serve", *serve_flags(sim, model_dir, tmp_path / "ds", *flags, "--provider", "dashscope"), key=KEY)
    status, got = call(ds.url + "/v1/forecast", make_pitch())
    message = got["error"]["message"]
    assert status == 502 and "insufficient_quota" in message and "gave up after 1 attempts" in message, got
    assert "quota is used up" not in message  # a throttle to wait for, not an empty account
    status, info = call(ds.url + "/v1/model")
    assert info["questions"]["provider"] == "dashscope"


def test_serve_asks_the_providers_address_by_default(servers, model_dir, tmp_path):
    serve = servers("serve", "--model", str(model_dir), "--cache", str(tmp_path / "cache"), "--provider", "zhipu",
                    key=KEY)
    status, info = call(serve.url + "/v1/model")
    assert status == 200 and info["questions"]["provider"] == "zhipu"
    assert info["questions"]["endpoint"].startswith("https://open.bigmodel.cn/"), info["questions"]
