"""bin/batch against the Zhipu- and DashScope-profile Batch API simulators, and the profiles themselves.

The servers run in-process as in ``test_batch_lifecycle.py`` (real HTTP on
loopback, real files); the commands go through ``bin/batch``'s entry point.
Each full run goes prepare -> submit -> fetch --wait -> (prepare -> submit ->
fetch --wait for the re-asks) -> collect and must give the matrices direct
mode gives against the same server.
"""

from __future__ import annotations

import asyncio
import json

import numpy as np
import pytest

from kit import BATCH_KEY as KEY
from kit import BATCH_PITCHES as N_PITCHES
from kit import BATCH_REQUESTS as N_REQUESTS
from kit import BATCH_WAIT as WAIT
from kit import BatchServer as Server
from kit import assert_no_key, records, score
from kit import batch_inline as batch
from kit import batch_state as state
from kit import collect_inline as collect
from kit import prepare_inline as prepare
from liveroom.async_client.batch_api import BatchClient
from liveroom.async_client.providers import (
    BATCH_PROVIDERS,
    DASHSCOPE,
    GENERIC,
    OPENAI,
    ZHIPU,
    default_base_url,
    detect,
    filtered_finish,
    is_content_filter,
    resolve_provider,
)
from liveroom.errors import InputError
from liveroom.prompts.stages import reask_messages
from liveroom.scoring.batch.importer import line_record
from liveroom.scoring.batch.state import Shard
from liveroom.sim.batch_jobs import BatchConfig, new_batch
from liveroom.sim.batch_server import BATCH_STATE
from liveroom.sim.config import SimConfig

FAST = ("--backoff", "0.01")


def request_lines(run, name: str) -> list[dict]:
    return [json.loads(x) for x in (run / "batch" / name).read_text().splitlines()]


def direct_matrices(tmp_path, capsys, inputs, url: str) -> dict[str, np.ndarray]:
    """What bin/score gives against the same server (the simulator's heuristic answers)."""
    d = tmp_path / "direct"
    p = score(*inputs, d, url, "--concurrency", "8", key=KEY)
    assert p.returncode == 0, p.stderr
    return collect(capsys, inputs[0], d, tmp_path / "direct-features")


def two_rounds(capsys, run, srv, provider: str, *submit_flags: str) -> tuple[set[str], str]:
    """Round one (some replies unusable), then round two re-asking them; the ids re-asked and the
    second prepare's words."""
    rc, err = batch(capsys, "submit", "--run", str(run), "--file-poll", "0.05", *FAST, *submit_flags)
    assert rc == 0, err
    rc, err = batch(capsys, "fetch", "--run", str(run), *WAIT)
    assert rc == 1 and "some requests are not ok" in err, err
    invalid = {r["id"] for r in records(run) if r["status"] == "invalid"}
    assert invalid and all(r["reasks"] == 0 for r in records(run))
    assert f"imported {N_REQUESTS - len(invalid)} ok, {len(invalid)} invalid, 0 error" in err

    rc, said = prepare(capsys, (run.parent / "pitches.csv", run.parent / "goods.json"), run, srv.url,
                       "--provider", provider)
    assert rc == 0 and f"prepared {len(invalid)} request(s)" in said and f"{len(invalid)} of them re-ask(s)" in said
    rc, err = batch(capsys, "submit", "--run", str(run), "--file-poll", "0.05", *FAST, *submit_flags)
    assert rc == 0, err
    rc, err = batch(capsys, "fetch", "--run", str(run), *WAIT)
    assert rc == 0, err
    assert f"imported {len(invalid)} ok, 0 invalid, 0 error" in err
    return invalid, said


