"""``make demo``: the whole pipeline end to end, with no API key and no network.

1. demo data in ``data/demo/`` (made once by the project's own generator,
   :mod:`liveroom.synthetic`): a few hundred pitches in the reference format;
2. the simulator (``bin/sim-server``: heuristic answers, not a language model,
   with a little fault injection so retries and re-asks show) on 127.0.0.1;
3. ``bin/score`` -> ``bin/collect`` -> ``bin/train`` (with and without the
   LLM features) -> ``bin/predict`` -> ``bin/report`` (both models on one set
   of plots, and the run), each run as a user would run it;
4. a short summary: requests, req/s, test metrics against predict-the-mean,
   and where the HTML report is.

Running it again resumes: the scoring checkpoint is kept, so nothing is sent
twice. ``--backend local`` scores a handful of pitches through a real local LLM
server (``bin/local-llm``) instead.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from .cliargs import command_parser, non_negative_int, number, positive_int
from .data.layout import N_PERSONAS, PAY_TARGETS, WATCH_TARGETS
from .errors import LiveroomError
from .process import stop_process

ROOT = Path(__file__).resolve().parent.parent
BIN = ROOT / "bin"
SIM_FAULTS = ("--p-429", "0.002", "--retry-after", "0.2", "--p-500", "0.005", "--p-nonjson", "0.005",
              "--p-fenced", "0.02", "--latency-ms", "20", "--jitter-ms", "10", "--seed", "1")


def _run(*args: str | Path, env: dict | None = None, check: bool = True) -> subprocess.CompletedProcess:
    """Run one command, its stderr shown live and also kept."""
    cmd = [sys.executable, *map(str, args)]
    print(f"\n$ {' '.join(str(a).replace(str(ROOT) + '/', '') for a in args)}", file=sys.stderr, flush=True)
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    kept: list[str] = []
    assert proc.stderr is not None
    for line in proc.stderr:
        sys.stderr.write(line)
        kept.append(line)
    out = proc.stdout.read() if proc.stdout else ""
    proc.wait()
    if check and proc.returncode != 0:
        raise LiveroomError(f"{Path(str(args[0])).name} failed (exit {proc.returncode}): "
                            f"{kept[-1].strip() if kept else ''}")
    return subprocess.CompletedProcess(cmd, proc.returncode, out, "".join(kept))


class SimServer:
    def __init__(self, port: int):
        self.proc = subprocess.Popen(
            [sys.executable, str(BIN / "sim-server"), "--port", str(port), *SIM_FAULTS],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline() if self.proc.stdout else ""
        if not line.startswith("listening on "):
            err = self.proc.stderr.read() if self.proc.stderr else ""
            raise LiveroomError(f"the simulator did not start on port {port}: {err.strip() or line.strip()}"
                                " (pass --port to pick another)")
        self.url = line.split()[-1]

    def stop(self) -> None:
        stop_process(self.proc)


def make_data(data: Path, n: int, seed: int) -> None:
    if (data / "pitches.csv").exists() and (data / "goods.json").exists():
        print(f"demo: using the demo data in {data}", file=sys.stderr)
        return
    from .synthetic import make_synthetic, write_synthetic
    pitches, showcase, features = make_synthetic(n, seed)
    write_synthetic(data / "truth", pitches, showcase, features)
    (data / "truth" / "pitches.csv").replace(data / "pitches.csv")
    (data / "truth" / "goods.json").replace(data / "goods.json")
    print(f"demo: wrote {n} synthetic pitches to {data}/pitches.csv and goods.json", file=sys.stderr)


def baseline(pitches: Path) -> dict[str, float]:
    """Predict-the-mean on the test split: the train split's mean of every target."""
    from .train.data import split_bounds
    df = pd.read_csv(pitches)
    n_train, n_val = split_bounds(len(df))
    train, test = df.iloc[:n_train], df.iloc[n_val:]
    err = test["log_gmv"] - train["log_gmv"].mean()
    out = {"rmse_log_gmv": float(np.sqrt((err ** 2).mean())), "mae_log_gmv": float(err.abs().mean())}
    for name, cols in (("watch", WATCH_TARGETS), ("pay", PAY_TARGETS)):
        y, p = test[list(cols)].to_numpy(), train[list(cols)].to_numpy().mean(0)
        # as bin/train reports it: summed over the shares, mean over pitches (torch's "batchmean")
        out[f"kl_{name}_batchmean"] = float(np.mean(np.sum(y * (np.log(np.clip(y, 1e-12, None)) - np.log(p + 1e-9)), 1)))
    return out


