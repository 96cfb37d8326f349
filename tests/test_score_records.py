"""Records are whole or absent (issue row F4 and what was seen beside it).

A disk that fills and frees while another process writes, a checkpoint line
damaged mid-file, a collect that cannot finish writing, a rerun over a
complete run on read-only media. The filling disk is a small tmpfs mounted in
a private mount namespace (``unshare -rm``: no root needed) with a second
process filling and freeing it; the read-only medium a read-only bind mount.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from aiohttp import web

from kit import (
    STAGES,
    Server,
    collect,
    completion,
    env_for,
    file_size_limit,
    have_namespaces,
    make_inputs,
    ok_ids,
    one_line_error,
    records,
    score,
    score_cmd,
)
from liveroom.async_client.record import Record, dumps
from liveroom.async_client.run_dir import RunDir

needs_namespaces = pytest.mark.skipif(not have_namespaces(), reason="no private mount namespaces (unshare -rm)")

#: fills the disk holding argv[1] until it is full, holds it full a moment, frees it, again and again,
#: until it is killed or its shell is gone
FILLER = textwrap.dedent("""
    import os, sys, time
    path = os.path.join(sys.argv[1], "filler")
    shell = os.getppid()
    while os.getppid() == shell:
        try:
            with open(path, "wb") as f:
                while True:
                    f.write(b"x" * 4096)
                    f.flush()
        except OSError:
            pass
        time.sleep(0.03)
        os.unlink(path)
        time.sleep(0.03)