def check_reasks(run, invalid: set[str], name: str, *firsts: str) -> None:
    """The second round's lines (file ``name``) are direct mode's re-asks of the first round's
    (files ``firsts``), and the checkpoint holds both attempts."""
    first = {line["custom_id"]: line for f in firsts for line in request_lines(run, f)}
    recs = records(run)
    for line in request_lines(run, name):
        cid = line["custom_id"]
        assert cid in invalid
        bad = next(r for r in recs if r["id"] == cid and r["status"] == "invalid")
        assert line["body"]["messages"] == reask_messages(first[cid]["body"]["messages"], bad["reply"], bad["error"])
        assert {k: v for k, v in line["body"].items() if k != "messages"} == \
            {k: v for k, v in first[cid]["body"].items() if k != "messages"}
    for cid in invalid:
        tries = [(r["status"], r["reasks"]) for r in recs if r["id"] == cid]
        assert tries == [("invalid", 0), ("ok", 1)]
    assert len({r["id"] for r in recs if r["status"] == "ok"}) == N_REQUESTS


# ----------------------------------------------------------------- the profiles

def test_profiles_are_detected_from_the_host():
    assert detect("https://open.bigmodel.cn/api/paas/v4") is ZHIPU
    assert detect("https://api.z.ai/api/paas/v4/") is ZHIPU
    assert detect("https://dashscope.aliyuncs.com/compatible-mode/v1") is DASHSCOPE
    assert detect("https://dashscope-intl.aliyuncs.com/compatible-mode/v1") is DASHSCOPE
    assert detect("https://api.openai.com/v1") is OPENAI
    assert detect("http://127.0.0.1:8000/v1") is GENERIC and detect("https://bigmodel.cn.example.com/v4") is GENERIC
    assert resolve_provider("zhipu", "http://127.0.0.1:1/v1") is ZHIPU
    assert resolve_provider(None, "https://api.z.ai/api/paas/v4") is ZHIPU
    with pytest.raises(InputError, match="unknown provider"):
        resolve_provider("nope", "http://x/v1")
    assert default_base_url("zhipu") == "https://open.bigmodel.cn/api/paas/v4"
    assert default_base_url(None) == default_base_url("generic") == "https://api.openai.com/v1"
    assert set(BATCH_PROVIDERS) == {"openai", "zhipu", "dashscope", "generic", "vllm"}


def test_batch_settings_per_profile():
    assert (ZHIPU.batch.endpoint, DASHSCOPE.batch.endpoint, OPENAI.batch.endpoint) == \
        ("/v4/chat/completions", "/v1/chat/completions", "/v1/chat/completions")
    assert ZHIPU.batch.max_bytes < 100 * 2**20 and ZHIPU.batch.max_bytes < 100_000_000
    assert DASHSCOPE.batch.max_bytes < 500_000_000 and DASHSCOPE.batch.max_line_bytes == 6_000_000
    assert ZHIPU.batch.file_status == "absent" and DASHSCOPE.batch.file_status == "optional"
    assert OPENAI.batch.file_status == GENERIC.batch.file_status == "poll"
    assert DASHSCOPE.batch.check_window(None, "dashscope") == "24h"
    assert DASHSCOPE.batch.check_window("336h", "dashscope") == "336h"
    assert ZHIPU.batch.check_window(None, "zhipu") is None  # not a documented field: not sent
    assert GENERIC.batch.check_window("7d", "generic") == "7d"
    for provider, window in ((DASHSCOPE, "337h"), (DASHSCOPE, "23h"), (DASHSCOPE, "2d"), (OPENAI, "48h")):
        with pytest.raises(InputError, match="--completion-window"):
            provider.batch.check_window(window, provider.name)


def test_content_filter_codes():
    for code in ("1301", "1300", "data_inspection_failed", "DataInspectionFailed",
                 "InternalError.Algo.DataInspectionFailed"):
        assert is_content_filter(code), code
    for code in ("1302", "1113", "invalid_api_key", "", None, "server_error"):
        assert not is_content_filter(code), code
    assert filtered_finish("sensitive") and not filtered_finish("stop") and not filtered_finish(None)


