"""``bin/report``: a trained model and a scoring run as pictures, in one HTML file.

Everything is read and checked before anything is written, so a bad
MODEL_DIR or RUN_DIR is one line on stderr and no half report.
"""

from __future__ import annotations

import argparse
import datetime as dt
from collections.abc import Sequence
from pathlib import Path

from ..data.inputs import ENCODING_HELP, check_encoding
from ..data.personas import PERSONA_KEYS
from . import plots
from .gather import ModelResult, RunResult, load_model_result, load_run_result
from .page import Section, image, write_report
from .tables import model_table, run_table


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="report",
        description="Draw trained models (learning curves, predicted against actual log_gmv, audience shares per "
                    "persona, settings and metrics) and a scoring run (mean score per persona and stage, score "
                    "distribution, coverage, tokens) into one self-contained HTML file; the images are also "
                    "written as PNGs beside it (OUT-NAME.png).")
    ap.add_argument("--model", action="append", default=[], metavar="MODEL_DIR",
                    help="directory written by bin/train; repeat to draw several models on one set of plots")
    ap.add_argument("--name", action="append", default=[], metavar="NAME",
                    help="label of each --model, in order (default: the directory's name and its inputs)")
    ap.add_argument("--run", metavar="RUN_DIR", help="checkpoint directory of bin/score or bin/batch")
    ap.add_argument("--pitches", metavar="P.csv", help="the pitches the models were trained on (default: the file "
                    "named in each model's config); with --run, also counts the requests never finished")
    ap.add_argument("--encoding", default=None, help=ENCODING_HELP + "; without it, a model's own pitches file "
                    "(no --pitches) is read in the encoding the model was trained with")
    ap.add_argument("--features", metavar="FEATURES_DIR",
                    help="the features the models were trained on (default: the directory in each model's config)")
    ap.add_argument("--out", required=True, metavar="REPORT.html", help="the HTML file to write (PNGs go beside it)")
    return ap


def model_section(models: list[ModelResult]) -> Section:
    n = len(models)
    what = "each model" if n > 1 else "the model"
    return Section("Models", [
        model_table(models),
        image("learning-curves", f"Loss (train dashed, validation solid; log scale) and validation RMSE of log_gmv "
              f"per epoch; the ring marks the epoch kept in best.pt of {what}.", plots.learning_curves(models)),
        image("predicted-vs-actual", "Predicted against actual log_gmv on the test split; the dashed line is "
              "predict-the-mean (the training split's mean).", plots.predicted_vs_actual(models)),
        image("shares", "Per persona: the true watch and pay share and the predicted one, each averaged over the "
              "test split.", plots.shares(models, PERSONA_KEYS)),
    ])


def run_section(run: RunResult) -> Section:
    return Section(f"Scoring run {run.path}", [
        run_table(run),
        image("scores-heatmap", "Mean score of each persona per stage over its ok requests (buy: the mean of the "
              "items' scores).", plots.score_heatmap(run)),
        image("score-distribution", "Share of each score per stage (buy: every item's score).",
              plots.score_distribution(run)),
        image("coverage", "The last word on each request per stage: ok, invalid (no usable reply after re-asking), "
              "failed (HTTP errors), missing (never finished; needs --pitches).", plots.coverage(run)),
    ])


def main(argv: Sequence[str] | None = None) -> int:
    """``bin/report``: read the model(s) and the run, then write the HTML page and its PNGs."""
    ap = parser()
    args = ap.parse_args(argv)
    check_encoding(args.encoding)  # a name Python does not know: one line, before anything is read
    if not args.model and not args.run:
        ap.error("give --model MODEL_DIR, --run RUN_DIR, or both")
    if args.name and len(args.name) != len(args.model):
        ap.error(f"--name given {len(args.name)} time(s) for {len(args.model)} --model(s); give one per model")
    names = args.name or [None] * len(args.model)
    models = [load_model_result(d, name, args.pitches, args.features, args.encoding)
              for d, name in zip(args.model, names)]
    run = load_run_result(args.run, args.pitches, args.encoding) if args.run else None
    sections = ([model_section(models)] if models else []) + ([run_section(run)] if run else [])
    out = Path(args.out)
    lines = [f"Written {dt.datetime.now():%Y-%m-%d %H:%M} by bin/report from "
             + ", ".join([*(f"model {m.path}" for m in models), *([f"run {run.path}"] if run else [])]) + "."]
    pngs = write_report(out, "liveroom report", lines, sections)
    print(f"report: wrote {out} ({len(pngs)} images embedded, also beside it as {out.stem}-*.png)")
    return 0