""")


async def slowish(request: web.Request, body: dict) -> web.StreamResponse:
    await asyncio.sleep(0.01)
    return web.json_response(completion())


@needs_namespaces
def test_a_disk_that_fills_and_frees_never_leaves_a_record_inside_another(tmp_path):
    """F4: RUN_DIR on a 256 KB tmpfs that another process fills and frees every few milliseconds."""
    pitches, goods = make_inputs(tmp_path, 8)
    srv = Server(slowish)
    disk, kept = tmp_path / "disk", tmp_path / "kept"
    disk.mkdir()
    (tmp_path / "filler.py").write_text(FILLER)
    cmd = " ".join(f"'{c}'" for c in score_cmd(pitches, goods, disk / "run", *STAGES, "--concurrency", "8"))
    # the filler is stopped by its pid and waited for (``kill %1`` would kill nothing: sh -c has no job control)
    script = (f"mount -t tmpfs -o size=256k tmpfs '{disk}' && mkdir '{disk}/run' || exit 1; "
              f"'{sys.executable}' '{tmp_path / 'filler.py'}' '{disk}' & filler=$!; sleep 0.2; "
              f"{cmd} 2> '{tmp_path / 'stderr'}'; echo $? > '{tmp_path / 'rc'}'; "
              f"kill $filler; wait $filler; cp -a '{disk}/run' '{kept}'")
    try:
        for _ in range(5):  # the disk must have been full at a write at least once
            subprocess.run(["unshare", "-rm", "sh", "-c", script], env=env_for(srv.url), timeout=120, check=True)
            rc, err = int((tmp_path / "rc").read_text()), (tmp_path / "stderr").read_text()
            if rc == 2:
                break
            subprocess.run(["rm", "-rf", str(kept)], check=True)
        assert rc == 2, err
        assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
        assert "No space left on device" in err and "free space on the disk" in err, err
        for f in kept.glob("*.jsonl"):
            data = f.read_bytes()
            assert not data or data.endswith(b"\n")
            for line in data.splitlines():
                assert line.count(b'{"id":') == 1, line[:200]  # never a record inside another
                json.loads(line)
        before = ok_ids(kept)
        assert len(before) == len(set(before))

        p = score(pitches, goods, kept, srv.url, *STAGES, "--concurrency", "8")
        assert p.returncode == 0, p.stderr
        ids = ok_ids(kept)
        assert len(ids) == len(set(ids)) == 8 * 2 * 8
        c = collect(pitches, kept, tmp_path / "f", "--allow-missing")
        assert c.returncode == 0 and "entry: 64/64 cells" in c.stderr and "read: 64/64" in c.stderr, c.stderr
    finally:
        srv.stop()


def _rec(rid: str, persona: str, index: int) -> Record:
    return Record(rid, "ok", {"stage": "entry", "index": index, "persona": persona}, {"entry": 4},
                  '{"want_to_enter": 4}', {"total_tokens": 9}, 1, 0, 12.5, None, 1700000000.0, "gpt-4o-mini")


def test_a_line_damaged_mid_file_is_never_done_and_collect_names_it(tmp_path):
    """The damage the issue saw: a record cut short and the next written after it on the same line."""
    pitches, goods = make_inputs(tmp_path, 2)
    srv = Server()
    run = tmp_path / "run"
    try:
        assert score(pitches, goods, run, srv.url, "--stages", "entry").returncode == 0
        f = run / "entry.jsonl"
        lines = f.read_bytes().splitlines(keepends=True)
        a, b = json.loads(lines[4]), json.loads(lines[5])
        cut = lines[4][: lines[4].index(b'"persona":"') + 15]  # ..."persona":"exquisit
        f.write_bytes(b"".join(lines[:4]) + cut + lines[5] + b"".join(lines[6:]))  # 15 lines, one of them two
        assert f.read_bytes().count(b"\n") == 15

        done = RunDir(run).done("entry")
        assert a["id"] not in done and b["id"] not in done and len(done) == 14

        c = collect(pitches, run, tmp_path / "f")
        assert c.returncode == 2
        assert "1 damaged checkpoint line(s) skipped: entry.jsonl line 5" in c.stderr
        assert "1 damaged line(s), e.g. entry.jsonl line 5" in c.stderr.splitlines()[-1]
        c = collect(pitches, run, tmp_path / "f", "--allow-missing")
        assert c.returncode == 0, c.stderr
        cov = json.loads((tmp_path / "f" / "coverage.json").read_text())
        assert cov["damaged"] == {"entry.jsonl": [5]} and cov["stages"]["entry"]["missing"] == 2

        p = score(pitches, goods, run, srv.url, "--stages", "entry")  # asks exactly the two again
        assert p.returncode == 0, p.stderr
        assert srv.requests == 16 + 2
        assert {json.loads(x)["id"] for x in f.read_bytes().splitlines()[-2:]} == {a["id"], b["id"]}
        c = collect(pitches, run, tmp_path / "f", "--allow-missing")
        assert c.returncode == 0 and "entry: 16/16 cells" in c.stderr
    finally:
        srv.stop()


def test_the_scan_checks_whole_lines_in_a_large_file(tmp_path):
    """Damage far into a file that the fast path reads a block at a time."""
    personas = ("Z", "exquisite_mother", "new_white", "deep_middle")
    good = [dumps(_rec(f"entry:{i}:{p}", p, i)) for i in range(3000) for p in personas]
    damaged = good[7000][:60] + good[7001]
    data = b"".join(good[:7000]) + damaged + b"".join(good[7002:]) + b"not a record at all\n" + good[0][:30]
    (tmp_path / "entry.jsonl").write_bytes(data)
    done = RunDir(tmp_path).done("entry")
    assert len(done) == 12000 - 2
    broken = {json.loads(good[7000])["id"], json.loads(good[7001])["id"]}
    assert not broken & done


def tree_state(d: Path) -> dict[str, tuple[int, int, int, str]]:
    """Every file's (inode, size, mtime_ns, sha256): what a write would change."""
    return {str(p.relative_to(d)): (p.stat().st_ino, p.stat().st_size, p.stat().st_mtime_ns,
                                    hashlib.sha256(p.read_bytes()).hexdigest())
            for p in sorted(d.rglob("*")) if p.is_file()}