def test_error_lines_in_each_providers_format():
    meta = {"stage": "entry", "index": 1, "persona": "Z"}
    zhipu = {"custom_id": "entry:1:Z", "response": {"status_code": 400, "body": {
        "error": {"code": "1301", "message": "系统检测到输入或生成内容可能包含不安全或敏感内容"}}}, "error": None}
    dashscope = {"custom_id": "entry:1:Z", "response": None,
                 "error": {"code": "data_inspection_failed", "message": "Input data may contain inappropriate content."}}
    throttled = {"custom_id": "entry:1:Z", "response": None,
                 "error": {"code": "Throttling.RateQuota", "message": "Requests rate limit exceeded"}}
    sensitive = {"custom_id": "entry:1:Z", "response": {"status_code": 200, "body": {
        "choices": [{"message": {"role": "assistant", "content": ""}, "finish_reason": "sensitive"}]}}}
    got = [line_record(x, meta, None) for x in (zhipu, dashscope, throttled, sensitive)]
    assert [r.status for r in got] == ["error"] * 4
    assert got[0].error == "content_filter: HTTP 400: 1301: 系统检测到输入或生成内容可能包含不安全或敏感内容"
    assert got[1].error == "content_filter: data_inspection_failed: Input data may contain inappropriate content."
    assert got[2].error == "Throttling.RateQuota: Requests rate limit exceeded"
    assert got[3].error == "content_filter: finish_reason sensitive"


def test_request_counts_as_zhipu_documents_them():
    s = Shard("requests-0001.jsonl", "requests-0001.meta.jsonl", 5, 100, None, "/v4/chat/completions")
    s.update({"status": "in_progress", "request_counts": 5, "total": 5, "completed": 3, "failed": 1})
    assert s.request_counts == {"total": 5, "completed": 3, "failed": 1}
    s.update({"status": "validating", "request_counts": {"total": None, "completed": None, "failed": None}})
    assert s.request_counts == {"total": 0, "completed": 0, "failed": 0}
    s.update({"status": "failed", "errors": {"object": "list", "data": [
        {"code": "1214", "line": 3, "message": "field invalid", "param": "body"}]}, "output_file_id": ""})
    assert s.error_lines() == ["  error 1214 (line 3): field invalid"] and s.output_file_id is None


# ----------------------------------------------------------------- full runs

def test_zhipu_profile_full_run_with_reasks(tmp_path, capsys, server, env, inputs):
    srv = server(profile="zhipu", nonjson_every=7, shuffle=True, polls_per_step=2)
    assert srv.url.endswith("/api/paas/v4")
    want = direct_matrices(tmp_path, capsys, inputs, srv.url)
    run = tmp_path / "run"
    rc, err = prepare(capsys, inputs, run, srv.url, "--provider", "zhipu", "--max-requests", "70")
    assert rc == 0, err
    st = state(run)
    assert st["provider"] == "zhipu" and [s["requests"] for s in st["shards"]] == [70, 50]
    assert {s["endpoint"] for s in st["shards"]} == {"/v4/chat/completions"}
    assert {x["url"] for x in request_lines(run, "requests-0001.jsonl")} == {"/v4/chat/completions"}

    first_round = srv.counts
    invalid, _ = two_rounds(capsys, run, srv, "zhipu")
    c = srv.counts
    assert c.get("file_gets", 0) == 0 and c.get("create_before_visible", 0) == 0  # the upload reply trusted
    assert c["batches_created"] == 3 and sorted(c["batches_per_file"].values()) == [1, 1, 1]
    assert first_round.get("uploads", 0) == 0 and c["uploads"] == 3
    batches = srv.app[BATCH_STATE].batches.values()
    assert all(b.obj["completion_window"] == "24h" and b.obj["created_at"] > 10**12 for b in batches)  # ms
    check_reasks(run, invalid, "requests-0003.jsonl", "requests-0001.jsonl", "requests-0002.jsonl")

    rc, out = batch(capsys, "status", "--run", str(run))
    assert rc == 0 and all(" completed " in x and "finished" in x for x in out.strip().splitlines())
    got = collect(capsys, inputs[0], run, tmp_path / "features")
    for f in want:
        assert not np.isnan(got[f]).any()
        np.testing.assert_array_equal(got[f], want[f])
    rc, err = prepare(capsys, inputs, run, srv.url)  # provider from the state; nothing left
    assert rc == 0 and "nothing to prepare" in err
    assert_no_key(run)


