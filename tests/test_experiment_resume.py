"""A killed experiment goes on from its last finished epoch and ends where an uninterrupted one ends.

bin/experiment runs in a real process, is killed with SIGKILL once it has
reported its third epoch, and is run again with the same command; its
results and every model's metrics and weights must equal those of a run
that was never interrupted.
"""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from liveroom.cli import experiment_main
from liveroom.synthetic import make_synthetic, write_synthetic

BIN = Path(__file__).resolve().parent.parent / "bin" / "experiment"
EPOCHS = 20


@pytest.fixture(scope="module")
def syn(tmp_path_factory):
    d = tmp_path_factory.mktemp("syn")
    write_synthetic(d, *make_synthetic(400, seed=4))
    return d


def _argv(syn, out):
    return ["--pitches", str(syn / "pitches.csv"), "--features", str(syn), "--out", str(out),
            "--arms", "tabular,llm+debias,reference", "--seeds", "0-1", "--epochs", str(EPOCHS), "--patience", "3",
            "--hidden", "16"]


def _metrics(path: Path) -> list[dict]:
    with path.open() as f:
        return [{k: v for k, v in r.items() if k != "seconds"} for r in csv.DictReader(f)]


def test_killed_run_resumes_to_the_same_result(syn, tmp_path, capsys):
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    assert experiment_main(_argv(syn, straight)) == 0
    progress = [line for line in capsys.readouterr().err.splitlines() if line.startswith("experiment: epoch")]
    assert progress[0].startswith(f"experiment: epoch 1/{EPOCHS}: 6 of 6 models training, ")
    assert all(" left" in line for line in progress)

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, str(BIN), *_argv(syn, killed)], stderr=subprocess.PIPE, text=True,
                            env=env)
    try:
        assert proc.stderr is not None
        for line in proc.stderr:
            if line.startswith("experiment: epoch 3/"):
                proc.send_signal(signal.SIGKILL)
                break
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not (killed / "results.csv").exists()
    saved = torch.load(killed / "state.pt", weights_only=True)
    assert 3 <= saved["epoch"] < EPOCHS

    again = subprocess.run([sys.executable, str(BIN), *_argv(syn, killed)], capture_output=True, text=True, env=env,
                           timeout=300)
    assert again.returncode == 0, again.stderr
    assert f"resuming after epoch {saved['epoch']}" in again.stderr
    assert (killed / "results.csv").read_text() == (straight / "results.csv").read_text()
    for model in sorted(p.name for p in (straight / "models").iterdir()):
        a, b = straight / "models" / model, killed / "models" / model
        assert _metrics(a / "metrics.csv") == _metrics(b / "metrics.csv"), model
        wa = torch.load(a / "best.pt", weights_only=True)["model"]
        wb = torch.load(b / "best.pt", weights_only=True)["model"]
        for k in wa:
            torch.testing.assert_close(wa[k], wb[k], rtol=0, atol=0)


def test_other_settings_in_out_are_refused(syn, tmp_path, capsys):
    out = tmp_path / "exp"
    argv = _argv(syn, out)
    argv[argv.index("--epochs") + 1] = "2"
    assert experiment_main(argv) == 0
    before = (out / "results.csv").read_text()
    capsys.readouterr()
    argv[argv.index("--hidden") + 1] = "8"
    assert experiment_main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "hidden: 16 there, 8 now" in err and "another --out" in err
    assert (out / "results.csv").read_text() == before
