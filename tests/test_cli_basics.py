"""Command shims and the one-line error contract of every command."""

from __future__ import annotations

import argparse
import configparser
import importlib.util
import inspect
import os
import subprocess
import sys
from pathlib import Path

import pytest

from liveroom import __version__, cli, cliargs
from liveroom.async_client.providers import DEFAULT_BASE_URL
from liveroom.data.inputs import load_pitches
from liveroom.errors import InputError, LiveroomError

ROOT = Path(__file__).resolve().parent.parent
COMMANDS = sorted(p.name for p in (ROOT / "bin").iterdir() if not p.name.startswith("."))


UMBRELLA = "liveroom"  # bin/liveroom: runs the others


def entry_of(cmd: str):
    return getattr(cli, cmd.replace("-", "_") + "_main")


def module_of(cmd: str) -> str:
    """The module whose ``main`` the command runs, as liveroom.cli names it."""
    rel = inspect.getclosurevars(entry_of(cmd)).nonlocals["module"]
    return importlib.util.resolve_name(rel, "liveroom")


def test_there_are_commands():
    assert {"score", "collect", "train", "predict", UMBRELLA} <= set(COMMANDS)
    assert sorted(cli.COMMANDS) == [c for c in COMMANDS if c != UMBRELLA]  # liveroom --help lists each


@pytest.mark.parametrize("cmd", COMMANDS)
def test_shim_is_an_executable_python3_script(cmd):
    path = ROOT / "bin" / cmd
    assert os.access(path, os.X_OK), f"bin/{cmd} is not executable"
    text = path.read_text(encoding="utf-8")
    assert text.startswith("#!/usr/bin/env python3\n")
    assert f"from liveroom.cli import {cmd.replace('-', '_')}_main" in text


def test_shims_match_the_installed_entry_points():
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg", encoding="utf-8")
    scripts = {}
    for line in cfg["options.entry_points"]["console_scripts"].strip().splitlines():
        name, target = (s.strip() for s in line.split("="))
        scripts[name] = target
    expected = {f"liveroom-{c}": f"liveroom.cli:{c.replace('-', '_')}_main" for c in COMMANDS if c != UMBRELLA}
    assert scripts == {**expected, UMBRELLA: "liveroom.cli:liveroom_main"}


@pytest.mark.parametrize("cmd", COMMANDS)
def test_help_and_version_exit_zero(cmd):
    module = module_of(cmd) if cmd != UMBRELLA else "liveroom.cli"
    if importlib.util.find_spec(module) is None:
        pytest.skip(f"bin/{cmd}: {module} is not written yet")
    env = {**os.environ, "PYTHONPATH": ""}
    for flag in ("--help", "--version"):
        proc = subprocess.run([sys.executable, str(ROOT / "bin" / cmd), flag], capture_output=True, text=True,
                              timeout=60, env=env, cwd=ROOT)
        assert proc.returncode == 0, proc.stderr
        assert "Traceback" not in proc.stderr
        if flag == "--help":
            assert "usage" in proc.stdout.lower() and "--version" in proc.stdout
        else:  # the package's version, on stdout
            assert proc.stdout == (f"liveroom {__version__}\n" if cmd == UMBRELLA
                                   else f"{cmd} (liveroom {__version__})\n"), proc.stdout


# --------------------------------------------------------------------------- cli.run

def test_run_passes_the_exit_status_through():
    assert cli.run(lambda argv: 0, [], "demo") == 0
    assert cli.run(lambda argv: 3, [], "demo") == 3
    seen = []
    cli.run(lambda argv: seen.append(argv) or 0, ["--x", "1"], "demo")
    assert seen == [["--x", "1"]]


@pytest.mark.parametrize("exc", [LiveroomError, InputError])
def test_run_turns_an_error_into_one_line_and_status_2(capsys, exc):
    def main(argv):
        raise exc("pitches.csv line 5: start '2024-13-45 99:99' is not YYYY-MM-DD HH:MM")

    assert cli.run(main, [], "score") == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err == "score: error: pitches.csv line 5: start '2024-13-45 99:99' is not YYYY-MM-DD HH:MM\n"


def test_run_reports_a_missing_input_file(capsys, tmp_path):
    missing = tmp_path / "gone.csv"

    def main(argv):
        load_pitches(argv[0])
        return 0

    assert cli.run(main, [str(missing)], "collect") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith("collect: error: ") and err.rstrip().endswith(f"{missing}: no such file")


