"""One word for one thing on every command: ``--run`` for a run directory, ``--model-dir`` for a trained
model, the older spellings still read the same; every number refused in one line naming its flag; the
``liveroom`` command over them all."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from liveroom import __version__, cli
from liveroom.demo import parser as demo_parser
from liveroom.local_llm.cli import build_parser as local_llm_parser
from liveroom.report.cli import parser as report_parser
from liveroom.scoring.batch.cli import build_parser as batch_parser
from liveroom.scoring.score import build_parser as score_parser
from liveroom.serve.cli import build_parser as serve_parser
from liveroom.sim.server import build_parser as sim_parser
from liveroom.train.cli import parser as train_parser
from liveroom.train.predict import parser as predict_parser

ROOT = Path(__file__).resolve().parent.parent
PITCHES = ["--pitches", "p.csv"]

# (parser, the arguments before the flag, the new spelling, the old one, where the value lands)
ALIASES = [
    (score_parser, PITCHES, "--run", "--out", "run"),
    (batch_parser, ["prepare", *PITCHES], "--run", "--out", "run"),
    (serve_parser, ["--model-dir", "m"], "--run", "--cache", "run"),
    (serve_parser, [], "--model-dir", "--model", "model_dir"),
    (predict_parser, [*PITCHES, "--out", "o.csv"], "--model-dir", "--model", "model_dir"),
    (report_parser, ["--out", "r.html"], "--model-dir", "--model", "model_dir"),
    (train_parser, [*PITCHES, "--out", "m"], "--share-temperature", "--temperature", "temperature"),
    (sim_parser, [], "--served-model", "--model", "model"),
    (local_llm_parser, ["path"], "--local-model", "--model", "model"),
    (demo_parser, [], "--backend", "--llm", "backend"),
]
VALUE = {"temperature": "2.5", "model": "gemma3", "backend": "local"}


@pytest.mark.parametrize("parser, before, new, old, dest", ALIASES, ids=[f"{a[0]().prog}{a[2]}" for a in ALIASES])
def test_the_new_spelling_and_the_old_one_mean_the_same(parser, before, new, old, dest):
    value = VALUE.get(dest, "some/dir")
    got = [getattr(parser().parse_args([*before, flag, value]), dest) for flag in (new, old)]
    expected: object = float(value) if dest == "temperature" else value
    if parser is report_parser:
        expected = [expected]  # --model-dir is repeatable there
    assert got == [expected, expected]


@pytest.mark.parametrize("parser, before, new, old, dest", ALIASES, ids=[f"{a[0]().prog}{a[2]}" for a in ALIASES])
def test_help_shows_the_new_spelling_first(capsys, parser, before, new, old, dest):
    verb = before[:1] if parser in (batch_parser, local_llm_parser) else []  # the help of that verb
    with pytest.raises(SystemExit) as e:
        parser().parse_args([*verb, "--help"])
    assert e.value.code == 0
    flat = " ".join(capsys.readouterr().out.split())
    assert new in flat and f", {old}" in flat and flat.index(new) < flat.index(f", {old}")


@pytest.mark.parametrize("argv", [["submit", "--run", "r"], ["status", "--run", "r"], ["fetch", "--run", "r"],
                                  ["cancel", "--run", "r"], ["import", "--run", "r", "f.jsonl"]])
def test_every_batch_verb_takes_run(argv):
    assert batch_parser().parse_args(argv).run == "r"


# (entry point, argv, the flag named in the one line, what it says)
BAD_NUMBERS = [
    ("score", [*PITCHES, "--run", "r", "--grace", "-1"], "--grace", "a number of at least 0, got '-1'"),
    ("score", [*PITCHES, "--run", "r", "--progress-every", "0"], "--progress-every", "a number above 0, got '0'"),
    ("sim-server", ["--port", "65536"], "--port", "a whole number in [0, 65535], got '65536'"),
    ("sim-server", ["--p-429", "1.5"], "--p-429", "a number in [0, 1], got '1.5'"),
    ("sim-server", ["--latency-ms", "-5"], "--latency-ms", "a number of at least 0, got '-5'"),
    ("sim-server", ["--rpm-limit", "x"], "--rpm-limit", "a whole number of at least 0, got 'x'"),
    ("demo", ["--port", "0"], "--port", "a whole number in [1, 65534], got '0'"),
    ("demo", ["--n", "5"], "--n", "a whole number of at least 10, got '5'"),
    ("make-synthetic", ["--n", "0", "--out", "d"], "--n", "a whole number of at least 1, got '0'"),
    ("train", [*PITCHES, "--out", "m", "--seed", "-1"], "--seed", "a whole number of at least 0, got '-1'"),
    ("local-llm", ["serve", "--start-timeout", "0"], "--start-timeout", "a number above 0, got '0'"),
    ("serve", ["--model-dir", "m", "--port", "-1"], "--port", "a whole number in [0, 65535], got '-1'"),
]


@pytest.mark.parametrize("cmd, argv, flag, said", BAD_NUMBERS, ids=[f"{c}{f}" for c, _, f, _ in BAD_NUMBERS])
def test_a_bad_number_is_refused_in_one_line_naming_its_flag(capsys, cmd, argv, flag, said):
    with pytest.raises(SystemExit) as e:
        cli.COMMANDS[cmd][0](argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    prog = cmd if cmd != "local-llm" else "local-llm serve"
    assert err.splitlines()[-1] == f"{prog}: error: argument {flag}: must be {said}"
    assert "Traceback" not in err


def test_the_batch_simulator_checks_its_port(capsys):
    from liveroom.sim.batch_server import main

    with pytest.raises(SystemExit) as e:
        main(["--port", "-1"])
    assert e.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1] == ("batch-server: error: argument --port: must be a whole "
                                                        "number in [0, 65535], got '-1'")


def test_the_result_goes_to_stdout_and_nothing_else_is_said(capsys, tmp_path):
    assert cli.make_synthetic_main(["--n", "12", "--out", str(tmp_path / "syn")]) == 0
    out, err = capsys.readouterr()
    assert out == f"make-synthetic: wrote 12 pitches (pitches.csv, goods.json, the feature .npy files) to " \
                  f"{tmp_path / 'syn'}\n"
    assert err == "" and (tmp_path / "syn" / "pitches.csv").is_file()


# ----------------------------------------------------------------------------- the liveroom command

def liveroom(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "bin" / "liveroom"), *argv], capture_output=True, text=True,
                          timeout=60, cwd=ROOT)


def test_liveroom_help_lists_every_command_with_one_line():
    p = liveroom("--help")
    assert p.returncode == 0, p.stderr
    listed = p.stdout.split("commands (")[1].splitlines()[1:]
    names = sorted(c.name for c in (ROOT / "bin").iterdir() if c.name != "liveroom")
    assert sorted(line.split()[0] for line in listed if line.strip()) == names
    assert all(len(line.split()) > 2 for line in listed if line.strip())  # a name and a line of words


def test_liveroom_runs_the_command_with_its_arguments():
    via, direct = liveroom("score", "--help"), subprocess.run(
        [sys.executable, str(ROOT / "bin" / "score"), "--help"], capture_output=True, text=True, timeout=60)
    assert via.returncode == direct.returncode == 0 and via.stdout == direct.stdout
    bad = liveroom("score", "--pitches", "p.csv", "--run", "r", "--grace", "x")
    assert bad.returncode == 2 and bad.stderr.splitlines()[-1] == (
        "score: error: argument --grace: must be a number of at least 0, got 'x'")


def test_liveroom_refuses_an_unknown_command_in_one_line():
    p = liveroom("scor")
    assert p.returncode == 2 and p.stdout == ""
    assert p.stderr.splitlines()[-1].startswith("liveroom: error: argument COMMAND: invalid choice: 'scor'")
    none = liveroom()
    assert none.returncode == 2 and none.stderr.splitlines()[-1] == (
        "liveroom: error: a COMMAND is needed; `liveroom --help` lists them")


def test_the_version_is_the_package_s():
    p = liveroom("--version")
    assert (p.returncode, p.stdout) == (0, f"liveroom {__version__}\n")
    setup = (ROOT / "setup.cfg").read_text(encoding="utf-8")
    assert "version = attr: liveroom.__version__" in setup  # one place
