"""``bin/batch import --id-scheme reference``: the reference's own output files into a run.

The files are made here from the reference's description (/work/shared/REFERENCE.md):
ids ``s{stage}_v{version}_i{row}_c{persona}`` (row: 0-based row of the pitches
file; persona: number in the fixed persona order), one file per stage, buy
replies a bare JSON list, sometimes scored under ``want``. The run is made by
``bin/batch prepare``; the matrices are read back with ``bin/collect``.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import numpy as np
import pytest

from conftest import pitch_row, write_goods, write_pitches
from kit import batch_inline as batch
from kit import records
from liveroom.cli import collect_main
from liveroom.data.personas import PERSONA_KEYS

N_PITCHES = 5
MODEL = "glm-4-flash"  # the model the reference's files were asked of, as the run says
N_PERSONAS = len(PERSONA_KEYS)


@pytest.fixture
def inputs(tmp_path) -> tuple[Path, Path]:
    """Five pitches with indexes out of row order, one to three showcase items each."""
    rows, goods = [], {}
    base = dt.datetime(2024, 4, 8, 7, 20)
    for i, index in enumerate((907, 12, 500, 13, 3)):
        start = (base + dt.timedelta(hours=9 * i)).strftime("%Y-%m-%d %H:%M")
        rows.append(pitch_row(index, start, title=f"场次{i}", prod=f"商品{i}", text="今天限时优惠"))
        goods[start] = [[j, f"货品{i}-{j}", float(10 * (j + 1))] for j in range(1 + i % 3)]
    return write_pitches(tmp_path, rows), write_goods(tmp_path, goods)


def n_items(row: int) -> int:
    return 1 + row % 3


def entry_score(row: int, c: int) -> int:
    return 1 + (row + c) % 5


def buy_scores(row: int, c: int) -> list[int]:
    return [1 + (row * 3 + c + j) % 5 for j in range(n_items(row))]


def read_score(row: int, c: int) -> int:
    return 1 + (row * 2 + c) % 5


def reply(row: int, c: int, stage: str) -> str:
    """The model's reply text as the reference got it."""
    if stage == "entry":
        return json.dumps({"want_to_enter": entry_score(row, c), "reason": "有空"}, ensure_ascii=False)
    if stage == "read":
        return json.dumps({"impact": read_score(row, c), "reason": "讲得实在"}, ensure_ascii=False)
    key = "want" if c % 2 else "want_to_buy"  # some models answer with key want
    return json.dumps([{"idx": j + 1, key: s, "reason": "看看"} for j, s in enumerate(buy_scores(row, c))],
                      ensure_ascii=False)


