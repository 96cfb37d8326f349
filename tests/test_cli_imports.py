"""``--help`` and a bad argument of the torch and matplotlib commands load neither.

Each case runs the command's entry point in a fresh interpreter and lists the
heavy libraries it holds afterwards: a refused argument is answered before the
model, the network or the plots are imported.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY = ("torch", "matplotlib")

CASES = [
    ("train", ["--help"], 0),
    ("train", ["--pitches", "p.csv", "--out", "m", "--epochs", "0"], 2),
    ("predict", ["--help"], 0),
    ("predict", ["--model", "m", "--pitches", "p.csv", "--out", "o.csv", "--no-such-flag"], 2),
    ("report", ["--help"], 0),
    ("report", ["--out", "r.html"], 2),  # neither --model nor --run: refused after parsing
    ("serve", ["--help"], 0),
    ("serve", ["--model", "m", "--port", "70000"], 2),
    ("liveroom", ["--help"], 0),  # the list of commands imports none of them
    ("liveroom", ["train", "--help"], 0),
]


def run_entry(command: str, argv: list[str]) -> tuple[int, list[str]]:
    """The exit status of ``bin/<command> argv`` and the heavy libraries it loaded."""
    entry = command.replace("-", "_") + "_main"
    code = ("import json, sys\n"
            f"from liveroom.cli import {entry}\n"
            "try:\n"
            f"    status = {entry}({argv!r})\n"
            "except SystemExit as e:\n"
            "    status = e.code\n"
            f"print(json.dumps([status, [m for m in {HEAVY!r} if m in sys.modules]]), file=sys.__stderr__)\n")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    status, loaded = json.loads(p.stderr.splitlines()[-1])
    return status, loaded


@pytest.mark.parametrize("command, argv, expected", CASES, ids=[f"{c}-{'help' if a[-1] == '--help' else 'bad'}-{i}"
                                                                  for i, (c, a, _) in enumerate(CASES)])
def test_help_and_bad_arguments_load_no_heavy_library(command, argv, expected):
    status, loaded = run_entry(command, argv)
    assert status == expected
    assert loaded == [], f"bin/{command} {' '.join(argv)} loaded {', '.join(loaded)}"