def test_a_rerun_with_nothing_to_do_writes_nothing(tmp_path):
    pitches, goods = make_inputs(tmp_path, 2)
    srv = Server()
    run = tmp_path / "run"
    try:
        assert score(pitches, goods, run, srv.url, *STAGES).returncode == 0
        before = tree_state(run)
        p = score(pitches, goods, run, srv.url, *STAGES)
        assert p.returncode == 0 and "nothing sent" in p.stdout
        after = tree_state(run)
        lock = ".lock"  # the one file a command touches: the lock says who holds the run while it runs
        assert {k: v for k, v in after.items() if k != lock} == {k: v for k, v in before.items() if k != lock}
        assert after[lock][3] == before[lock][3]  # and it names nobody again
        assert srv.requests == 32
    finally:
        srv.stop()


@needs_namespaces
def test_a_rerun_over_a_complete_run_on_read_only_media_works(tmp_path):
    pitches, goods = make_inputs(tmp_path, 2)
    srv = Server()
    run = tmp_path / "run"
    try:
        assert score(pitches, goods, run, srv.url, *STAGES).returncode == 0
        cmd = " ".join(f"'{c}'" for c in score_cmd(pitches, goods, run, *STAGES))
        script = (f"mount --bind '{run}' '{run}' && mount -o remount,bind,ro '{run}' && "
                  f"{{ touch '{run}/probe' 2>/dev/null && echo writable; true; }} && exec {cmd}")
        p = subprocess.run(["unshare", "-rm", "sh", "-c", script], env=env_for(srv.url), capture_output=True,
                           text=True, timeout=120)
        assert "writable" not in p.stdout
        assert p.returncode == 0, p.stderr
        assert "nothing sent" in p.stdout and "Traceback" not in p.stderr
        assert srv.requests == 32
    finally:
        srv.stop()


def test_a_failed_collect_leaves_the_old_files_as_they_were(tmp_path):
    """A collect whose writes fail (the file-size limit as a full disk) replaces nothing and leaves no part."""
    pitches, goods = make_inputs(tmp_path, 40)
    srv = Server()
    run, out = tmp_path / "run", tmp_path / "features"
    try:
        assert score(pitches, goods, run, srv.url, "--stages", "entry").returncode == 0
        assert collect(pitches, run, out, "--allow-missing").returncode == 0
        old = {p.name: p.read_bytes() for p in out.iterdir()}
        assert all(old.values())
        assert score(pitches, goods, run, srv.url, *STAGES).returncode == 0  # more cells: the next collect differs
        p = collect(pitches, run, out, "--allow-missing", preexec_fn=file_size_limit(1500))
        line = one_line_error(p)
        assert f"cannot write {out}/" in line and "File too large" in line, line
        assert {q.name: q.read_bytes() for q in out.iterdir()} == old  # nothing replaced, no temporary left
        assert collect(pitches, run, out, "--allow-missing").returncode == 0
        assert not np.isnan(np.load(out / "read.npy")).any()
    finally:
        srv.stop()


def test_records_of_before_the_model_field_still_read_and_resume(tmp_path):
    """A checkpoint line written before records kept the served model."""
    old = b'{"id":"entry:7:Z","status":"ok","stage":"entry","index":7,"persona":"Z","scores":{"entry":4},' \
          b'"reply":"{}","usage":{},"attempts":1,"reasks":0,"latency_ms":1.0,"error":null,"t":1.0}\n'
    (tmp_path / "entry.jsonl").write_bytes(old)
    cp = RunDir(tmp_path)
    assert cp.done("entry") == {"entry:7:Z"}
    (rec,) = cp.records("entry")
    assert rec.model is None and rec.scores == {"entry": 4}
    assert os.path.getsize(tmp_path / "entry.jsonl") == len(old)


def test_every_record_keeps_the_model_that_answered(tmp_path):
    pitches, goods = make_inputs(tmp_path, 1)

    async def dated(request: web.Request, body: dict) -> web.StreamResponse:
        return web.json_response(completion(model="gpt-4o-mini-2024-07-18"))

    srv = Server(dated)
    try:
        p = score(pitches, goods, tmp_path / "run", srv.url, "--stages", "entry")
        assert p.returncode == 0 and "warning" not in p.stderr, p.stderr  # a dated version is the same model
        assert {r["model"] for r in records(tmp_path / "run")} == {"gpt-4o-mini-2024-07-18"}
    finally:
        srv.stop()
