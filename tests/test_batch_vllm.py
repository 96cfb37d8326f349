"""A GPU fleet through vLLM's batch runner, end to end, with real files and processes.

``bin/batch prepare --provider vllm --shards N`` writes N request files and the
``vllm run-batch`` command of each; here every command runs as printed with
``bin/sim-server run-batch`` in place of ``vllm run-batch`` (the simulator
answering as vLLM's runner writes its output, error lines included); the
outputs come back through ``bin/batch import``, the re-asks through a second
prepare, and ``bin/collect`` gives the same matrices as direct mode.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import kit
from liveroom.scoring.batch.prepare import even_sizes

ROOT = Path(__file__).resolve().parent.parent
BIN = ROOT / "bin"
MODEL = "Qwen/Qwen2.5-7B-Instruct"
EXTRA = {"chat_template_kwargs": {"enable_thinking": False}}
N_REQUESTS = 4 * 3 * 8  # the four sample pitches, three stages, eight personas
FAULTS = ("--p-error", "0.1", "--p-exception", "0.05", "--p-nonjson", "0.1", "--seed", "3")


def command(*argv: str | Path) -> subprocess.CompletedProcess:
    """A bin/ command as a user runs it."""
    env = {k: v for k, v in os.environ.items() if k not in ("OPENAI_BASE_URL", "LIVEROOM_MODEL", "OPENAI_API_KEY")}
    return subprocess.run([sys.executable, *map(str, argv)], capture_output=True, text=True, timeout=120, env=env)


def prepare(pitches: Path, goods: Path, run: Path, *flags: str) -> subprocess.CompletedProcess:
    return command(BIN / "batch", "prepare", "--provider", "vllm", "--pitches", pitches, "--goods", goods,
                   "--run", run, "--model", MODEL, "--extra-body", json.dumps(EXTRA), *flags)


def run_printed(cmd: str, *faults: str) -> subprocess.CompletedProcess:
    """A printed ``vllm run-batch`` command, run by the simulator with the same flags."""
    argv = shlex.split(cmd)
    assert argv[:2] == ["vllm", "run-batch"], cmd
    return command(BIN / "sim-server", "run-batch", *argv[2:], *faults)


def lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()]


def records(run: Path) -> dict[str, list[dict]]:
    """Request id -> its records (:func:`kit.records`), oldest first."""
    out: dict[str, list[dict]] = {}
    for r in kit.records(run):
        out.setdefault(r["id"], []).append(r)
    return out


def collect(pitches: Path, run: Path, out: Path) -> dict[str, np.ndarray]:
    p = kit.collect(pitches, run, out)
    assert p.returncode == 0, p.stderr
    return {f: np.load(out / f"{f}.npy") for f in ("entry", "state", "action", "read")}


def check_shards(run: Path, stdout: str, names: list[str]) -> list[list[dict]]:
    """The request files of ``names``, checked against the commands printed for them; their lines."""
    d = run / "batch"
    assert stdout.splitlines() == [
        shlex.join(["vllm", "run-batch", "-i", str(d / n), "-o", str(d / n.replace(".jsonl", ".output.jsonl")),
                    "--model", MODEL]) for n in names]
    shards = [lines(d / n) for n in names]
    sizes = [len(s) for s in shards]
    assert max(sizes) - min(sizes) <= 1, sizes
    for line in (x for s in shards for x in s):
        assert set(line) == {"custom_id", "method", "url", "body"}
        assert (line["method"], line["url"]) == ("POST", "/v1/chat/completions")
        body = line["body"]
        assert body["model"] == MODEL and body["chat_template_kwargs"] == EXTRA["chat_template_kwargs"]
    ids = [x["custom_id"] for s in shards for x in s]
    assert len(ids) == len(set(ids))  # every request in one file only
    return shards


def test_even_sizes():
    assert even_sizes(10, 3) == [4, 3, 3] and even_sizes(9, 3) == [3, 3, 3]
    assert even_sizes(2, 3) == [1, 1] and even_sizes(0, 3) == []


def test_fleet_loop_with_shards_error_lines_and_reasks(tmp_path, pitches_csv, goods_json, sim):
    run = tmp_path / "run"
    p = prepare(pitches_csv, goods_json, run, "--shards", "3")
    assert p.returncode == 0, p.stderr
    first = [f"requests-000{i}.jsonl" for i in (1, 2, 3)]
    shards = check_shards(run, p.stdout, first)
    assert [len(s) for s in shards] == [N_REQUESTS // 3] * 3
    assert "bin/batch import --run" in p.stderr and "Traceback" not in p.stderr

    # each machine runs its command; vLLM's runner answers every line, in input order, some with an error
    for cmd, shard in zip(p.stdout.splitlines(), shards):
        r = run_printed(cmd, *FAULTS)
        assert r.returncode == 0, r.stderr
        out = lines(Path(shlex.split(cmd)[shlex.split(cmd).index("-o") + 1]))
        assert [x["custom_id"] for x in out] == [x["custom_id"] for x in shard]
        assert all(x["id"].startswith("vllm-") and x["response"]["request_id"].startswith("vllm-batch-")
                   for x in out)
        failed = [x for x in out if x["error"] is not None]
        assert failed and all(x["response"]["body"] is None and x["response"]["status_code"] == 400 for x in failed)
    outputs = [run / "batch" / n.replace(".jsonl", ".output.jsonl") for n in first]
    kinds = [type(x["error"]) for f in outputs for x in lines(f) if x["error"] is not None]
    assert dict in kinds and str in kinds  # an ErrorResponse and an exception's text

    p = command(BIN / "batch", "import", "--run", run, *outputs)
    assert p.returncode == 1, p.stderr  # some requests are not ok
    recs = records(run)
    assert len(recs) == N_REQUESTS and all(len(r) == 1 for r in recs.values())
    failed = {i for i, r in recs.items() if r[0]["status"] != "ok"}
    invalid = {i for i, r in recs.items() if r[0]["status"] == "invalid"}
    assert invalid and failed - invalid
    for i in failed - invalid:
        error = recs[i][0]["error"]
        assert error in ("HTTP 400: simulated engine error", "HTTP 400: simulated exception in the engine"), error
    assert all(r[0]["model"] == MODEL for r in recs.values() if r[0]["status"] == "ok")

    # prepare again: only the re-asks, in new files numbered after the first ones
    p = prepare(pitches_csv, goods_json, run, "--shards", "3")
    assert p.returncode == 0, p.stderr
    second = [f"requests-000{i}.jsonl" for i in (4, 5, 6)]
    shards = check_shards(run, p.stdout, second)
    assert {x["custom_id"] for s in shards for x in s} == failed
    assert f"{len(invalid)} of them re-ask(s)" in p.stderr
    assert not (run / "batch" / first[0]).exists() and outputs[0].exists()
    for cmd in p.stdout.splitlines():
        assert run_printed(cmd).returncode == 0
    p = command(BIN / "batch", "import", "--run", run,
                *(run / "batch" / n.replace(".jsonl", ".output.jsonl") for n in second))
    assert p.returncode == 0, p.stderr
    assert f"imported {len(failed)} ok, 0 invalid, 0 error" in p.stderr
    recs = records(run)
    assert all(r[-1]["status"] == "ok" and sum(x["status"] == "ok" for x in r) == 1 for r in recs.values())
    assert all(r[-1]["reasks"] == 1 for i, r in recs.items() if i in invalid)

    p = prepare(pitches_csv, goods_json, run, "--shards", "3")
    assert p.returncode == 0 and p.stdout == "" and "nothing to prepare" in p.stderr

    # the same matrices as direct mode against the simulator
    got = collect(pitches_csv, run, tmp_path / "features")
    server = sim()
    d = tmp_path / "direct"
    p = command(BIN / "score", "--pitches", pitches_csv, "--goods", goods_json, "--out", d, "--base-url",
                server.url, "--model", MODEL, "--extra-body", json.dumps(EXTRA))
    assert p.returncode == 0, p.stderr
    want = collect(pitches_csv, d, tmp_path / "direct-features")
    for f in want:
        assert not np.isnan(got[f]).any()
        np.testing.assert_array_equal(got[f], want[f])


def test_lines_of_another_model_are_refused_until_accepted(tmp_path, pitches_csv, goods_json):
    run = tmp_path / "run"
    p = prepare(pitches_csv, goods_json, run)
    assert p.returncode == 0, p.stderr
    (cmd,) = p.stdout.splitlines()
    assert run_printed(cmd, "--model", "other-model").returncode == 0
    output = run / "batch" / "requests-0001.output.jsonl"
    p = command(BIN / "batch", "import", "--run", run, output)
    assert p.returncode == 1
    assert f"{N_REQUESTS} line(s) of another model not imported" in p.stderr
    assert "other-model" in p.stderr and records(run) == {}
    p = command(BIN / "batch", "import", "--run", run, "--accept-model", "other-model", output)
    assert p.returncode == 0, p.stderr
    recs = records(run)
    assert len(recs) == N_REQUESTS and all(r[0]["model"] == "other-model" for r in recs.values())


def test_a_torn_output_line_is_named_in_one_line(tmp_path, pitches_csv, goods_json):
    run = tmp_path / "run"
    p = prepare(pitches_csv, goods_json, run, "--shards", "2")
    assert p.returncode == 0, p.stderr
    cmd = p.stdout.splitlines()[0]
    assert run_printed(cmd).returncode == 0
    output = run / "batch" / "requests-0001.output.jsonl"
    data = output.read_bytes()
    output.write_bytes(data[:-40])  # the machine died while writing its last line
    n = N_REQUESTS // 2
    p = command(BIN / "batch", "import", "--run", run, output)
    assert p.returncode == 1 and "Traceback" not in p.stderr
    named = [x for x in p.stderr.splitlines() if "unreadable" in x and f"requests-0001.output.jsonl line {n}" in x]
    assert len(named) == 1, p.stderr
    assert len(records(run)) == n - 1
    # the next prepare asks for the torn line's request and the whole second file again
    p = prepare(pitches_csv, goods_json, run, "--shards", "2")
    assert p.returncode == 0 and f"prepared {N_REQUESTS - (n - 1)} request(s) in 2 file(s)" in p.stderr


def test_the_runner_refuses_a_line_that_is_not_a_request(tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_text('{"custom_id": "a", "method": "POST", "url": "/v1/chat/completions", "body": {"messages": []}}\n'
                   "{not json\n")
    out = tmp_path / "out.jsonl"
    p = command(BIN / "sim-server", "run-batch", "-i", src, "-o", out)
    assert p.returncode == 2 and not out.exists()
    assert p.stderr.strip().splitlines() == [p.stderr.strip()] and f"{src} line 2: not a JSON line" in p.stderr


@pytest.mark.parametrize("verb", ["submit", "fetch", "cancel"])
def test_no_batch_api_verbs_say_what_to_do(tmp_path, pitches_csv, goods_json, verb):
    run = tmp_path / "run"
    assert prepare(pitches_csv, goods_json, run).returncode == 0
    p = command(BIN / "batch", verb, "--run", run)
    assert p.returncode == 2
    assert p.stderr.strip() == (f"batch: error: vllm has no Batch API: run the vllm run-batch command bin/batch "
                                f"prepare printed for each file, then bin/batch import --run {run} with the output "
                                "files")
    p = command(BIN / "batch", "status", "--run", run)
    assert p.returncode == 0 and "requests-0001.jsonl" in p.stdout and "prepared" in p.stdout


def test_shards_split_evenly_or_are_refused_beyond_a_limit(tmp_path, pitches_csv, goods_json):
    run = tmp_path / "run"
    p = prepare(pitches_csv, goods_json, run, "--shards", "7", "--dry-run")
    assert p.returncode == 0 and "would write 7 request file(s)" in p.stdout and not run.exists()
    p = prepare(pitches_csv, goods_json, run, "--shards", "7")
    assert p.returncode == 0, p.stderr
    sizes = [len(lines(run / "batch" / f"requests-000{i}.jsonl")) for i in range(1, 8)]
    assert sizes == even_sizes(N_REQUESTS, 7) == [14, 14, 14, 14, 14, 13, 13]
    p = command(BIN / "batch", "prepare", "--pitches", pitches_csv, "--goods", goods_json, "--out", tmp_path / "o",
                "--base-url", "http://127.0.0.1:9/v1", "--shards", "2", "--max-requests", "40")
    assert p.returncode == 2 and p.stderr.strip() == \
        "batch: error: --shards 2: files of 48 requests, over --max-requests 40; give more shards"
    assert p.stdout == ""  # a provider with a Batch API: no commands to print