def test_dashscope_profile_full_run_with_reasks(tmp_path, capsys, server, env, inputs):
    srv = server(profile="dashscope", file_route=False, nonjson_every=6, shuffle=True)
    assert srv.url.endswith("/compatible-mode/v1")
    want = direct_matrices(tmp_path, capsys, inputs, srv.url)
    run = tmp_path / "run"
    rc, err = prepare(capsys, inputs, run, srv.url, "--provider", "dashscope")
    assert rc == 0, err
    assert state(run)["provider"] == "dashscope"
    assert {x["url"] for x in request_lines(run, "requests-0001.jsonl")} == {"/v1/chat/completions"}

    rc, err = batch(capsys, "submit", "--run", str(run), "--completion-window", "400h")
    assert rc == 2 and "not one dashscope takes" in err and len(err.strip().splitlines()) == 1
    rc, err = batch(capsys, "submit", "--run", str(run), "--keep-input-file")
    assert rc == 2 and "only zhipu" in err and srv.counts.get("uploads", 0) == 0
    invalid, _ = two_rounds(capsys, run, srv, "dashscope", "--completion-window", "72h")
    c = srv.counts
    assert c["batches_created"] == 2 and c.get("create_before_visible", 0) == 0  # 404: upload trusted
    assert {b.obj["completion_window"] for b in srv.app[BATCH_STATE].batches.values()} == {"72h"}
    check_reasks(run, invalid, "requests-0002.jsonl", "requests-0001.jsonl")

    got = collect(capsys, inputs[0], run, tmp_path / "features")
    for f in want:
        np.testing.assert_array_equal(got[f], want[f])
    assert_no_key(run)


@pytest.mark.parametrize("profile, code", [("zhipu", "HTTP 400: 1301"), ("dashscope", "data_inspection_failed")])
def test_content_filtered_lines_are_recorded_as_content_filter(tmp_path, capsys, server, env, inputs, profile, code):
    srv = server(profile=profile, filter_every=10)
    run = tmp_path / "run"
    assert prepare(capsys, inputs, run, srv.url, "--provider", profile, "--stages", "entry")[0] == 0
    assert batch(capsys, "submit", "--run", str(run), "--file-poll", "0.05", *FAST)[0] == 0
    rc, err = batch(capsys, "fetch", "--run", str(run), *WAIT)
    assert rc == 1
    failed = [r for r in records(run) if r["status"] == "error"]
    assert len(failed) == N_PITCHES * 8 // 10
    assert all(r["error"].startswith(f"content_filter: {code}") for r in failed), failed[0]["error"]
    assert f"imported {N_PITCHES * 8 - len(failed)} ok, 0 invalid, {len(failed)} error" in err


def test_zhipu_refuses_a_file_over_its_size_limit(tmp_path, capsys, server, env, inputs):
    srv = server(profile="zhipu", max_file_bytes=30_000)
    run = tmp_path / "run"
    assert prepare(capsys, inputs, run, srv.url, "--provider", "zhipu", "--stages", "entry")[0] == 0
    rc, err = batch(capsys, "submit", "--run", str(run), *FAST)
    assert rc == 2 and "HTTP 435" in err and "smaller --max-bytes" in err and len(err.strip().splitlines()) == 1
    assert srv.counts["too_large"] == 1 and srv.counts.get("uploads", 0) == 0
    rc, err = prepare(capsys, inputs, run, srv.url, "--stages", "entry", "--max-bytes", "25000")
    assert rc == 0 and "1 earlier unsubmitted file(s) replaced" in err
    assert all(s["bytes"] <= 25_000 for s in state(run)["shards"])
    assert batch(capsys, "submit", "--run", str(run), "--keep-input-file", *FAST)[0] == 0
    assert srv.counts["auto_delete_input_file"] == len(state(run)["shards"])  # sent as false
    assert batch(capsys, "fetch", "--run", str(run), *WAIT)[0] == 0
    assert len({r["id"] for r in records(run) if r["status"] == "ok"}) == N_PITCHES * 8


