"""RunDir, the one reader of a run directory: torn and damaged lines, its queries, old manifests."""

from __future__ import annotations

import json

import pytest

from liveroom.async_client.errors import CONTENT_FILTER
from liveroom.async_client.record import ERROR, INVALID, OK, Record, dumps
from liveroom.async_client.run_dir import Manifest, ManifestMismatch, RunDir
from liveroom.errors import InputError, LiveroomError

#: a manifest as bin/score wrote it before prompt sets existed (no "prompts"), by hand: spaces, non-ASCII
OLD_MANIFEST = {
    "format": 1, "model": "glm-4-flash", "endpoint": "open.bigmodel.cn/api/paas/v4",
    "params": {"temperature": 0.2, "max_tokens": 1000, "response_format": "json_object"},
    "groups": {"entry": "entry-v1", "read": "read-v1"},
    "personas": [{"key": "town_old", "label": "小镇中老年"}, {"key": "Z", "label": "Z世代"}],
    "inputs": {"pitches": "ab" * 32},
}


def rec(rid: str, status: str = OK, **meta: object) -> Record:
    return Record(rid, status, dict(meta), {"entry": 4} if status == OK else None, "{}",
                  {"prompt_tokens": 10, "completion_tokens": 2}, error=None if status == OK else "bad reply")


def write(run, group: str, data: bytes) -> None:
    run.mkdir(exist_ok=True)
    (run / f"{group}.jsonl").write_bytes(data)


def test_a_torn_last_line_is_no_record_in_any_query(tmp_path):
    whole = dumps(rec("entry:1:Z")) + dumps(rec("entry:2:Z", ERROR, source="f1"))
    torn = dumps(Record("entry:3:Z", ERROR, {"source": "f1"}, error=CONTENT_FILTER + " x"))[:-9]
    write(tmp_path, "entry", whole + torn)
    d = RunDir(tmp_path)
    assert [r.id for r in d.records("entry")] == ["entry:1:Z", "entry:2:Z"]
    assert [end for _, end in d.records_after("entry", 0)] == [len(dumps(rec("entry:1:Z"))), len(whole)]
    assert d.done("entry") == {"entry:1:Z"}
    assert d.by_meta(["entry"], "source") == {"f1": {"entry:2:Z"}}
    assert d.failed_with("entry", CONTENT_FILTER) == []
    assert d.repair("entry") == len(torn) and (tmp_path / "entry.jsonl").read_bytes() == whole


def test_a_damaged_line_counts_nowhere_and_is_named(tmp_path):
    ok, bad = dumps(rec("entry:1:Z")), dumps(rec("entry:2:Z", INVALID))
    cut = dumps(rec("entry:3:Z", INVALID, source="f2"))[:50]  # a record cut short, another written after it
    refused = dumps(Record("entry:4:Z", ERROR, error=f"{CONTENT_FILTER} refused"))
    write(tmp_path, "entry", ok + cut + bad + b'{"id":"entry:5:Z","status":"ok"\n' + refused)
    d = RunDir(tmp_path)
    damaged: list[int] = []
    assert [r.id for r in d.records("entry", damaged)] == ["entry:1:Z", "entry:4:Z"]
    assert damaged == [2, 3]
    with pytest.raises(LiveroomError, match=r"entry.jsonl line 2: not a JSON record"):
        list(d.records("entry"))
    assert d.done("entry") == {"entry:1:Z"}
    assert d.invalid(["entry"]) == {}  # entry:2:Z's line is the one the cut record ran into
    assert d.by_meta(["entry"], "source") == {}
    assert d.failed_with("entry", CONTENT_FILTER) == [b"entry:4:Z"]


def test_queries_read_a_field_wherever_the_line_holds_it(tmp_path):
    """No query depends on the order of meta fields, nor takes a reply quoting a field for the field."""
    lines = [rec("entry:1:Z", INVALID, stage="entry", source="f1"),   # source after another meta field
             rec("entry:1:Z", INVALID, source="f2"),
             Record("entry:2:Z", ERROR, {"stage": "entry"}, reply='{"source":"f9","status":"invalid"}',
                    error="said: content_filter: no"),
             Record("entry:3:Z", ERROR, {}, scores={"source": "f3"}, error=CONTENT_FILTER + " sexual")]
    write(tmp_path, "entry", b"".join(map(dumps, lines)))
    d = RunDir(tmp_path)
    assert d.by_meta(["entry", "read"], "source") == {"f1": {"entry:1:Z"}, "f2": {"entry:1:Z"}}
    assert {k: [r.meta["source"] for r in v] for k, v in d.invalid(["entry"]).items()} == {"entry:1:Z": ["f1", "f2"]}
    assert d.failed_with("entry", CONTENT_FILTER) == [b"entry:3:Z"]


def test_a_manifest_written_by_an_older_version_loads_and_is_not_rewritten(tmp_path):
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps({**OLD_MANIFEST, "note": "kept"}, ensure_ascii=False, indent=4))
    before = (path.stat().st_ino, path.stat().st_mtime_ns, path.read_bytes())
    d = RunDir(tmp_path)
    m = d.manifest()
    assert (m.prompts, m.persona_keys, m.groups["read"], m.extra) == (None, ["town_old", "Z"], "read-v1",
                                                                      {"note": "kept"})
    new = Manifest.from_json(OLD_MANIFEST)  # what this version's command builds for the same run
    with pytest.raises(ManifestMismatch, match="note: run has \"kept\", command gives null"):
        d.check(new)
    new.extra = {"note": "kept"}
    assert d.check(new) == m
    d.open(d.check(new))
    d.close()
    assert (path.stat().st_ino, path.stat().st_mtime_ns, path.read_bytes()) == before
    assert "prompts" not in m.to_json() and list(m.to_json())[:4] == ["format", "model", "endpoint", "params"]


def test_a_run_grows_by_stages_and_refuses_other_settings(tmp_path):
    d = RunDir(tmp_path)
    d.open(OLD_MANIFEST)
    d.close()
    more = Manifest.from_json({**OLD_MANIFEST, "groups": {"buy": "buy-v1"}})
    assert d.check(more).groups == {"entry": "entry-v1", "read": "read-v1", "buy": "buy-v1"}
    with pytest.raises(ManifestMismatch, match=r"differences: groups.read: run has \"read-v1\", command gives \"r2\""):
        d.check({**OLD_MANIFEST, "groups": {"read": "r2"}})
    d.open(d.check(more))
    d.close()
    assert json.loads((tmp_path / "manifest.json").read_text())["groups"]["buy"] == "buy-v1"
    assert (tmp_path / "buy.jsonl").exists()


def test_no_manifest_or_an_unreadable_one_is_one_line(tmp_path):
    with pytest.raises(InputError, match=r"not a run directory \(no manifest.json\); run bin/batch prepare first"):
        RunDir(tmp_path).manifest("run bin/batch prepare first")
    assert RunDir(tmp_path).recorded() is None
    for text, why in (("{not json", "unexpected character"), ('{"groups": []}', "'groups' is a list"),
                      ('{"personas": [{"label": "x"}]}', "a persona without a 'key'")):
        (tmp_path / "manifest.json").write_text(text)
        with pytest.raises(ManifestMismatch, match=f"manifest.json: unreadable manifest \\(.*{why}"):
            RunDir(tmp_path).check(OLD_MANIFEST)
