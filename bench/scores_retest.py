"""Test-retest of the persona scores on a real model: sampled integers against expected scores.

Scores the same synthetic pitches twice through a real local LLM (``bin/local-llm serve``,
llama.cpp's llama-server with a tiny model on the CPU) with ``--score-probs`` at the method's
temperature, collects both runs and compares them cell by cell (pitch x persona):

* the share of cells whose sampled integer changed between the runs,
* the correlation between the runs of the integers and of the expected scores,
* the resolution: distinct values per persona and stage, integers against expected scores,
* the share of the digit token's probability the digits 1..5 held.

A tiny model's scores mean little; what is measured is the stability and resolution of the
feature. Needs ``make local-llm``. Prints a Markdown section for ``docs/SCORES.md``::

    .venv/bin/python bench/scores_retest.py --pitches 20 --local-model smollm2
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from liveroom.async_client.run_dir import RunDir  # noqa: E402
from liveroom.data.layout import MASS  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
BIN = ROOT / "bin"
FEATURES = ("entry", "action", "state", "read")


def sh(*cmd: str | Path, env: dict[str, str] | None = None) -> None:
    subprocess.run([sys.executable, *map(str, cmd)], check=True, env=env, stdout=subprocess.DEVNULL)


def shorten(data: Path, items: int, chars: int) -> None:
    """Keep the first ``items`` showcase items and ``chars`` transcript characters of each pitch: a
    tiny model on 2 CPU cores answers about 0.2 requests a second over the full synthetic pitches."""
    import pandas as pd

    goods = json.loads((data / "goods.json").read_text())
    (data / "goods.json").write_text(json.dumps({k: v[:items] for k, v in goods.items()}, ensure_ascii=False))
    df = pd.read_csv(data / "pitches.csv")
    df["text"] = df["text"].str.slice(0, chars)
    df.to_csv(data / "pitches.csv", index=False)


def corr(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of two flattened matrices over the cells both hold; NaN when one is constant."""
    a, b = a.ravel(), b.ravel()
    keep = ~(np.isnan(a) | np.isnan(b))
    a, b = a[keep], b[keep]
    if a.std() == 0 or b.std() == 0:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


def distinct(m: np.ndarray) -> str:
    """Distinct values per persona (column), as min-max over the personas."""
    counts = [len(np.unique(np.round(col[~np.isnan(col)], 6))) for col in m.T]
    return f"{min(counts)}" if min(counts) == max(counts) else f"{min(counts)}-{max(counts)}"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pitches", type=int, default=20)
    p.add_argument("--local-model", default="smollm2")
    p.add_argument("--top-logprobs", type=int, default=5)
    p.add_argument("--items", type=int, default=3, help="showcase items kept per pitch (default 3)")
    p.add_argument("--chars", type=int, default=300, help="transcript characters kept (default 300)")
    p.add_argument("--work", type=Path, default=Path("/tmp/bench-scores-retest"))
    a = p.parse_args()
    shutil.rmtree(a.work, ignore_errors=True)
    a.work.mkdir(parents=True)
    sh(BIN / "make-synthetic", "--n", str(a.pitches), "--seed", "0", "--out", a.work / "data")
    shorten(a.work / "data", a.items, a.chars)
    serve = subprocess.Popen([sys.executable, str(BIN / "local-llm"), "serve", "--local-model", a.local_model,
                              "--parallel", "4", "--threads", "2"], stdout=subprocess.PIPE, text=True)
    t0 = time.monotonic()
    try:
        assert serve.stdout is not None
        url = serve.stdout.readline().split()[-1]
        env = {**os.environ, "OPENAI_BASE_URL": url, "OPENAI_API_KEY": "local"}
        for run in ("a", "b"):
            sh(BIN / "score", "--pitches", a.work / "data/pitches.csv", "--goods", a.work / "data/goods.json",
               "--run", a.work / run, "--provider", "llamacpp", "--model", a.local_model,
               "--response-format", "json_schema", "--max-tokens", "400", "--timeout", "300",
               "--concurrency", "4", "--score-probs", "--top-logprobs", str(a.top_logprobs), env=env)
            sh(BIN / "collect", "--pitches", a.work / "data/pitches.csv", "--run", a.work / run,
               "--out", a.work / f"{run}-features", "--allow-missing")
    finally:
        serve.terminate()
        serve.wait(30)
    minutes = (time.monotonic() - t0) / 60
    load = {run: {f: (np.load(a.work / f"{run}-features/{f}.npy"), np.load(a.work / f"{run}-features/{f}_expected.npy"))
                  for f in FEATURES} for run in ("a", "b")}
    cov = json.loads((a.work / "a-features/coverage.json").read_text())
    masses = [v for stage in ("entry", "buy", "read") for r in RunDir(a.work / "a").records(stage) if r.ok
              for k, v in r.scores.items() if k.endswith(MASS) and isinstance(v, float)]
    print(f"## Test-retest on a real model\n\n{a.pitches} synthetic pitches x 8 personas scored twice by "
          f"`{a.local_model}` (llama.cpp, 4 slots) at the method's temperature with `--score-probs "
          f"--top-logprobs {a.top_logprobs}` (the first {a.items} showcase items and {a.chars} transcript "
          f"characters of each pitch), {minutes:.1f} min for both runs, command:\n\n"
          f"    .venv/bin/python bench/scores_retest.py --pitches {a.pitches} --local-model {a.local_model}\n")
    print("| feature | cells | integer changed | corr of integers | corr of expected | max abs change of expected "
          "| distinct integers / persona | distinct expected / persona |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for f in FEATURES:
        (ia, ea), (ib, eb) = load["a"][f], load["b"][f]
        both = ~(np.isnan(ia) | np.isnan(ib))
        changed = float((ia[both] != ib[both]).mean())
        print(f"| {f} | {int(both.sum())} | {changed:.2f} | {corr(ia, ib):.2f} | {corr(ea, eb):.2f} "
              f"| {np.nanmax(np.abs(ea - eb)):.3f} | {distinct(ia)} | {distinct(ea)} |")
    print(f"\nCells from probabilities (run a): {json.dumps({s: v.get('from_probs') for s, v in cov['stages'].items()})}; "
          f"the digits 1..5 held a median {np.median(masses):.2f} (min {min(masses):.2f}) of the score token's "
          "probability before renormalising (the records' `*_mass`).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