def test_dashscope_line_limit_and_a_failed_validation_in_status(tmp_path, capsys, server, env, inputs):
    srv = server(profile="dashscope", max_line_bytes=1100)
    run = tmp_path / "run"
    rc, err = prepare(capsys, inputs, run, srv.url, "--provider", "dashscope", "--stages", "read",
                      "--max-line-bytes", "1024")
    assert rc == 2 and "over --max-line-bytes 1024" in err and len(err.strip().splitlines()) == 1
    assert not (run / "batch" / "requests-0001.jsonl").exists()
    # the server's limit is lower than what prepare was told: the batch fails validation, status shows why
    assert prepare(capsys, inputs, run, srv.url, "--provider", "dashscope", "--stages", "read")[0] == 0
    assert batch(capsys, "submit", "--run", str(run), "--file-poll", "0.05", *FAST)[0] == 0
    rc, err = batch(capsys, "fetch", "--run", str(run), *WAIT)
    assert rc == 1 and "failed" in err
    rc, out = batch(capsys, "status", "--run", str(run))
    lines = out.strip().splitlines()
    assert " failed " in lines[0] and lines[1].startswith("  error line_too_large (line 1): line 1 is")
    assert len(lines) == 1 + min(20, N_PITCHES * 8)


def test_max_reasks_is_counted_across_imports(tmp_path, capsys, server, env, inputs):
    srv = server(nonjson_every=1, nonjson_reasks=True)  # every reply is prose, re-asks too
    run = tmp_path / "run"
    n = N_PITCHES * 8
    assert prepare(capsys, inputs, run, srv.url, "--stages", "entry", "--max-reasks", "2")[0] == 0
    for reasks in range(3):
        assert batch(capsys, "submit", "--run", str(run), "--file-poll", "0.05", *FAST)[0] == 0
        assert batch(capsys, "fetch", "--run", str(run), *WAIT)[0] == 1
        assert sorted({r["reasks"] for r in records(run)}) == list(range(reasks + 1))
        rc, err = prepare(capsys, inputs, run, srv.url, "--stages", "entry", "--max-reasks", "2")
        assert rc == 0
        if reasks < 2:
            assert f"prepared {n} request(s)" in err and f"{n} of them re-ask(s)" in err
    assert "prepared 0 request(s)" in err and f"{n} request(s) left out: still unusable after --max-reasks 2" in err
    last = request_lines(run, "requests-0003.jsonl")[0]["body"]["messages"]
    assert [m["role"] for m in last] == ["system", "user", "assistant", "user", "assistant", "user"]
    assert len(records(run)) == 3 * n and {r["status"] for r in records(run)} == {"invalid"}
    # a larger budget asks again, the conversation continuing
    rc, err = prepare(capsys, inputs, run, srv.url, "--stages", "entry", "--max-reasks", "3")
    assert rc == 0 and f"{n} of them re-ask(s)" in err


async def test_batch_lists_are_read_page_by_page():
    cfg = BatchConfig(sim=SimConfig(api_key=KEY))
    srv = Server(cfg)
    try:
        bs = srv.app[BATCH_STATE]
        fid = bs.store(b'{"custom_id":"a","method":"POST","url":"/v1/chat/completions","body":{}}\n', "x", "batch")
        wanted = new_batch(bs, fid, "/v1/chat/completions", "24h", None).obj["id"]
        for _ in range(7):
            other = bs.store(b"{}\n", "y", "batch")
            new_batch(bs, other, "/v1/chat/completions", "24h", None)
        async with BatchClient(srv.url, KEY) as client:
            found = await client.find_batch(fid, limit=3)
            assert found is not None and found["id"] == wanted
            assert bs.counts["list_calls"] == 3  # 8 batches, 3 a page, the oldest last
            assert await client.find_batch("file-none", limit=3) is None
            assert await client.find_batch(fid, limit=3, max_pages=2) is None
    finally:
        await asyncio.get_running_loop().run_in_executor(None, srv.stop)
