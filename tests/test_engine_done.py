"""Finding what a run directory already holds: the checkpoint scan and the done table."""

import numpy as np
import orjson
import pytest

from liveroom.async_client import run_dir as cp
from liveroom.async_client.run_dir import RunDir
from liveroom.prompts.stages import request_id
from liveroom.scoring.plan import DoneTable

STAGES = ("entry", "buy")
PERSONAS = ("town_old", "city_blue", "Z")
INDICES = [7, -2, 30, 4]  # file order, not sorted


def write_records(run_dir, group, records, tail=b""):
    run_dir.mkdir(exist_ok=True)
    lines = b"".join(orjson.dumps(r) + b"\n" for r in records)
    (run_dir / f"{group}.jsonl").write_bytes(lines + tail)


@pytest.mark.parametrize("block", [cp.SCAN_BLOCK, 64, 1])
def test_scan_finds_exactly_the_ok_ids_across_block_edges(tmp_path, monkeypatch, block):
    monkeypatch.setattr(cp, "SCAN_BLOCK", block)
    records = [{"id": request_id("entry", i, p), "status": s, "reply": "x" * (i % 5)}
               for i in range(40) for p, s in zip(PERSONAS, ("ok", "failed", "ok"))]
    records.append({"id": 'odd"id', "status": "ok"})
    write_records(tmp_path, "entry", records, tail=b'{"id":"entry:99:Z","status":"ok","re')  # torn tail
    want = {r["id"] for r in records if r["status"] == "ok"}
    assert RunDir(tmp_path).done("entry") == want
    assert sum(len(b) for b in RunDir(tmp_path).ok_ids("entry")) == len(want)


def test_missing_group_has_nothing_done(tmp_path):
    assert RunDir(tmp_path).done("read") == set()


def test_table_marks_each_id_in_its_place():
    t = DoneTable(INDICES, STAGES, PERSONAS)
    t.add("entry", [b"entry:30:city_blue", b"entry:-2:Z"])
    t.add("buy", [b"buy:7:town_old"])
    want = np.zeros((2, 4, 3), bool)
    want[0, 2, 1] = want[0, 1, 2] = want[1, 0, 0] = True
    assert (t.flags == want).all()
    assert t.count() == 3


def test_ids_outside_the_plan_or_malformed_are_ignored():
    t = DoneTable(INDICES, STAGES, PERSONAS)
    t.add("entry", [b"entry:5:Z", b"entry:7:nobody", b"buy:7:Z", b"entry:x:Z", b"entry:7", b"entry:7:Z:extra",
                    b"entry:99999999999999999999999:Z", b"entry:4:Z"])
    assert t.count() == 1 and t.flags[0, 3, 2]
    t.add("read", [b"read:7:Z"])  # a stage not planned
    assert t.count() == 1


def test_pending_rows_and_done_ids_agree_with_a_set_of_ids():
    rng = np.random.default_rng(0)
    indices = rng.permutation(500)[:200] * 3 - 100
    table = DoneTable(indices, STAGES, PERSONAS)
    every = [request_id(s, int(i), p) for i in indices for s in STAGES for p in PERSONAS]
    done = set(rng.choice(every, size=len(every) // 2, replace=False).tolist())
    done |= {request_id(s, int(indices[0]), p) for s in STAGES for p in PERSONAS}  # one pitch complete
    for s in STAGES:
        table.add(s, [i.encode() for i in done if i.startswith(s + ":")])
    assert table.count() == len(done)
    for row, index in enumerate(indices):
        mine = {request_id(s, int(index), p) for s in STAGES for p in PERSONAS}
        assert table.pending_rows()[row] == bool(mine - done)
        got = table.done_ids(row)
        assert set().union(*got.values()) == mine & done
        assert all(i.startswith(s + ":") for s, ids in got.items() for i in ids)
    assert not table.pending_rows()[0]


def test_an_empty_plan():
    t = DoneTable([], STAGES, PERSONAS)
    t.add("entry", [b"entry:1:Z"])
    assert t.count() == 0 and t.pending_rows().shape == (0,)