def test_run_does_not_hide_programming_errors():
    def main(argv):
        raise ZeroDivisionError("bug")

    with pytest.raises(ZeroDivisionError):
        cli.run(main, [], "demo")


def test_run_interrupt_is_status_130(capsys):
    def main(argv):
        raise KeyboardInterrupt

    assert cli.run(main, [], "score") == 130
    assert "interrupted" in capsys.readouterr().err


def test_command_entry_runs_the_module_main(monkeypatch, capsys):
    import types

    fake = types.ModuleType("liveroom._fake_cmd")

    def main(argv):
        raise InputError(f"bad {argv}")

    fake.main = main
    monkeypatch.setitem(sys.modules, "liveroom._fake_cmd", fake)
    entry = cli._command("._fake_cmd", "fake-cmd")
    assert entry.__name__ == "fake_cmd_main"
    assert entry(["x"]) == 2
    assert capsys.readouterr().err == "fake-cmd: error: bad ['x']\n"


def test_run_reports_an_unwritable_path_in_one_line(capsys, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")

    def main(argv):
        (blocker / "sub").mkdir(parents=True)  # a file stands where a directory must go
        return 0

    assert cli.run(main, [], "collect") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith("collect: error: ") and str(blocker) in err


# ----------------------------------------------------------------------------- checked numbers, endpoint, key

def parse_one(capsys, kind, value: str):
    """(value, None) or (None, the one stderr line) of ``--n value`` read with ``type=kind``."""
    p = argparse.ArgumentParser(prog="cmd")
    p.add_argument("--n", type=kind)
    try:
        return p.parse_args(["--n", value]).n, None
    except SystemExit as e:
        assert e.code == 2
        err = capsys.readouterr().err.strip().splitlines()
        return None, err[-1]


@pytest.mark.parametrize("kind, good, bad", [
    (cliargs.positive_int, [("1", 1), ("64", 64)], ["0", "-3", "1.5", "x", ""]),
    (cliargs.non_negative_int, [("0", 0), ("6", 6)], ["-1", "2.0", "nan"]),
    (cliargs.positive_float, [("0.5", 0.5), ("120", 120.0), ("1e3", 1000.0)], ["0", "-0.1", "nan", "x"]),
    (cliargs.non_negative_float, [("0", 0.0), ("2.5", 2.5)], ["-1", "nan"]),
    (cliargs.number(float, 0, 1, hi_open=True), [("0", 0.0), ("0.99", 0.99)], ["1", "-0.1"]),
])
def test_number_types_accept_and_refuse_naming_the_flag(capsys, kind, good, bad):
    for text, value in good:
        assert parse_one(capsys, kind, text) == (value, None)
    for text in bad:
        value, line = parse_one(capsys, kind, text)
        assert value is None and line.startswith("cmd: error: argument --n: must be ") and repr(text) in line


def test_score_refuses_a_bad_number_before_reading_anything(capsys):
    from liveroom.scoring.score import build_parser

    for flag, value in [("--concurrency", "0"), ("--rpm", "-5"), ("--timeout", "0"), ("--max-retries", "-1"),
                        ("--max-reasks", "x")]:
        with pytest.raises(SystemExit) as e:
            build_parser().parse_args(["--pitches", "p.csv", "--out", "o", flag, value])
        assert e.value.code == 2
        assert f"score: error: argument {flag}: must be " in capsys.readouterr().err
    args = build_parser().parse_args(["--pitches", "p.csv", "--out", "o"])
    assert (args.concurrency, args.max_retries, args.max_reasks, args.timeout, args.rpm) == (64, 6, 2, 120.0, None)


def test_the_endpoint_is_the_flag_then_the_environment_then_the_default(monkeypatch):
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    assert cliargs.resolve_endpoint(None) == cliargs.Endpoint(DEFAULT_BASE_URL, None)
    monkeypatch.setenv("OPENAI_BASE_URL", "http://env/v1")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-secret-value")
    assert cliargs.resolve_endpoint(None).base_url == "http://env/v1"
    got = cliargs.resolve_endpoint("http://flag/v1")
    assert (got.base_url, got.api_key) == ("http://flag/v1", "sk-secret-value")
    assert "sk-secret" not in repr(got)
    monkeypatch.setenv("OPENAI_API_KEY", "")
    assert cliargs.api_key() is None
