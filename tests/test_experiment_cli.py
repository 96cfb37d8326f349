"""bin/experiment's arguments: --help and refused values answer without torch, in one line."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from liveroom.cli import experiment_main
from liveroom.experiment.arms import Experiment, parse_seeds

CASES = [
    (["--help"], 0, ""),
    (["--pitches", "p.csv", "--out", "o", "--arms", "tabular,gpt"], 2, "unknown arm 'gpt'"),
    (["--pitches", "p.csv", "--out", "o", "--arms", "llm,llm"], 2, "named twice"),
    (["--pitches", "p.csv", "--out", "o", "--seeds", "4-2"], 2, "FROM <= TO"),
    (["--pitches", "p.csv", "--out", "o", "--seeds", "a"], 2, "expected seeds like 0-4"),
    (["--pitches", "p.csv", "--out", "o", "--epochs", "0"], 2, "--epochs"),
    (["--pitches", "p.csv", "--out", "o"], 2, "--features FEATURES_DIR is required"),
]


@pytest.mark.parametrize("argv, status, message", CASES, ids=[str(i) for i in range(len(CASES))])
def test_arguments_answered_without_torch(argv, status, message):
    code = ("import json, sys\n"
            "from liveroom.cli import experiment_main\n"
            "try:\n"
            f"    status = experiment_main({argv!r})\n"
            "except SystemExit as e:\n"
            "    status = e.code\n"
            "print(json.dumps([status, [m for m in ('torch', 'matplotlib') if m in sys.modules]]), file=sys.__stderr__)\n")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    got, loaded = json.loads(p.stderr.splitlines()[-1])
    assert got == status and loaded == []
    if message:
        assert message in p.stderr and "Traceback" not in p.stderr


def test_seeds_and_train_command():
    assert parse_seeds("0-4") == [0, 1, 2, 3, 4] and parse_seeds("0-2,7") == [0, 1, 2, 7] and parse_seeds("3") == [3]
    exp = Experiment("p.csv", "o", "f", arms=["tabular", "reference"], seeds=[1], epochs=10, patience=4, hidden=32)
    assert exp.train_argv("tabular", 1, "m") == ["--pitches", "p.csv", "--out", "m", "--seed", "1", "--epochs", "10",
                                                 "--patience", "4", "--hidden", "32", "--inputs", "tabular",
                                                 "--no-debias"]
    ref = exp.config("reference", 1)
    assert (ref.temperature, ref.patience, ref.select_best, ref.kl_schedule) == (500.0, 0, False, "reference")
    assert exp.config("tabular", 1).features is None and exp.config("tabular", 1).patience == 4


def test_missing_pitches_is_one_line(tmp_path, capsys):
    assert experiment_main(["--pitches", str(tmp_path / "none.csv"), "--out", str(tmp_path / "o"),
                            "--arms", "tabular"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "none.csv" in err


def test_cuda_without_cuda_is_one_line(tmp_path, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    from liveroom.synthetic import make_synthetic, write_synthetic

    write_synthetic(tmp_path / "d", *make_synthetic(60, seed=1))
    assert experiment_main(["--pitches", str(tmp_path / "d" / "pitches.csv"), "--out", str(tmp_path / "o"),
                            "--arms", "tabular", "--device", "cuda:0"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "CUDA is not available" in err