def line(custom_id: str, content: str, model: str = MODEL) -> str:
    """One line of a provider's batch output file."""
    body = {"id": "chatcmpl-1", "object": "chat.completion", "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 300, "completion_tokens": 20, "total_tokens": 320}}
    return json.dumps({"id": "batch_req_1", "custom_id": custom_id,
                       "response": {"status_code": 200, "request_id": "r1", "body": body}, "error": None},
                      ensure_ascii=False)


def reference_file(tmp_path: Path, stage: str, rows=range(N_PITCHES), personas=range(N_PERSONAS),
                   version: str = "3", extra: tuple[str, ...] = (), model: str = MODEL) -> Path:
    """One stage's output file, lines in the reference's id scheme (in reverse order, as a provider may)."""
    lines = [line(f"s{stage}_v{version}_i{r}_c{c}", reply(r, c, stage), model) for r in rows for c in personas]
    path = tmp_path / f"{stage}_output.jsonl"
    path.write_text("\n".join([*lines[::-1], *extra]) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def run(tmp_path, capsys, inputs, monkeypatch) -> Path:
    """A run directory made by bin/batch prepare (its request files are not used)."""
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    d = tmp_path / "run"
    pitches, goods = inputs
    rc, err = batch(capsys, "prepare", "--pitches", str(pitches), "--goods", str(goods), "--out", str(d),
                    "--model", MODEL)
    assert rc == 0, err
    return d


def import_reference(capsys, run: Path, inputs, *files: Path, flags: tuple[str, ...] = ()) -> tuple[int, str]:
    pitches, goods = inputs
    return batch(capsys, "import", "--run", str(run), "--id-scheme", "reference", "--pitches", str(pitches),
                 "--goods", str(goods), *flags, *map(str, files))


def collect(capsys, pitches: Path, run: Path, out: Path, *flags: str) -> tuple[int, dict[str, np.ndarray]]:
    capsys.readouterr()
    rc = collect_main(["--pitches", str(pitches), "--run", str(run), "--out", str(out), *flags])
    if rc:
        return rc, {}
    return rc, {f: np.load(out / f"{f}.npy") for f in ("entry", "state", "action", "read", "index")}


# --------------------------------------------------------------------------- tests

def test_the_reference_files_fill_the_matrices(tmp_path, capsys, inputs, run):
    files = [reference_file(tmp_path, s) for s in ("entry", "buy", "read")]
    rc, err = import_reference(capsys, run, inputs, *files)
    n = N_PITCHES * N_PERSONAS
    assert rc == 0, err
    assert f"imported {3 * n} ok, 0 invalid, 0 error" in err
    rc, m = collect(capsys, inputs[0], run, tmp_path / "features")
    assert rc == 0
    assert m["index"].tolist() == [907, 12, 500, 13, 3]  # rows in the pitches file's order
    for r in range(N_PITCHES):
        for c in range(N_PERSONAS):
            assert m["entry"][r, c] == entry_score(r, c)
            assert m["read"][r, c] == read_score(r, c)
            assert m["state"][r, c] == pytest.approx(np.mean(buy_scores(r, c)))
            assert m["action"][r, c] == buy_scores(r, c)[0]
    rec = next(x for x in records(run) if x["id"] == f"buy:500:{PERSONA_KEYS[3]}")  # row 2, persona 3
    assert rec["status"] == "ok" and rec["n_items"] == 3 and rec["reference_id"] == "sbuy_v3_i2_c3"
    assert rec["usage"]["total_tokens"] == 320

    # the same files again: nothing imported twice
    rc, err = import_reference(capsys, run, inputs, *files)
    assert rc == 0 and err.count("already imported, skipped") == 3
    assert len(records(run)) == 3 * n


def test_a_partial_file_leaves_the_rest_missing(tmp_path, capsys, inputs, run):
    f = reference_file(tmp_path, "entry", rows=[0, 3], personas=[0, 7])
    rc, err = import_reference(capsys, run, inputs, f)
    assert rc == 0, err
    assert "imported 4 ok" in err
    rc, m = collect(capsys, inputs[0], run, tmp_path / "features", "--allow-missing")
    assert rc == 0
    got = m["entry"]
    assert (got[0, 0], got[0, 7], got[3, 0], got[3, 7]) == (1, 3, 4, 1)
    assert np.isnan(got).sum() == N_PITCHES * N_PERSONAS - 4


def test_rows_past_the_pitches_file_are_refused_with_nothing_imported(tmp_path, capsys, inputs, run):
    good = reference_file(tmp_path, "entry")
    bad = reference_file(tmp_path, "read", rows=range(N_PITCHES + 2))
    rc, err = import_reference(capsys, run, inputs, good, bad)
    assert rc == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err
    assert "read_output.jsonl" in lines[0] and "row 6" in lines[0] and "5 pitches" in lines[0]
    assert records(run) == []


def test_the_pitches_file_must_be_the_runs(tmp_path, capsys, inputs, run):
    other = write_pitches(tmp_path, [pitch_row(i, "2024-04-08 07:20") for i in range(N_PITCHES)], name="other.csv")
    rc, err = import_reference(capsys, run, (other, inputs[1]), reference_file(tmp_path, "entry"))
    assert rc == 2 and "other.csv" in err and "not the pitches file" in err
    assert records(run) == []


def test_the_flags_the_scheme_needs(tmp_path, capsys, inputs, run):
    f = reference_file(tmp_path, "buy")
    rc, err = batch(capsys, "import", "--run", str(run), "--id-scheme", "reference", str(f))
    assert rc == 2 and "--pitches" in err
    rc, err = batch(capsys, "import", "--run", str(run), "--id-scheme", "reference", "--pitches", str(inputs[0]),
                    str(f))
    assert rc == 2 and "--goods" in err
    assert records(run) == []


def test_without_the_scheme_the_ids_are_unknown_and_the_flag_is_named(tmp_path, capsys, inputs, run):
    f = reference_file(tmp_path, "entry")
    rc, err = batch(capsys, "import", "--run", str(run), str(f))
    assert rc == 1
    assert f"{N_PITCHES * N_PERSONAS} unknown id(s)" in err
    assert "--id-scheme reference" in err
    assert records(run) == []
    # the file was not imported by that: with the scheme it is
    rc, err = import_reference(capsys, run, inputs, f)
    assert rc == 0 and f"imported {N_PITCHES * N_PERSONAS} ok" in err


def test_replies_of_another_model_wait_for_accept_model(tmp_path, capsys, inputs, run):
    f = reference_file(tmp_path, "read", model="qwen-plus")
    rc, err = import_reference(capsys, run, inputs, f)
    assert rc == 1 and f"{N_PITCHES * N_PERSONAS} line(s) of another model not imported" in err
    assert records(run) == []
    rc, err = import_reference(capsys, run, inputs, f, flags=("--accept-model", "qwen-plus"))
    assert rc == 0 and f"imported {N_PITCHES * N_PERSONAS} ok" in err


def test_unknown_personas_stages_and_bad_replies_are_counted(tmp_path, capsys, inputs, run):
    extra = (line("sentry_v3_i0_c8", reply(0, 0, "entry")),       # no ninth persona
             line("straffic_v3_i0_c0", reply(0, 0, "entry")),     # no such stage
             line("sentry_v3_i1_c1", '{"want_to_enter": 0}'),     # 0 is no score
             "not json")
    f = reference_file(tmp_path, "entry", rows=[0], personas=[0], extra=extra)
    rc, err = import_reference(capsys, run, inputs, f)
    assert rc == 1
    assert "imported 1 ok, 1 invalid, 0 error" in err
    assert "2 unknown id(s), 1 unreadable line(s)" in err
    assert "sentry_v3_i0_c8" in err and "straffic_v3_i0_c0" in err
    bad = next(x for x in records(run) if x["status"] == "invalid")
    assert bad["id"] == f"entry:12:{PERSONA_KEYS[1]}" and "1..5" in bad["error"]


def test_a_request_file_is_not_taken_for_replies(tmp_path, capsys, inputs, run):
    req = tmp_path / "entry_requests.jsonl"
    req.write_text(json.dumps({"custom_id": "sentry_v3_i0_c0", "method": "POST", "url": "/v1/chat/completions",
                               "body": {"model": "m", "messages": []}}) + "\n")
    rc, err = import_reference(capsys, run, inputs, req)
    assert rc == 1 and "request" in err
    assert records(run) == []
