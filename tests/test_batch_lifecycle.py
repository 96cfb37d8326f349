"""bin/batch end to end against the local Batch API server on loopback.

The server (:mod:`liveroom.sim.batch_server`) runs in a thread of the test
process and really processes batches with the simulator's answers; the
commands run in-process through the same entry points as ``bin/*`` (one runs
as a subprocess, to be killed). Real files, real HTTP, no mocks. The
fixtures ``server``, ``env`` and ``inputs`` are conftest.py's, the helpers kit.py's.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from kit import BATCH_KEY as KEY
from kit import BATCH_PITCHES as N_PITCHES
from kit import BATCH_REQUESTS as N_REQUESTS
from kit import BatchServer as Server
from kit import assert_no_key, prepared_ids, records, score
from kit import batch_inline as batch
from kit import batch_state as state
from kit import collect_inline as collect
from kit import get_with_key as get
from kit import prepare_inline as prepare
from liveroom.prompts.stages import reask_messages
from liveroom.scoring.batch import flows
from liveroom.scoring.batch.state import TERMINAL, Shard, ended, load_state, save_state
from liveroom.sim.batch_jobs import new_batch
from liveroom.sim.batch_server import BATCH_STATE

ROOT = Path(__file__).resolve().parent.parent
FAST = ("--backoff", "0.01")


@pytest.fixture
def direct(tmp_path, capsys, env, inputs):
    """The matrices direct mode (bin/score) gives against the simulator."""
    def run(srv: Server) -> tuple[dict[str, np.ndarray], dict]:
        d = tmp_path / "direct"
        p = score(*inputs, d, srv.url, "--concurrency", "8", key=KEY)
        assert p.returncode == 0, p.stderr
        return collect(capsys, inputs[0], d, tmp_path / "direct-features"), json.loads(
            (d / "manifest.json").read_text())
    return run


# ----------------------------------------------------------------- tests

def test_full_lifecycle_equals_direct_mode(tmp_path, capsys, server, env, inputs, direct):
    srv = server(polls_per_step=2, file_delay_s=0.3, shuffle=True, api_fail_first=2)
    want, want_manifest = direct(srv)
    run = tmp_path / "run"
    rc, err = prepare(capsys, inputs, run, srv.url, "--max-requests", "50")
    assert rc == 0, err
    shards = state(run)["shards"]
    assert [s["requests"] for s in shards] == [50, 50, 20]
    line = json.loads((run / "batch" / shards[0]["name"]).read_text().splitlines()[0])
    assert set(line) == {"custom_id", "method", "url", "body"}
    assert line["method"] == "POST" and line["url"] == "/v1/chat/completions"
    assert line["body"]["model"] == "gpt-4o-mini" and line["body"]["response_format"] == {"type": "json_object"}
    # the manifest is the one bin/score writes, so bin/score can finish the run
    assert json.loads((run / "manifest.json").read_text()) == want_manifest

    rc, err = batch(capsys, "submit", "--run", str(run), "--file-poll", "0.05", *FAST)
    assert rc == 0, err
    c = srv.counts
    assert c["uploads"] == 3 and c["batches_created"] == 3 and c["injected_503"] == 2
    assert c["file_not_found"] > 0 and c.get("create_before_visible", 0) == 0  # waited for the upload

    rc, err = batch(capsys, "fetch", "--run", str(run), *FAST)
    assert rc == 3 and "still running" in err  # without --wait: one poll
    rc, err = batch(capsys, "fetch", "--run", str(run), "--wait", "--interval", "0.01", *FAST)
    assert rc == 0, err
    for status in ("in_progress", "finalizing", "completed"):
        assert status in err
    assert f"imported {N_REQUESTS} ok, 0 invalid, 0 error" in err
    rc, out = batch(capsys, "status", "--run", str(run))
    lines = out.strip().splitlines()
    assert len(lines) == 3 and all("completed" in x and "finished" in x for x in lines)
    assert "50/0/50" in lines[0] and "20/0/20" in lines[2]

    got = collect(capsys, inputs[0], run, tmp_path / "features")
    for f in want:
        assert not np.isnan(got[f]).any()
        np.testing.assert_array_equal(got[f], want[f])
    recs = records(run)
    assert len(recs) == N_REQUESTS and len({r["id"] for r in recs}) == N_REQUESTS
    direct_keys = list(json.loads((tmp_path / "direct" / "buy.jsonl").read_text().splitlines()[0]))
    for r in recs:
        assert list(r)[:2] == ["id", "status"] and r["status"] == "ok"
        assert (r["attempts"], r["reasks"], r["latency_ms"]) == (1, 0, None)
        if r["stage"] == "buy":  # direct mode's record, and the provider file it came from
            assert [k for k in r if k != "source"] == direct_keys and list(r)[2] == "source"
    rc, err = prepare(capsys, inputs, run, srv.url)
    assert rc == 0 and "nothing to prepare" in err and not prepared_ids(run)
    rc, err = batch(capsys, "fetch", "--run", str(run))
    assert rc == 0 and "no batch to fetch" in err
    assert_no_key(run)


def test_submit_twice_makes_one_batch_per_file(tmp_path, capsys, server, env, inputs):
    srv = server()
    run = tmp_path / "run"
    assert prepare(capsys, inputs, run, srv.url, "--stages", "entry,read", "--max-bytes", "40000")[0] == 0
    shards = state(run)["shards"]
    assert len(shards) >= 2 and all(s["bytes"] <= 40000 for s in shards)
    assert sum(s["requests"] for s in shards) == N_PITCHES * 2 * 8
    rc, err = batch(capsys, "submit", "--run", str(run), "--file-poll", "0.05")
    assert rc == 0, err
    first = state(run)["shards"]
    rc, err = batch(capsys, "submit", "--run", str(run), "--file-poll", "0.05")
    assert rc == 0 and "nothing to submit" in err
    assert state(run)["shards"] == first
    c = srv.counts
    assert c["uploads"] == len(shards) and c["batches_created"] == len(shards)
    assert sorted(c["batches_per_file"].values()) == [1] * len(shards)
    assert {s["file_id"] for s in first} == set(c["batches_per_file"])
    rc, out = batch(capsys, "status", "--run", str(run))
    assert rc == 0
    for s, line in zip(first, out.strip().splitlines()):
        assert line.startswith(s["name"]) and s["batch_id"] in line and "/" in line
    assert_no_key(run)


def test_crash_between_upload_and_create_resumes_without_a_new_upload(tmp_path, capsys, server, env, inputs):
    srv = server(create_delay_s=30)
    run = tmp_path / "run"
    assert prepare(capsys, inputs, run, srv.url, "--stages", "entry")[0] == 0
    proc = subprocess.Popen([sys.executable, str(ROOT / "bin" / "batch"), "submit", "--run", str(run),
                             "--file-poll", "0.05"], env={**os.environ}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    deadline = time.monotonic() + 20
    while srv.counts.get("create_calls", 0) < 1:
        assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read() if proc.poll() else "slow"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)  # uploaded, batch creation in flight
    proc.wait(10)
    proc.stderr.close()
    (shard,) = state(run)["shards"]
    assert shard["file_id"] and not shard["batch_id"]
    assert srv.counts["uploads"] == 1 and srv.counts.get("batches_created", 0) == 0

    srv.config.create_delay_s = 0
    rc, err = batch(capsys, "submit", "--run", str(run), "--file-poll", "0.05")
    assert rc == 0, err
    assert "resuming with uploaded file" in err
    c = srv.counts
    assert c["uploads"] == 1 and c["batches_per_file"] == {shard["file_id"]: 1}
    rc, err = batch(capsys, "fetch", "--run", str(run), "--wait", "--interval", "0.01")
    assert rc == 0, err
    assert len({r["id"] for r in records(run) if r["status"] == "ok"}) == N_PITCHES * 8
    assert_no_key(run)


def test_a_lost_create_is_found_beyond_the_first_page_of_batches(tmp_path, capsys, server, env, inputs):
    srv = server()
    run = tmp_path / "run"
    assert prepare(capsys, inputs, run, srv.url, "--stages", "entry")[0] == 0
    st = load_state(run)
    (shard,) = st.shards
    # the upload went through and the batch was made, but the answer to the create was lost ...
    bs = srv.app[BATCH_STATE]
    shard.file_id = bs.store((run / "batch" / shard.name).read_bytes(), shard.name, "batch")
    made = new_batch(bs, shard.file_id, "/v1/chat/completions", "24h", None).obj["id"]
    for _ in range(150):  # ... and the account made many batches since
        new_batch(bs, bs.store(b"{}\n", "other.jsonl", "batch"), "/v1/chat/completions", "24h", None)
    save_state(run, st)
    rc, err = batch(capsys, "submit", "--run", str(run), "--file-poll", "0.05")
    assert rc == 0 and "resuming with uploaded file" in err, err
    assert state(run)["shards"][0]["batch_id"] == made
    assert srv.counts["batches_per_file"][shard.file_id] == 1 and srv.counts["list_calls"] == 2
    assert state(run)["provider"] == "generic"


def test_import_by_hand_with_duplicates_unknown_ids_and_failures(tmp_path, capsys, server, env, inputs):
    srv = server(error_every=9, nonjson_every=7, shuffle=True)
    run = tmp_path / "run"
    assert prepare(capsys, inputs, run, srv.url)[0] == 0
    assert batch(capsys, "submit", "--run", str(run), "--file-poll", "0.05")[0] == 0
    (shard,) = state(run)["shards"]
    for _ in range(10):  # the user watches the batch elsewhere and downloads the files by hand
        b = json.loads(get(srv.url, f"/batches/{shard['batch_id']}"))
        if b["status"] == "completed":
            break
    assert b["status"] == "completed"
    output = get(srv.url, f"/files/{b['output_file_id']}/content").decode().splitlines()
    errors = get(srv.url, f"/files/{b['error_file_id']}/content").decode().splitlines()
    n_err = len(errors)
    bad = [json.loads(x)["custom_id"] for x in output if "want" not in x and "impact" not in x]
    assert n_err == N_REQUESTS // 9 and bad
    out_file = tmp_path / "out.jsonl"
    out_file.write_text("\n".join(output[::-1] + [output[0], output[3]]) + "\n")  # reversed, two duplicated
    err_file = tmp_path / "err.jsonl"
    unknown = dict(json.loads(errors[0]), custom_id="entry:999:Z")
    err_file.write_text("\n".join([*errors, json.dumps(unknown), "not json at all", errors[1]]) + "\n")

    rc, err = batch(capsys, "import", "--run", str(run), str(out_file), str(err_file))
    assert rc == 1  # some requests failed
    assert (f"imported {N_REQUESTS - n_err - len(bad)} ok, {len(bad)} invalid, {n_err} error; "
            f"0 already ok, 3 duplicate line(s), 1 unknown id(s), 1 unreadable line(s)") in err
    assert "entry:999:Z" in err
    recs = records(run)
    assert len(recs) == N_REQUESTS and len({r["id"] for r in recs}) == N_REQUESTS
    by_status = {s: [r for r in recs if r["status"] == s] for s in ("ok", "invalid", "error")}
    assert {r["id"] for r in by_status["invalid"]} == set(bad)
    assert all("JSON" in r["error"] and r["reply"] for r in by_status["invalid"])
    assert all(r["error"].startswith("HTTP 500") and r["reply"] is None for r in by_status["error"])
    buy = next(r for r in by_status["ok"] if r["stage"] == "buy")
    assert len(buy["scores"]["scores"]) == buy["n_items"] and buy["usage"]["total_tokens"] > 0
    assert state(run)["shards"][0]["finished"]  # every request accounted for

    # the same files again: nothing imported twice
    rc, err = batch(capsys, "import", "--run", str(run), str(out_file), str(err_file))
    assert "already imported, skipped" in err and len(records(run)) == N_REQUESTS
    # re-preparing yields exactly the failures: the unusable replies as direct mode's re-asks
    rc, err = prepare(capsys, inputs, run, srv.url)
    assert rc == 0 and f"{len(bad)} of them re-ask(s)" in err
    assert prepared_ids(run) == {r["id"] for r in by_status["invalid"] + by_status["error"]}
    again = {json.loads(x)["custom_id"]: json.loads(x)["body"]["messages"]
             for x in (run / "batch" / "requests-0002.jsonl").read_text().splitlines()}
    for r in by_status["invalid"]:
        assert again[r["id"]][-2:] == reask_messages([], r["reply"], r["error"])
    assert all(len(again[r["id"]]) == 2 for r in by_status["error"])  # asked as before
    # and what comes back for them fills the run
    assert batch(capsys, "submit", "--run", str(run), "--file-poll", "0.05")[0] == 0
    srv.config.error_every = srv.config.nonjson_every = 0
    rc, err = batch(capsys, "fetch", "--run", str(run), "--wait", "--interval", "0.01")
    assert rc == 0, err
    got = collect(capsys, inputs[0], run, tmp_path / "features")
    assert not any(np.isnan(m).any() for m in got.values())
    assert_no_key(run)


def test_expired_batch_then_prepare_and_score_finish(tmp_path, capsys, server, env, inputs, direct):
    srv = server(expire_after=30)
    want, _ = direct(srv)
    run = tmp_path / "run"
    assert prepare(capsys, inputs, run, srv.url)[0] == 0
    assert batch(capsys, "submit", "--run", str(run), "--file-poll", "0.05")[0] == 0
    rc, err = batch(capsys, "fetch", "--run", str(run), "--wait", "--interval", "0.01")
    assert rc == 1 and "expired" in err
    (shard,) = state(run)["shards"]
    assert shard["status"] == "expired" and shard["finished"]
    ok = {r["id"] for r in records(run) if r["status"] == "ok"}
    assert len(ok) == 30
    expired = [r for r in records(run) if r["status"] == "error"]
    assert len(expired) == N_REQUESTS - 30 and all("batch_expired" in r["error"] for r in expired)

    assert prepare(capsys, inputs, run, srv.url)[0] == 0
    all_ids = {r["id"] for r in records(tmp_path / "direct")}
    assert prepared_ids(run) == all_ids - ok
    before = srv.chat_requests
    p = score(*inputs, run, srv.url, key=KEY)
    assert p.returncode == 0, p.stderr
    assert srv.chat_requests - before == N_REQUESTS - 30  # only the stragglers, in direct mode
    got = collect(capsys, inputs[0], run, tmp_path / "features")
    for f in want:
        np.testing.assert_array_equal(got[f], want[f])
    assert_no_key(run)


def test_cancelled_batch_keeps_its_partial_output(tmp_path, capsys, server, env, inputs):
    srv = server()
    run = tmp_path / "run"
    assert prepare(capsys, inputs, run, srv.url, "--stages", "read")[0] == 0
    assert batch(capsys, "submit", "--run", str(run), "--file-poll", "0.05")[0] == 0
    batch(capsys, "status", "--run", str(run))  # validating -> in_progress, half done
    rc, err = batch(capsys, "cancel", "--run", str(run))
    assert rc == 0 and "cancelling" in err
    rc, err = batch(capsys, "fetch", "--run", str(run), "--wait", "--interval", "0.01")
    assert rc == 1 and "cancelled" in err
    n = N_PITCHES * 8
    assert len(records(run)) == n // 2
    assert prepare(capsys, inputs, run, srv.url, "--stages", "read")[0] == 0
    assert len(prepared_ids(run)) == n - n // 2


def test_prepare_leaves_submitted_files_alone_and_replaces_the_rest(tmp_path, capsys, server, env, inputs):
    srv = server(polls_per_step=100)  # batches stay in validating
    run = tmp_path / "run"
    assert prepare(capsys, inputs, run, srv.url, "--stages", "entry")[0] == 0
    assert batch(capsys, "submit", "--run", str(run), "--file-poll", "0.05")[0] == 0
    submitted = state(run)["shards"][0]
    # another stage: the entry requests are on their way and are not prepared again
    rc, err = prepare(capsys, inputs, run, srv.url, "--stages", "entry,read")
    assert rc == 0 and f"{N_PITCHES * 8} request(s) left out" in err
    assert {i.split(":")[0] for i in prepared_ids(run)} == {"read"}
    names = [s["name"] for s in state(run)["shards"]]
    assert names == ["requests-0001.jsonl", "requests-0002.jsonl"]
    rc, err = prepare(capsys, inputs, run, srv.url, "--stages", "entry,read", "--max-requests", "25")
    assert rc == 0 and "1 earlier unsubmitted file(s) replaced" in err
    st = state(run)["shards"]
    assert st[0] == submitted and [s["requests"] for s in st[1:]] == [25, 15]
    assert sorted(p.name for p in (run / "batch").glob("requests-*.jsonl") if ".meta" not in p.name) == \
        ["requests-0001.jsonl", "requests-0002.jsonl", "requests-0003.jsonl"]
    assert srv.counts["uploads"] == 1


def test_bad_input_writes_nothing(tmp_path, capsys, server, env, inputs):
    srv = server()
    run = tmp_path / "run"
    rc, err = prepare(capsys, inputs, run, srv.url, "--stages", "entry,nope")
    assert rc == 2 and "nope" in err and len(err.strip().splitlines()) == 1
    assert not run.exists()
    assert prepare(capsys, inputs, run, srv.url, "--stages", "entry")[0] == 0
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    rc, err = prepare(capsys, inputs, run, srv.url, "--stages", "entry", "--model", "other-model")
    assert rc == 2 and "model" in err and len(err.strip().splitlines()) == 1
    rc, err = batch(capsys, "submit", "--run", str(run), "--base-url", "http://127.0.0.1:1/v1")
    assert rc == 2 and "was prepared for" in err
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before
    rc, err = batch(capsys, "import", "--run", str(tmp_path / "nowhere"), str(inputs[0]))
    assert rc == 2 and "not a run directory" in err


def test_wrong_key_is_one_line_fatal_and_never_written(tmp_path, capsys, server, env, inputs, monkeypatch):
    srv = server()
    run = tmp_path / "run"
    assert prepare(capsys, inputs, run, srv.url, "--stages", "entry")[0] == 0
    monkeypatch.setenv("OPENAI_API_KEY", "sk-batchtest-wrong-key-000000")
    rc, err = batch(capsys, "submit", "--run", str(run))
    assert rc == 2 and "HTTP 401" in err and len(err.strip().splitlines()) == 1
    assert "wrong-key" not in err
    assert srv.counts.get("uploads", 0) == 0
    assert_no_key(run)


# state.json as bin/batch wrote it before the package split: it must load, and be written back the same
TODAY_STATE = """{
  "format": 1,
  "shards": [
    {
      "name": "requests-0001.jsonl",
      "meta": "requests-0001.meta.jsonl",
      "requests": 40,
      "bytes": 51647,
      "sha256": "54a5424906dae1023b95eddd99fd156513c6b942726353368bbc382a24afb06d",
      "endpoint": "/v1/chat/completions",
      "prepared_at": 1712345678.123,
      "status": "completed",
      "file_id": "file-aaa",
      "batch_id": "batch_bbb",
      "finished": true,
      "note": null,
      "request_counts": {
        "total": 40,
        "completed": 36,
        "failed": 4
      },
      "submitted_at": 1712345680.5,
      "output_file_id": "file-out",
      "error_file_id": "file-err"
    },
    {
      "name": "requests-0002.jsonl",
      "meta": "requests-0002.meta.jsonl",
      "requests": 9,
      "bytes": 11648,
      "sha256": "d9bc241811ff4f511fbfc1f89a414dddbca105128d503351aa9701fae63a7268",
      "endpoint": "/v4/chat/completions",
      "prepared_at": 1712345690.0,
      "status": "expired",
      "file_id": "file-ccc",
      "batch_id": "batch_ddd",
      "finished": true,
      "note": "ended early: what is missing is prepared again by the next prepare",
      "request_counts": {
        "total": 9,
        "completed": 2,
        "failed": 7
      },
      "submitted_at": 1712345691.25,
      "error_file_id": "file-err2",
      "later_key": [1, 2]
    },
    {
      "name": "requests-0003.jsonl",
      "meta": "requests-0003.meta.jsonl",
      "requests": 5,
      "bytes": 6000,
      "sha256": "00bc241811ff4f511fbfc1f89a414dddbca105128d503351aa9701fae63a7200",
      "endpoint": "/v1/chat/completions",
      "prepared_at": 1712345700.0,
      "status": "prepared",
      "file_id": null,
      "batch_id": null,
      "finished": false
    }
  ],
  "imported": {
    "0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f": "requests-0001.output.jsonl"
  }
}"""


def test_state_json_of_before_the_split_loads_and_is_written_back_the_same(tmp_path, capsys):
    run = tmp_path / "run"
    (run / "batch").mkdir(parents=True)
    (run / "batch" / "state.json").write_text(TODAY_STATE)
    st = load_state(run)
    done, expired, prepared = st.shards
    assert all(isinstance(s, Shard) for s in st.shards)
    assert (done.batch_id, done.output_file_id, done.request_counts) == \
        ("batch_bbb", "file-out", {"total": 40, "completed": 36, "failed": 4})
    assert expired.endpoint == "/v4/chat/completions" and expired.output_file_id is None and expired.finished
    assert (prepared.status, prepared.submitted, prepared.request_counts, prepared.note) == \
        ("prepared", False, None, None)
    assert not any(s.live for s in st.shards)
    assert st.imported == {"0f" * 32: "requests-0001.output.jsonl"}

    save_state(run, st)
    text = (run / "batch" / "state.json").read_text()
    assert json.loads(text) == json.loads(TODAY_STATE)
    assert [list(s) for s in json.loads(text)["shards"]] == [list(s) for s in json.loads(TODAY_STATE)["shards"]]
    assert text == json.dumps(json.loads(TODAY_STATE), indent=2)

    (run / "manifest.json").write_text("{}")
    rc, out = batch(capsys, "status", "--run", str(run), "--base-url", "https://api.openai.com/v1")
    assert rc == 0 and out.splitlines() == [
        "requests-0001.jsonl  batch_bbb  completed  36/4/40 completed/failed/total finished",
        "requests-0002.jsonl  batch_ddd  expired  2/7/9 completed/failed/total finished (ended early: what is "
        "missing is prepared again by the next prepare)",
        "requests-0003.jsonl  -  prepared  0/0/5 completed/failed/total"]
    # an old state without the imported table, and one that is not a state at all
    (run / "batch" / "state.json").write_text('{"format": 1, "shards": []}')
    assert load_state(run).imported == {}
    (run / "batch" / "state.json").write_text('{"format": 1, "shards": [{"name": "x.jsonl"}]}')
    rc, err = batch(capsys, "status", "--run", str(run))
    assert rc == 2 and "unreadable batch state" in err and len(err.strip().splitlines()) == 1


def test_terminal_statuses():
    assert TERMINAL == ("completed", "failed", "expired", "cancelled")
    assert all(ended(s) for s in TERMINAL)
    assert not any(ended(s) for s in ("validating", "in_progress", "finalizing", "cancelling", None))


def test_flows_return_what_they_did_and_print_nothing(tmp_path, capsys, server, env, inputs):
    srv = server()
    run = tmp_path / "run"
    assert prepare(capsys, inputs, run, srv.url, "--stages", "entry")[0] == 0
    opened = flows.open_run(run, None)
    api = flows.Api(opened.base_url, KEY, backoff=0.01)
    events: list[flows.Event] = []
    got = flows.submit(opened, api, flows.UploadWait(poll=0.05), events.append)
    assert (got.todo, got.refused) == (1, 0)
    assert [e.kind for e in events] == ["uploaded", "created"]
    assert events[0].shard.file_id and not events[0].shard.batch_id  # the shard as it was then
    assert events[1].shard.batch_id == state(run)["shards"][0]["batch_id"]
    assert flows.submit(opened, api).todo == 0

    events.clear()
    fetched = flows.fetch(opened, api, wait=True, interval=0.01, notify=events.append)
    assert (fetched.watched, fetched.left, fetched.ended_early) == (1, 0, 0)
    assert fetched.report.ok == N_PITCHES * 8 and not fetched.report.failed
    assert events[-1].kind == "imported" and events[-1].detail == "requests-0001.output.jsonl"
    (shard,) = flows.status(flows.open_run(run, None), api)
    assert shard.finished and shard.status == "completed"
    assert flows.cancel(opened, api) == []
    out = capsys.readouterr()
    assert out.out == "" and out.err == ""


def test_a_remote_endpoint_needs_a_key_and_a_held_run_refuses_every_writing_verb(tmp_path, capsys, env, inputs,
                                                                               monkeypatch):
    from liveroom.locks import run_dir_lock

    run = tmp_path / "run"
    assert prepare(capsys, inputs, run, "https://api.example.com/v1", "--stages", "entry")[0] == 0
    monkeypatch.delenv("OPENAI_API_KEY")
    rc, err = batch(capsys, "submit", "--run", str(run))
    assert rc == 2 and len(err.strip().splitlines()) == 1
    assert "no API key for https://api.example.com/v1: set OPENAI_API_KEY" in err
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    body = {"model": "gpt-4o-mini", "choices": [{"index": 0, "finish_reason": "stop", "message": {
        "role": "assistant", "content": '{"want_to_enter": 3, "reason": "好"}'}}]}
    out, ref = tmp_path / "out.jsonl", tmp_path / "reference.jsonl"
    own = sorted(prepared_ids(run))
    assert "entry:100:Z" in own and "entry:100:city_old" in own
    # a reply each, in either scheme: entry:100:city_old as the run names it, entry:100:Z (row 0, persona 0)
    # as the reference does
    for path, cid in ((out, "entry:100:city_old"), (ref, "sentry_v3_i0_c0")):
        path.write_text(json.dumps({"custom_id": cid, "response": {"status_code": 200, "body": body}}) + "\n")
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file() and p.name != ".lock"}
    with run_dir_lock(run, "bin/score"):
        for argv in (["submit", "--run", str(run)], ["fetch", "--run", str(run)], ["cancel", "--run", str(run)],
                     ["import", "--run", str(run), str(out)],
                     ["import", "--run", str(run), "--id-scheme", "reference", "--pitches", str(inputs[0]),
                      "--goods", str(inputs[1]), str(ref)],
                     ["prepare", "--pitches", str(inputs[0]), "--goods", str(inputs[1]), "--out", str(run),
                      "--stages", "entry", "--base-url", "https://api.example.com/v1"]):
            rc, err = batch(capsys, *argv)
            assert (rc, err.strip()) == (2, f"batch: error: {run} is in use by pid {os.getpid()} (bin/score)"), argv
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file() and p.name != ".lock"} == before  # nothing
    assert batch(capsys, "import", "--run", str(run), str(out))[0] == 0  # and once free, each file goes in
    assert batch(capsys, "import", "--run", str(run), "--id-scheme", "reference", "--pitches", str(inputs[0]),
                 "--goods", str(inputs[1]), str(ref))[0] == 0
    assert sorted(r["id"] for r in records(run)) == ["entry:100:Z", "entry:100:city_old"]