def _score_summary(stdout: str) -> str:
    """bin/score's closing line, which it writes on stdout."""
    lines = [s.removeprefix("score: ") for s in stdout.splitlines() if s.startswith("score: ")]
    return lines[0] if lines else "?"


def report(data: Path, sim_url: str, score_line: str, n: int) -> str:
    shown = os.path.relpath(data)
    models = {"predict the mean": baseline(data / "pitches.csv")}
    for label, d in (("tabular only", "model-tabular"), ("tabular + LLM", "model")):
        s = json.loads((data / d / "summary.json").read_text())
        models[f"{label} (epoch {s['best_epoch']})"] = s["test"]
    width = max(map(len, models))
    rows = [f"  {'test split':<{width}}  RMSE log_gmv  MAE log_gmv  KL watch  KL pay"]
    for label, m in models.items():
        rows.append(f"  {label:<{width}}  {m['rmse_log_gmv']:>12.3f}  {m['mae_log_gmv']:>11.3f}  "
                    f"{m['kl_watch_batchmean']:>8.4f}  {m['kl_pay_batchmean']:>6.4f}")
    return "\n".join([
        "",
        "=" * 72,
        f"liveroom demo: {n} pitches x 3 stages x {N_PERSONAS} personas = {n * 3 * N_PERSONAS} requests",
        f"  to the simulator at {sim_url} (heuristic answers, not a language model)",
        f"  scoring: {score_line}",
        "",
        *rows,
        "  (KL: summed over the shares, mean over pitches, as torch's kl_div batchmean)",
        "",
        f"  outputs: {shown}/run (checkpoint: manifest + JSONL per stage)",
        f"           {shown}/features (entry/state/action/read .npy, coverage.json)",
        f"           {shown}/model (best.pt, metrics.csv, summary.json)",
        f"           {shown}/predictions.csv (20 targets per pitch)",
        f"  report:  {shown}/report.html (learning curves, predicted vs actual, audience shares, run scores;",
        f"           the images also as {shown}/report-*.png)",
        "  run `make demo` again: the scoring resumes from the checkpoint and sends nothing.",
        "=" * 72,
    ])


def demo_sim(data: Path, n: int, seed: int, port: int, epochs: int) -> str:
    make_data(data, n, seed)
    n = len(pd.read_csv(data / "pitches.csv", usecols=["index"]))
    sim = SimServer(port)
    try:
        env = {**os.environ, "OPENAI_BASE_URL": sim.url}
        env.pop("OPENAI_API_KEY", None)
        p = _run(BIN / "score", "--pitches", data / "pitches.csv", "--goods", data / "goods.json",
                 "--run", data / "run", "--concurrency", "64", "--backoff", "0.2", "--progress-every", "2", env=env)
    finally:
        sim.stop()
    score_line = _score_summary(p.stdout)
    _run(BIN / "collect", "--pitches", data / "pitches.csv", "--run", data / "run", "--out", data / "features")
    common = ("--pitches", data / "pitches.csv", "--epochs", str(epochs), "--patience", "10", "--seed", str(seed))
    _run(BIN / "train", *common, "--features", data / "features", "--out", data / "model")
    _run(BIN / "train", *common, "--inputs", "tabular", "--out", data / "model-tabular")
    _run(BIN / "predict", "--model-dir", data / "model", "--pitches", data / "pitches.csv",
         "--features", data / "features", "--out", data / "predictions.csv")
    _run(BIN / "report", "--model-dir", data / "model-tabular", "--name", "tabular only", "--model-dir", data / "model",
         "--name", "tabular + LLM", "--run", data / "run", "--pitches", data / "pitches.csv",
         "--features", data / "features", "--out", data / "report.html")
    return report(data, sim.url, score_line, n)


