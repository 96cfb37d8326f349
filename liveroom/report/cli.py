"""``bin/report``: a trained model and a scoring run as pictures, in one HTML file.

Everything is read and checked before anything is written, so a bad
MODEL_DIR or RUN_DIR is one line on stderr and no half report. The arguments
are checked before torch and matplotlib are loaded.
"""

from __future__ import annotations

import argparse
import datetime as dt
from collections.abc import Sequence
from pathlib import Path

from ..cliargs import command_parser
from ..data.inputs import ENCODING_HELP, check_encoding
from ..errors import InputError


def parser() -> argparse.ArgumentParser:
    ap = command_parser(
        "report",
        description="Draw trained models (learning curves, predicted against actual log_gmv, audience shares per "
                    "persona, settings and metrics) and a scoring run (mean score per persona and stage, score "
                    "distribution, coverage, tokens; expected scores beside the integers where the run or the features "
                    "have them) into one self-contained HTML file; the images are also "
                    "written as PNGs beside it (OUT-NAME.png).")
    ap.add_argument("--model-dir", "--model", dest="model_dir", action="append", default=[], metavar="MODEL_DIR",
                    help="directory written by bin/train; repeat to draw several models on one set of plots "
                         "(--model: the same)")
    ap.add_argument("--name", action="append", default=[], metavar="NAME",
                    help="label of each --model-dir, in order (default: the directory's name and its inputs)")
    ap.add_argument("--run", metavar="RUN_DIR", help="run directory of bin/score or bin/batch")
    ap.add_argument("--pitches", metavar="P.csv", help="the pitches the models were trained on (default: the file "
                    "named in each model's config); with --run, also counts the requests never finished")
    ap.add_argument("--encoding", default=None, help=ENCODING_HELP + "; without it, a model's own pitches file "
                    "(no --pitches) is read in the encoding the model was trained with")
    ap.add_argument("--features", metavar="FEATURES_DIR",
                    help="the features the models were trained on (default: the directory in each model's config); "
                         "where it holds expected scores, they are drawn beside the integers (alone: only that; "
                         "without it, those of the models trained on expected scores are)")
    ap.add_argument("--out", required=True, metavar="REPORT.html", help="the HTML file to write (PNGs go beside it)")
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    """``bin/report``: read the model(s) and the run, then write the HTML page and its PNGs."""
    ap = parser()
    args = ap.parse_args(argv)
    check_encoding(args.encoding)  # a name Python does not know: one line, before anything is read
    if not args.model_dir and not args.run and not args.features:
        ap.error("give --model-dir MODEL_DIR, --run RUN_DIR, --features FEATURES_DIR, or several")
    if args.name and len(args.name) != len(args.model_dir):
        ap.error(f"--name given {len(args.name)} time(s) for {len(args.model_dir)} --model-dir(s); give one per model")
    # torch (gather) and matplotlib (page, sections): only once the arguments are good
    from .gather import load_feature_scores, load_model_result, load_run_result
    from .page import write_report
    from .sections import features_section, model_section, run_section

    names = args.name or [None] * len(args.model_dir)
    models = [load_model_result(d, name, args.pitches, args.features, args.encoding)
              for d, name in zip(args.model_dir, names)]
    run = load_run_result(args.run, args.pitches, args.encoding) if args.run else None
    feature_dirs = dict.fromkeys([args.features] if args.features
                                 else [m.config.features for m in models if m.config.scores == "expected"])
    with_expected = [(Path(d), pairs) for d in feature_dirs if d and (pairs := load_feature_scores(d))]
    sections = (([model_section(models)] if models else []) + ([run_section(run)] if run else [])
                + [features_section(d, pairs, i) for i, (d, pairs) in enumerate(with_expected)])
    if not sections:
        raise InputError(f"{args.features}: no expected scores there (entry_expected.npy ...: bin/collect writes "
                         "them from a run scored with --score-probs); nothing to draw")
    out = Path(args.out)
    lines = [f"Written {dt.datetime.now():%Y-%m-%d %H:%M} by bin/report from "
             + ", ".join([*(f"model {m.path}" for m in models), *([f"run {run.path}"] if run else []),
                          *(f"features {d}" for d, _ in with_expected)]) + "."]
    pngs = write_report(out, "liveroom report", lines, sections)
    print(f"report: wrote {out} ({len(pngs)} images embedded, also beside it as {out.stem}-*.png)")
    return 0
