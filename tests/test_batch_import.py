"""``bin/batch import`` run again over the same files: what was refused comes in, nothing comes in twice.

A file counts as imported for the lines taken from it. Lines answered by
another model wait for ``--accept-model``: the file is read again by the next
import, which takes those and skips every line taken before; a file nothing
was taken from (every line refused or unreadable) is not remembered at all.
The files are real: another run's output fetched from the Batch API
simulator on loopback (the same requests asked of another model), and this
run's own output downloaded by hand; ``bin/collect`` reads the result.

The last test reads the pitches file in another encoding: ``prepare`` (and the
reference import, whose ids number its rows) take ``--encoding`` as
``bin/score`` does, and a GB18030 copy gives the UTF-8 file's request lines.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from kit import BATCH_REQUESTS as N_REQUESTS
from kit import BATCH_SUBMIT as SUBMIT
from kit import BATCH_WAIT as WAIT
from kit import assert_no_key, downloaded, records
from kit import batch_inline as batch
from kit import batch_state as state
from kit import collect_inline as collect
from kit import prepare_inline as prepare

OTHER = "glm-4-flash"  # the model the other run asked; this run is for the default, gpt-4o-mini


def other_model_run(tmp_path: Path, capsys, inputs, srv) -> tuple[Path, Path]:
    """A run of the same requests for model OTHER, through its whole batch; it and its output file."""
    run = tmp_path / "other"
    assert prepare(capsys, inputs, run, srv.url, "--model", OTHER)[0] == 0
    assert batch(capsys, "submit", "--run", str(run), *SUBMIT)[0] == 0
    rc, err = batch(capsys, "fetch", "--run", str(run), *WAIT)
    assert rc in (0, 1), err
    return run, run / "batch" / "requests-0001.output.jsonl"


def import_(capsys, run: Path, *files_and_flags: str) -> tuple[int, str]:
    return batch(capsys, "import", "--run", str(run), *files_and_flags)


def ids_of(lines: list[str]) -> list[str]:
    return [json.loads(x)["custom_id"] for x in lines]


def mixed_run(tmp_path: Path, capsys, inputs, srv) -> tuple[Path, set[str], list[str]]:
    """A run whose one batch has completed, the ids of half its output and of its failed lines, and a
    file's lines: this run's own (ok, unusable and failed) for those ids, the other model's for the rest."""
    _, other_output = other_model_run(tmp_path, capsys, inputs, srv)
    run = tmp_path / "run"
    assert prepare(capsys, inputs, run, srv.url)[0] == 0
    assert batch(capsys, "submit", "--run", str(run), *SUBMIT)[0] == 0
    output, errors = downloaded(srv, run)
    ours = set(sorted(ids_of(output))[: len(output) // 2]) | set(ids_of(errors))
    mixed = ([x for x in output if json.loads(x)["custom_id"] in ours] + errors
             + [x for x in other_output.read_text().splitlines() if json.loads(x)["custom_id"] not in ours])
    return run, ours, mixed


def test_a_file_refused_whole_is_imported_by_the_rerun_that_accepts_its_model(tmp_path, capsys, server, env,
                                                                               inputs):
    srv = server(shuffle=True)
    other, output = other_model_run(tmp_path, capsys, inputs, srv)
    want = collect(capsys, inputs[0], other, tmp_path / "other-features")
    run = tmp_path / "run"
    assert prepare(capsys, inputs, run, srv.url)[0] == 0

    for _ in range(2):  # refused, and refused again: never "already imported"
        rc, err = import_(capsys, run, str(output))
        assert rc == 1, err
        assert "imported 0 ok, 0 invalid, 0 error; 0 already ok" in err
        assert f"{N_REQUESTS} line(s) of another model not imported (pass --accept-model NAME" in err
        assert "already imported" not in err and "imported before" not in err
        assert records(run) == []
        assert state(run)["imported"] == {} and "partly_imported" not in state(run)

    rc, err = import_(capsys, run, str(output), "--accept-model", OTHER)
    assert rc == 0, err
    assert f"imported {N_REQUESTS} ok, 0 invalid, 0 error; 0 already ok" in err and "already imported" not in err
    recs = records(run)
    assert len(recs) == len({r["id"] for r in recs}) == N_REQUESTS
    assert {r["model"] for r in recs} == {OTHER}
    assert list(state(run)["imported"].values()) == [output.name]

    rc, err = import_(capsys, run, str(output), "--accept-model", OTHER)  # nothing more can come of it
    assert rc == 0 and f"{output.name}: already imported, skipped" in err
    assert len(records(run)) == N_REQUESTS
    got = collect(capsys, inputs[0], run, tmp_path / "features")
    for f in want:
        assert not np.isnan(got[f]).any()
        np.testing.assert_array_equal(got[f], want[f])
    assert_no_key(run)


def test_a_file_partly_of_another_model_gives_the_rest_and_nothing_twice(tmp_path, capsys, server, env, inputs):
    srv = server(error_every=9, nonjson_every=7, shuffle=True)
    run, ours, mixed = mixed_run(tmp_path, capsys, inputs, srv)
    assert sorted(ids_of(mixed)) == sorted(json.loads(x)["id"] for x in
                                           (run / "batch" / "requests-0001.meta.jsonl").read_text().splitlines())
    f = tmp_path / "mixed.jsonl"
    f.write_text("\n".join(mixed[::-1]) + "\n")
    n_ours, n_other = len(ours), N_REQUESTS - len(ours)

    rc, err = import_(capsys, run, str(f))
    assert rc == 1, err
    assert f"{n_other} line(s) of another model not imported" in err
    first = records(run)
    assert sorted(r["id"] for r in first) == sorted(ours)
    failed = {r["id"] for r in first if r["status"] != "ok"}
    assert {r["status"] for r in first} == {"ok", "invalid", "error"}
    assert list(state(run)["partly_imported"].values()) == [f.name] and state(run)["imported"] == {}
    (source,) = {r["source"] for r in first}  # each record names the file it came from
    assert source == hashlib.sha256(f.read_bytes()).hexdigest()

    rc, err = import_(capsys, run, str(f))  # without the flag: what was taken is not taken again
    assert rc == 1 and f"{n_ours} line(s) imported before from the same file, skipped" in err
    assert "imported 0 ok, 0 invalid, 0 error" in err and f"{n_other} line(s) of another model" in err
    assert records(run) == first

    rc, err = import_(capsys, run, str(f), "--accept-model", OTHER)
    assert f"{n_ours} line(s) imported before from the same file, skipped" in err
    assert "another model" not in err
    recs = records(run)
    assert all(r in recs for r in first)
    assert len(recs) == len({r["id"] for r in recs}) == N_REQUESTS  # one record per request: none twice
    assert {r["model"] for r in recs if r["id"] not in ours} == {OTHER}
    assert list(state(run)["imported"].values()) == [f.name] and "partly_imported" not in state(run)
    assert state(run)["shards"][0]["finished"]  # every request of the batch accounted for

    rc, err = import_(capsys, run, str(f), "--accept-model", OTHER)
    assert f"{f.name}: already imported, skipped" in err and records(run) == recs
    # each unusable reply was recorded once, so the next prepare re-asks it once
    invalid = {r["id"]: r for r in recs if r["status"] == "invalid"}
    assert invalid.keys() & failed
    rc, err = prepare(capsys, inputs, run, srv.url)
    assert rc == 0 and f"{len(invalid)} of them re-ask(s)" in err
    asked = {json.loads(x)["custom_id"]: json.loads(x)["body"]["messages"]
             for x in (run / "batch" / "requests-0002.jsonl").read_text().splitlines()}
    assert set(asked) == {r["id"] for r in recs if r["status"] != "ok"}
    assert all(len(asked[i]) == 4 for i in invalid)  # the first ask, one bad reply and its reason
    assert_no_key(run)


def test_a_file_nothing_was_taken_from_is_not_remembered(tmp_path, capsys, server, env, inputs):
    srv = server()
    run = tmp_path / "run"
    assert prepare(capsys, inputs, run, srv.url, "--stages", "entry")[0] == 0
    assert batch(capsys, "submit", "--run", str(run), *SUBMIT)[0] == 0
    output, _ = downloaded(srv, run)
    page = tmp_path / "output.jsonl"  # what a failed download can leave: no line of it readable
    page.write_text("<html>\n<body>502 Bad Gateway</body>\n</html>\n")
    strangers = tmp_path / "strangers.jsonl"  # replies to requests the run never made
    strangers.write_text("".join(x.replace('"entry:', '"entry:9') + "\n" for x in output))
    for _ in range(2):
        rc, err = import_(capsys, run, str(page), str(strangers))
        assert rc == 1, err
        assert f"0 already ok, 0 duplicate line(s), {len(output)} unknown id(s), 3 unreadable line(s)" in err
        assert "already imported" not in err and records(run) == [] and state(run)["imported"] == {}

    page.write_text("\n".join(output) + "\n")  # downloaded again, whole
    rc, err = import_(capsys, run, str(page))
    assert rc == 0 and f"imported {len(output)} ok" in err
    rc, err = import_(capsys, run, str(page))
    assert rc == 0 and "output.jsonl: already imported, skipped" in err and len(records(run)) == len(output)


# ----------------------------------------------------------------- the pitches file in another encoding

def reference_line(custom_id: str) -> str:
    """A reply line as the reference's own scripts write it, for the run's model."""
    body = {"model": "gpt-4o-mini", "choices": [{"index": 0, "finish_reason": "stop", "message": {
        "role": "assistant", "content": '{"want_to_enter": 4, "reason": "有空"}'}}]}
    return json.dumps({"custom_id": custom_id, "response": {"status_code": 200, "body": body}}, ensure_ascii=False)


def test_prepare_reads_a_gb18030_pitches_file_with_encoding_as_the_utf8_one(tmp_path, capsys, env, inputs):
    url = "http://127.0.0.1:9/v1"  # prepare sends nothing
    pitches, goods = inputs
    gb = tmp_path / "pitches-gb18030.csv"
    gb.write_bytes(pitches.read_text(encoding="utf-8").encode("gb18030"))
    assert gb.read_bytes() != pitches.read_bytes()
    utf8_run, gb_run = tmp_path / "utf8", tmp_path / "gb"
    assert prepare(capsys, inputs, utf8_run, url)[0] == 0
    rc, err = prepare(capsys, (gb, goods), gb_run, url, "--encoding", "gb18030")
    assert rc == 0, err
    for name in ("requests-0001.jsonl", "requests-0001.meta.jsonl"):
        want = (utf8_run / "batch" / name).read_bytes()
        assert (gb_run / "batch" / name).read_bytes() == want and want.count(b"\n") == N_REQUESTS
    assert "宠粉专场第0场" in (gb_run / "batch" / "requests-0001.jsonl").read_text(encoding="utf-8")
    # and its estimate is the UTF-8 file's (any spelling of the name will do)
    dry = [prepare(capsys, files, tmp_path / "dry", url, "--dry-run", *flags)
           for files, flags in ((inputs, ()), ((gb, goods), ("--encoding", "GB18030")))]
    assert dry[0] == dry[1] and dry[0][0] == 0 and "requests  prompt tokens" in dry[0][1]
    assert not (tmp_path / "dry").exists()

    # without the flag, or with a name Python does not know: one line, nothing written
    for flags, said in (((), f"batch: error: {gb.name} line 2: not UTF-8 (byte 0x"),
                        (("--encoding", "no-such-codec"), "batch: error: --encoding: unknown encoding 'no-such-codec'")):
        rc, err = prepare(capsys, (gb, goods), tmp_path / "refused", url, *flags)
        assert rc == 2 and len(err.strip().splitlines()) == 1 and err.startswith(said), err
        assert not (tmp_path / "refused").exists()
    assert "pass --encoding gb18030" in prepare(capsys, (gb, goods), tmp_path / "refused", url)[1]

    # the reference's files name rows of that same file: --encoding reads it for them too
    ref = tmp_path / "reference-entry.jsonl"
    ref.write_text(reference_line("sentry_v3_i0_c0") + "\n", encoding="utf-8")
    reference = ("import", "--run", str(gb_run), "--id-scheme", "reference", "--pitches", str(gb), "--goods",
                 str(goods), str(ref))
    rc, err = batch(capsys, *reference)
    assert rc == 2 and len(err.strip().splitlines()) == 1 and f"{gb.name} line 2: not UTF-8" in err
    assert records(gb_run) == []
    rc, err = batch(capsys, *reference, "--encoding", "gb18030")
    assert rc == 0 and "imported 1 ok" in err, err
    assert [r["id"] for r in records(gb_run)] == ["entry:100:Z"]


def test_prepare_merges_extra_body_into_every_line_and_the_manifest(tmp_path, capsys, server, env, inputs):
    """``--extra-body`` as bin/score takes it (e.g. GLM's thinking switch): in each line's body, and kept."""
    srv = server()
    run = tmp_path / "run"
    rc, err = prepare(capsys, inputs, run, srv.url, "--extra-body", '{"thinking": {"type": "disabled"}}')
    assert rc == 0, err
    lines = [json.loads(line) for s in state(run)["shards"] for line in (run / "batch" / s["name"]).read_text().splitlines()]
    assert len(lines) == N_REQUESTS and all(r["body"]["thinking"] == {"type": "disabled"} for r in lines)
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["params"]["extra_body"] == {"thinking": {"type": "disabled"}}
    # another body is another run: refused, nothing rewritten
    before = {p.name: p.read_bytes() for p in (run / "batch").iterdir() if p.is_file()}
    rc, err = prepare(capsys, inputs, run, srv.url)
    assert rc == 2 and "extra_body" in err, err
    assert {p.name: p.read_bytes() for p in (run / "batch").iterdir() if p.is_file()} == before


def test_an_import_that_died_before_saving_its_state_takes_nothing_twice(tmp_path, capsys, server, env, inputs):
    """The records are written, then state.json: a process killed between the two leaves records the
    state does not know of. The checkpoint names each record's file, so the rerun skips them."""
    srv = server(error_every=9, nonjson_every=7, shuffle=True)
    run, ours, mixed = mixed_run(tmp_path, capsys, inputs, srv)
    f = tmp_path / "mixed.jsonl"
    f.write_text("\n".join(mixed) + "\n")
    state_file = run / "batch" / "state.json"
    before = state_file.read_bytes()

    assert import_(capsys, run, str(f))[0] == 1
    first = records(run)
    assert {r["status"] for r in first} == {"ok", "invalid", "error"}
    state_file.write_bytes(before)  # as if the process had died before saving the state

    rc, err = import_(capsys, run, str(f))
    assert rc == 1 and f"{len(ours)} line(s) imported before from the same file, skipped" in err, err
    assert records(run) == first  # no invalid or failed line written again
    rc, err = import_(capsys, run, str(f), "--accept-model", OTHER)
    recs = records(run)
    assert len(recs) == len({r["id"] for r in recs}) == N_REQUESTS, err
    # the next prepare re-asks each unusable reply once: it counts one invalid record, not two
    invalid = [r for r in recs if r["status"] == "invalid"]
    assert invalid and all(r["reasks"] == 0 for r in invalid)
