"""`bin/demo` end to end on a small data set, twice: the second run resumes."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pandas as pd

BIN = Path(__file__).resolve().parent.parent / "bin"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_demo_runs_end_to_end_and_resumes(tmp_path):
    cmd = [sys.executable, str(BIN / "demo"), "--data", str(tmp_path / "demo"), "--n", "60", "--epochs", "3",
           "--port", str(free_port())]
    first = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "60 pitches x 3 stages x 8 personas = 1440 requests" in first.stdout
    assert "1440/1440" in first.stdout and "failed 0" in first.stdout
    for label in ("predict the mean", "tabular only", "tabular + LLM"):
        assert label in first.stdout
    demo = tmp_path / "demo"
    pred = pd.read_csv(demo / "predictions.csv")
    assert len(pred) == 60 and pred.shape[1] == 21
    cov = json.loads((demo / "features" / "coverage.json").read_text())
    assert all(s["missing"] == 0 for s in cov["stages"].values())
    report = demo / "report.html"
    assert "/report.html" in first.stdout  # the summary says where the report is
    assert report.stat().st_size > 10_000 and report.read_text().count("data:image/png;base64,") >= 6

    second = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "nothing sent" in second.stdout
