"""What ``bin/batch`` tells a user to do next, and what it refuses to guess.

``import`` takes ``--pitches``, ``--goods`` and ``--encoding`` for the
reference's ids only: given without ``--id-scheme reference`` they are refused
in one line, nothing written, rather than ignored. ``fetch`` marks a batch
finished once it has imported it, so lines of another model that it left out
are taken by ``bin/batch import --accept-model`` of the downloaded files: the
hint prints that command with the run's real paths, and the command works.
Real files, real HTTP: the Batch API simulator on loopback.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path

from kit import BATCH_REQUESTS as N_REQUESTS
from kit import BATCH_SUBMIT as SUBMIT
from kit import BATCH_WAIT as WAIT
from kit import batch_inline as batch
from kit import downloaded, records
from kit import prepare_inline as prepare

OTHER = "glm-4-flash"  # another model than the run's (the default, gpt-4o-mini)


def import_(capsys, run: Path, *files_and_flags: str) -> tuple[int, str]:
    return batch(capsys, "import", "--run", str(run), *files_and_flags)


def tree(run: Path) -> dict[str, bytes]:
    """Every file of the run directory and its bytes."""
    return {str(p.relative_to(run)): p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file()}


def test_import_refuses_the_reference_flags_without_the_reference_scheme(tmp_path, capsys, server, env, inputs):
    srv = server()
    run = tmp_path / "run"
    assert prepare(capsys, inputs, run, srv.url, "--stages", "entry")[0] == 0
    assert batch(capsys, "submit", "--run", str(run), *SUBMIT)[0] == 0
    output, _ = downloaded(srv, run)
    f = tmp_path / "output.jsonl"  # this run's own replies, downloaded by hand
    f.write_text("\n".join(output) + "\n")
    pitches, goods = map(str, inputs)
    before = tree(run)
    for flags, named in ((("--pitches", pitches), "--pitches"),
                         (("--goods", goods), "--goods"),
                         (("--encoding", "gb18030"), "--encoding"),
                         (("--id-scheme", "run", "--encoding", "no-such-codec", "--pitches", pitches),
                          "--encoding, --pitches"),
                         (("--pitches", pitches, "--goods", goods, "--encoding", "utf-8"),
                          "--encoding, --goods, --pitches")):
        rc, err = import_(capsys, run, *flags, str(f))
        assert rc == 2 and err == f"batch: error: {named}: only with --id-scheme reference\n", (flags, err)
        assert tree(run) == before and records(run) == []

    # the reference's scheme still needs the pitches file its ids number the rows of
    rc, err = import_(capsys, run, "--id-scheme", "reference", "--goods", goods, str(f))
    assert rc == 2 and err.startswith("batch: error: --id-scheme reference needs --pitches CSV"), err
    assert tree(run) == before

    rc, err = import_(capsys, run, str(f))  # without them, the same file comes in
    assert rc == 0 and f"imported {len(output)} ok, 0 invalid, 0 error" in err, err
    assert len(records(run)) == len(output)


def test_fetch_of_a_batch_of_another_model_prints_the_import_that_takes_its_lines(tmp_path, capsys, server, env,
                                                                                 inputs):
    srv = server(error_every=9, shuffle=True)
    run = tmp_path / "the run"  # a space in it: the command is quoted for the shell
    # the run is for the default model, but every line asks OTHER, which answers: as a provider that
    # serves another model than the one named
    rc, err = prepare(capsys, inputs, run, srv.url, "--max-requests", str(N_REQUESTS // 2 + 1),
                      "--extra-body", json.dumps({"model": OTHER}))
    assert rc == 0 and "in 2 file(s)" in err, err
    assert batch(capsys, "submit", "--run", str(run), *SUBMIT)[0] == 0
    rc, err = batch(capsys, "fetch", "--run", str(run), *WAIT)
    assert rc == 1, err
    failed = len(records(run))  # each batch's error file came in; its output file waits for the model
    assert failed and {r["status"] for r in records(run)} == {"error"}
    assert f"{N_REQUESTS - failed} line(s) of another model not imported" in err
    assert "batch: other model: " in err and f": {OTHER} (" in err

    (hint,) = [line for line in err.splitlines() if "bin/batch import" in line]
    assert "fetch does not read again" in hint and "NAME the model named under 'other model' above" in hint
    command = shlex.split(hint[hint.index("bin/batch import"):])
    outputs = [str(run / "batch" / f"requests-000{n}.output.jsonl") for n in (1, 2)]
    assert command == ["bin/batch", "import", "--run", str(run), "--accept-model", "NAME", *outputs]
    assert all(Path(p).is_file() for p in outputs)

    assert batch(capsys, "fetch", "--run", str(run), *WAIT, "--accept-model", OTHER) == (0, "batch: no batch to fetch\n")
    rc, err = batch(capsys, *[OTHER if a == "NAME" else a for a in command[1:]])
    assert rc == 0, err
    assert f"imported {N_REQUESTS - failed} ok, 0 invalid, 0 error" in err and "another model" not in err
    recs = records(run)
    assert len(recs) == len({r["id"] for r in recs}) == N_REQUESTS
    assert {r["model"] for r in recs if r["status"] == "ok"} == {OTHER}
