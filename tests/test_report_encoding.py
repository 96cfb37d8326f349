"""bin/report on a model trained with ``--encoding gb18030``, and its own ``--encoding``.

The model's own pitches file is read in the encoding it was trained with; a
file given with ``--pitches`` (for the models and for ``--run``) in the one
``--encoding`` names, UTF-8 by default. An unknown name is one line before
anything is read.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from liveroom.async_client.record import OK, Record
from liveroom.async_client.run_dir import RunDir
from liveroom.cli import run as run_command
from liveroom.cli import train_main
from liveroom.data.inputs import ENCODING_HELP
from liveroom.data.personas import DEFAULT_PERSONAS, PERSONA_KEYS, personas_json
from liveroom.prompts.stages import STAGES, request_id
from liveroom.report.cli import main
from liveroom.report.gather import load_model_result, load_run_result
from liveroom.synthetic import make_synthetic, write_synthetic

ROOT = Path(__file__).resolve().parent.parent
N = 200      # synthetic pitches
N_RUN = 5    # of them scored in the run
HINT = "looks like GB18030/GBK: pass --encoding gb18030"


@pytest.fixture(scope="module")
def syn(tmp_path_factory):
    """Synthetic pitches (Chinese text) re-encoded as gbk.csv (GB18030), with their features."""
    d = tmp_path_factory.mktemp("syn")
    write_synthetic(d, *make_synthetic(N, seed=4))
    raw = (d / "pitches.csv").read_text(encoding="utf-8").encode("gb18030")
    with pytest.raises(UnicodeDecodeError):  # else the file would prove nothing
        raw.decode("utf-8")
    (d / "gbk.csv").write_bytes(raw)
    return d


@pytest.fixture(scope="module")
def model(syn, tmp_path_factory):
    out = tmp_path_factory.mktemp("model") / "m"
    argv = ["--pitches", str(syn / "gbk.csv"), "--features", str(syn), "--out", str(out), "--encoding", "gb18030",
            "--epochs", "2", "--hidden", "8"]
    assert train_main(argv) == 0
    return out


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A run whose entry stage is done for the first N_RUN pitches."""
    d = tmp_path_factory.mktemp("run")
    cp = RunDir(d)
    cp.open({"format": 1, "model": "tiny", "endpoint": "127.0.0.1", "params": {},
             "groups": {"entry": STAGES["entry"].version}, "personas": personas_json(DEFAULT_PERSONAS),
             "inputs": {}})
    for r in range(N_RUN):
        for key in PERSONA_KEYS:
            meta = {"stage": "entry", "index": r, "persona": key}
            cp.write("entry", Record(request_id("entry", r, key), OK, meta, {"entry": 3}, "{}",
                                     {"prompt_tokens": 10, "completion_tokens": 1}))
    cp.close()
    return d


def _fails(capsys, argv):
    """The one stderr line of a bin/report that exits 2."""
    capsys.readouterr()
    assert run_command(main, argv, "report") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return err


def test_a_gb18030_model_is_reported_from_the_file_it_was_trained_on(model, tmp_path, capsys):
    out = tmp_path / "r.html"
    capsys.readouterr()
    assert run_command(main, ["--model", str(model), "--out", str(out)], "report") == 0, capsys.readouterr().err
    page = out.read_text(encoding="utf-8")
    assert page.count("<img ") == 3 and (tmp_path / "r-learning-curves.png").exists()
    # the test split is the one training saw: the page's metrics are the model's own
    m = load_model_result(model)
    assert m.config.encoding == "gb18030"
    summary = json.loads((model / "summary.json").read_text())
    assert len(m.y_true) == summary["n_pitches"]["test"]
    got = m.test_metrics()
    for key in ("rmse_log_gmv", "kl_watch_batchmean", "kl_pay_batchmean"):
        assert got[key] == pytest.approx(summary["test"][key], rel=1e-4, abs=1e-5), key


def test_pitches_given_are_read_in_the_encoding_given(syn, model, run, tmp_path, capsys):
    out = ["--out", str(tmp_path / "r.html")]
    gbk = ["--pitches", str(syn / "gbk.csv")]
    err = _fails(capsys, ["--model", str(model), *gbk, *out])
    assert "gbk.csv line 2: not UTF-8" in err and HINT in err
    err = _fails(capsys, ["--run", str(run), *gbk, *out])
    assert "gbk.csv line 2: not UTF-8" in err and HINT in err
    assert not (tmp_path / "r.html").exists()

    argv = ["--model", str(model), "--run", str(run), *gbk, "--encoding", "gb18030", *out]
    assert run_command(main, argv, "report") == 0, capsys.readouterr().err
    assert (tmp_path / "r.html").read_text(encoding="utf-8").count("<img ") == 6
    entry = load_run_result(run, str(syn / "gbk.csv"), "gb18030").stages[0]
    assert (entry.ok, entry.missing) == (N_RUN * len(PERSONA_KEYS), (N - N_RUN) * len(PERSONA_KEYS))
    # the UTF-8 original needs no flag, and --encoding also names the model's own file's encoding
    assert run_command(main, ["--model", str(model), "--pitches", str(syn / "pitches.csv"), *out], "report") == 0
    assert run_command(main, ["--model", str(model), "--encoding", "GB18030", *out], "report") == 0


def test_unknown_encoding_is_one_line_before_any_work(tmp_path):
    nowhere = tmp_path / "nope"  # nothing here exists: reading anything first would fail otherwise
    out = tmp_path / "r.html"
    r = subprocess.run([sys.executable, str(ROOT / "bin" / "report"), "--model", str(nowhere), "--run", str(nowhere),
                        "--out", str(out), "--encoding", "nope"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stderr
    assert r.stderr == "report: error: --encoding: unknown encoding 'nope' (e.g. utf-8, gb18030)\n", r.stderr
    assert not out.exists() and not list(tmp_path.iterdir())


def test_encoding_help_is_the_shared_one(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    assert " ".join(ENCODING_HELP.split()) in " ".join(capsys.readouterr().out.split())
