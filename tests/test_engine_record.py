"""The record's one serialisation: written, scanned for done ids, read back."""

from __future__ import annotations

import orjson
import pytest

from liveroom.async_client import record as rec
from liveroom.async_client.checkpoint import Checkpoint
from liveroom.async_client.record import Record, RecordError, decode_id, dumps, loads
from liveroom.errors import LiveroomError

ODD_IDS = ('plain:1:Z', 'quote"in:2:Z', "back\\slash:3:Z", "中文:4:城市", "tab\tand\nnewline:5:Z")


def full(rid: str = "entry:7:Z", status: str = rec.OK) -> Record:
    return Record(rid, status, {"stage": "entry", "index": 7, "persona": "Z"}, {"entry": 4}, '{"want_to_enter": 4}',
                  {"prompt_tokens": 10, "total_tokens": 12}, 2, 1, 812.5, None, 1700000000.125)


def test_a_line_round_trips_exactly():
    line = dumps(full())
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert loads(line) == full()
    assert dumps(loads(line)) == line


def test_a_line_leads_with_id_then_status_then_meta():
    obj = orjson.loads(dumps(full()))
    assert list(obj) == ["id", "status", "stage", "index", "persona", *rec.TAIL]


def test_a_mapping_is_written_in_the_record_order():
    shuffled = {"t": 1.0, "scores": None, "status": "ok", "stage": "buy", "id": "buy:1:Z"}
    line = dumps(shuffled)
    assert line.startswith(b'{"id":"buy:1:Z","status":"ok","stage":"buy","scores":null')
    assert loads(line).meta == {"stage": "buy"}


def test_meta_may_not_shadow_a_record_field():
    with pytest.raises(ValueError, match="status"):
        Record("x", rec.OK, {"status": "error"})


@pytest.mark.parametrize("line", [b"", b"{", b'{"id": 1, "status": "ok"}', b'{"status": "ok"}', b"[1]",
                                  b'{"id":"x","status":"ok","sc'])
def test_a_damaged_line_is_no_record(line):
    with pytest.raises(RecordError):
        loads(line)


def test_ok_ids_of_written_records_are_found_and_decoded(tmp_path):
    cp = Checkpoint(tmp_path)
    cp.open({"groups": {"entry": "v"}})
    for i, rid in enumerate(ODD_IDS):
        cp.write("entry", full(rid, rec.OK if i % 2 == 0 else rec.INVALID))
    cp.write("entry", full("late:9:Z"))
    cp.close()
    want = {rid for i, rid in enumerate(ODD_IDS) if i % 2 == 0} | {"late:9:Z"}
    assert Checkpoint(tmp_path).done("entry") == want
    raw = [i for block in Checkpoint(tmp_path).ok_ids("entry") for i in block]
    assert sorted(map(decode_id, raw)) == sorted(want)
    assert [r.id for r in Checkpoint(tmp_path).records("entry")] == [*ODD_IDS, "late:9:Z"]


def test_the_scan_pattern_matches_only_what_dumps_writes():
    line = dumps(full("a:1:Z"))
    assert rec.OK_FIRST.match(line).group(1) == b"a:1:Z"
    assert rec.OK_LINE.search(b"\n" + line).group(1) == b"a:1:Z"
    assert rec.OK_FIRST.match(dumps(full("a:1:Z", rec.ERROR))) is None
    spaced = orjson.dumps(full().to_dict(), option=orjson.OPT_INDENT_2)  # not the line format
    assert rec.OK_FIRST.match(spaced) is None


def test_a_torn_or_cut_line_is_not_counted_done(tmp_path):
    good = dumps(full("a:1:Z"))
    (tmp_path / "entry.jsonl").write_bytes(
        good
        + b'{"id":"b:2:Z","sta\n'           # head cut short
        + b'{"id":"c:3:Z,"status":"ok"}\n'  # id's closing quote lost
        + dumps(full("d:4:Z"))[:-20]        # torn last line: no newline
    )
    assert Checkpoint(tmp_path).done("entry") == {"a:1:Z"}
    (tmp_path / "entry.jsonl").write_bytes(good[:-5])  # a first line torn
    assert Checkpoint(tmp_path).done("entry") == set()


def test_reading_a_damaged_line_names_the_file_and_line(tmp_path):
    (tmp_path / "entry.jsonl").write_bytes(dumps(full("a:1:Z")) + b"not json\n" + dumps(full("b:2:Z")))
    with pytest.raises(LiveroomError, match=r"entry\.jsonl line 2: not a JSON record"):
        list(Checkpoint(tmp_path).records("entry"))


def test_a_record_from_one_answer_has_the_batch_defaults():
    r = Record("entry:1:Z", rec.OK, {"stage": "entry"}, scores={"entry": 3}, reply="{}")
    assert (r.attempts, r.reasks, r.latency_ms, r.error, r.usage) == (1, 0, None, None, {})
    assert r.ok and r.t > 1.6e9