def demo_local(data: Path, n_local: int, port: int) -> str:
    """A few pitches through a real local LLM (llama.cpp's server, a tiny model)."""
    make_data(data, 400, 7)
    local = data / "local"
    local.mkdir(parents=True, exist_ok=True)
    pd.read_csv(data / "pitches.csv").head(n_local).to_csv(local / "pitches.csv", index=False)
    t0 = time.monotonic()
    p = _run(BIN / "local-llm", "run", "--port", str(port), "--", sys.executable, str(BIN / "score"),
             "--pitches", str(local / "pitches.csv"), "--goods", str(data / "goods.json"),
             "--run", str(local / "run"), "--response-format", "json_schema", "--concurrency", "4",
             "--timeout", "300", "--model", "local", check=False)
    elapsed = time.monotonic() - t0
    _run(BIN / "collect", "--pitches", local / "pitches.csv", "--run", local / "run",
         "--out", local / "features", "--allow-missing")
    entry = np.load(local / "features" / "entry.npy")
    return "\n".join([
        "", "=" * 72,
        f"liveroom demo (LLM=local): {n_local} pitches x {3 * N_PERSONAS} requests through a real local LLM server",
        f"  scoring: {_score_summary(p.stdout)} ({elapsed:.0f} s with server start-up; exit {p.returncode})",
        f"  entry scores (pitches x personas):\n{entry}",
        f"  outputs: {local}/run, {local}/features",
        "=" * 72,
    ])


def serve_hint(data: Path, port: int) -> str:
    """How to forecast new pitches with the demo's model: the simulator again, then bin/serve and its page."""
    sim, serve = os.path.relpath(BIN / "sim-server"), os.path.relpath(BIN / "serve")
    return "\n".join([
        "forecast new pitches with this model (the page at http://127.0.0.1:8080/):",
        f"  {sim} --port {port} &",
        f"  {serve} --model-dir {os.path.relpath(data / 'model')} --base-url http://127.0.0.1:{port}/v1",
    ])


def parser() -> argparse.ArgumentParser:
    """``bin/demo``'s flags."""
    ap = command_parser(
        "demo",
        description="Run the whole pipeline end to end on the embedded simulator (no API key, no network): "
                    "demo data, bin/score, bin/collect, bin/train, bin/predict, bin/report (HTML), and a summary.")
    ap.add_argument("--data", default=str(ROOT / "data" / "demo"), help="working directory (default: data/demo)")
    ap.add_argument("--n", type=number(int, 10, name="pitches"), default=400,
                    help="pitches to generate the first time, at least 10: the model splits 70/10/20 "
                         "(default: %(default)s)")
    ap.add_argument("--seed", type=non_negative_int, default=7, help="(default: %(default)s)")
    ap.add_argument("--port", type=number(int, 1, 65534, name="port"), default=18765,
                    help="simulator port (the local LLM server gets port+1); fixed so that a rerun resumes "
                         "the same run (default: %(default)s)")
    ap.add_argument("--epochs", type=positive_int, default=80, help="training epochs at most (default: %(default)s)")
    ap.add_argument("--backend", "--llm", dest="backend", choices=("sim", "local"), default="sim",
                    help="what answers: sim, the simulator (default); local, a real local LLM server scoring "
                         "a few pitches (--llm: the same)")
    ap.add_argument("--local-pitches", type=positive_int, default=2,
                    help="pitches to score with --backend local (default: %(default)s)")
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    """``bin/demo``: the pipeline on the simulator (or a few pitches through a local LLM); the summary on stdout."""
    args = parser().parse_args(argv)
    data = Path(args.data)
    data.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    text = demo_local(data, args.local_pitches, args.port + 1) if args.backend == "local" else \
        demo_sim(data, args.n, args.seed, args.port, args.epochs)
    print(text + f"\n(demo took {time.monotonic() - t0:.0f} s)")
    if args.backend == "sim":
        print(serve_hint(data, args.port))
    return 0
