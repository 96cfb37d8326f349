"""The record's one serialisation: written, scanned for done ids, read back."""

from __future__ import annotations

import orjson
import pytest

from liveroom.async_client import record as rec
from liveroom.async_client.record import Record, RecordError, decode_id, dumps, loads
from liveroom.async_client.run_dir import RunDir
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
    cp = RunDir(tmp_path)
    cp.open({"groups": {"entry": "v"}})
    for i, rid in enumerate(ODD_IDS):
        cp.write("entry", full(rid, rec.OK if i % 2 == 0 else rec.INVALID))
    cp.write("entry", full("late:9:Z"))
    cp.close()
    want = {rid for i, rid in enumerate(ODD_IDS) if i % 2 == 0} | {"late:9:Z"}
    assert RunDir(tmp_path).done("entry") == want
    raw = [i for block in RunDir(tmp_path).ok_ids("entry") for i in block]
    assert sorted(map(decode_id, raw)) == sorted(want)
    assert [r.id for r in RunDir(tmp_path).records("entry")] == [*ODD_IDS, "late:9:Z"]


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
    assert RunDir(tmp_path).done("entry") == {"a:1:Z"}
    (tmp_path / "entry.jsonl").write_bytes(good[:-5])  # a first line torn
    assert RunDir(tmp_path).done("entry") == set()


def test_reading_a_damaged_line_names_the_file_and_line(tmp_path):
    (tmp_path / "entry.jsonl").write_bytes(dumps(full("a:1:Z")) + b"not json\n" + dumps(full("b:2:Z")))
    with pytest.raises(LiveroomError, match=r"entry\.jsonl line 2: not a JSON record"):
        list(RunDir(tmp_path).records("entry"))


def test_a_record_from_one_answer_has_the_batch_defaults():
    r = Record("entry:1:Z", rec.OK, {"stage": "entry"}, scores={"entry": 3}, reply="{}")
    assert (r.attempts, r.reasks, r.latency_ms, r.error, r.usage) == (1, 0, None, None, {})
    assert r.ok and r.t > 1.6e9


def test_a_record_keeps_the_served_model_last_and_an_old_line_reads_without_it():
    r = Record("entry:1:Z", rec.OK, {"stage": "entry"}, {"entry": 3}, "{}", model="gpt-4o-mini-2024-07-18")
    line = dumps(r)
    assert line.endswith(b',"model":"gpt-4o-mini-2024-07-18"}\n') and loads(line) == r
    old = b'{"id":"a:1:Z","status":"ok","scores":null,"reply":null,"usage":{},"attempts":1,"reasks":0,' \
          b'"latency_ms":null,"error":null,"t":1.0}\n'
    assert loads(old).model is None and loads(old).meta == {}
    assert loads(old.replace(b'"t":1.0', b'"t":1.0,"model":7')).model is None  # not a name: no model


def test_a_damaged_line_is_skipped_when_the_caller_keeps_count(tmp_path):
    good = [dumps(full(f"a:{i}:Z")) for i in range(4)]
    (tmp_path / "entry.jsonl").write_bytes(good[0] + good[1][:40] + good[2] + b"{broken\n" + good[3])
    damaged: list[int] = []
    assert [r.id for r in RunDir(tmp_path).records("entry", damaged)] == ["a:0:Z", "a:3:Z"]
    assert damaged == [2, 3]


def test_the_scan_is_right_also_when_a_field_holds_an_object_led_by_id(tmp_path):
    """A block whose heads do not count up takes the slow, exact path: the same ids."""
    nested = Record("b:1:Z", rec.OK, {"stage": "buy"}, {"items": [{"id": "x"}]})
    data = dumps(full("a:1:Z")) + dumps(nested) + dumps(full("c:1:Z", rec.ERROR)) + dumps(full("d:1:Z"))
    assert data.count(b'{"id":"') == 5
    (tmp_path / "g.jsonl").write_bytes(data)
    assert RunDir(tmp_path).done("g") == {"a:1:Z", "b:1:Z", "d:1:Z"}


def test_an_unchanged_manifest_is_not_written_again(tmp_path):
    cp = RunDir(tmp_path)
    cp.open({"groups": {"g": "v1"}})
    cp.close()
    manifest = tmp_path / "manifest.json"
    before = (manifest.stat().st_ino, manifest.stat().st_mtime_ns)
    cp.open({"groups": {"g": "v1"}})
    cp.close()
    assert (manifest.stat().st_ino, manifest.stat().st_mtime_ns) == before
    cp.open({"groups": {"g": "v2"}})
    cp.close()
    assert b'"v2"' in manifest.read_bytes()


FILL = """
import resource, sys
from liveroom.async_client.run_dir import RunDir, WriteFailed
from liveroom.async_client.record import Record
cp = RunDir(sys.argv[1])
cp.open({"groups": {"g": "v1"}})
resource.setrlimit(resource.RLIMIT_FSIZE, (5000, 5000))
try:
    for i in range(1000):
        cp.write("g", Record(f"g:{i}:Z", "ok", {"n": i}, reply="x" * (97 + i % 13)))
except WriteFailed as e:
    print(i, e)
"""


def test_a_write_past_the_disk_is_cut_back_to_the_last_whole_line(tmp_path):
    import subprocess
    import sys

    p = subprocess.run([sys.executable, "-c", FILL, str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    n, _, message = p.stdout.partition(" ")
    data = (tmp_path / "g.jsonl").read_bytes()
    assert data.endswith(b"\n") and data.count(b"\n") == int(n) and len(data) <= 5000
    assert f"cannot write {tmp_path}/g.jsonl: File too large" in message
    assert RunDir(tmp_path).done("g") == {f"g:{i}:Z" for i in range(int(n))}
