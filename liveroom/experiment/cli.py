"""``bin/experiment``: train every arm over several seeds at once; mean ± std per arm, paired tests.

The arguments are checked before torch and matplotlib are loaded.
"""

from __future__ import annotations

import argparse
import datetime as dt
from collections.abc import Sequence
from pathlib import Path

from ..cliargs import command_parser, non_negative_int, number, positive_float, positive_int
from ..data.inputs import ENCODING_HELP, check_encoding
from .arms import ARMS, DEFAULT_ARMS, DEFAULT_SEEDS, Experiment, parse_arms, parse_seeds


def parser() -> argparse.ArgumentParser:
    d = Experiment("", "")
    ap = command_parser(
        "experiment",
        description="Train the sales model for every arm and seed at once (one batched step over all models, "
                    "on one device), each as bin/train trains it alone with that arm's flags and --seed "
                    "(same initialisation, batches and dropout masks; sums in another order), and report "
                    "the test metrics of each arm as mean ± sample std over the seeds, with each arm's difference from tabular only (95 % interval, paired t-test). Writes "
                    "OUT/results.csv, summary.csv, summary.md, report.html and OUT/models/ARM-SEED/ (bin/train's "
                    "files: best.pt, summary.json, metrics.csv; bin/predict and bin/serve take any of them). "
                    "Running the same command again continues a killed experiment from its last finished epoch.",
        epilog="Arms: " + "; ".join(f"{name} = {what} (bin/train {' '.join(flags) or 'defaults'})"
                                    for name, (what, _, flags) in ARMS.items()) + ".")
    ap.add_argument("--pitches", required=True, metavar="P.csv", help="pitches CSV with the 8 tabular columns and "
                    "20 targets")
    ap.add_argument("--features", metavar="FEATURES_DIR", help="entry/action/read/state.npy (pitches x 8); "
                    "required unless the only arm is tabular")
    ap.add_argument("--out", required=True, metavar="OUT", help="output directory (created; an experiment left "
                    "there is continued)")
    ap.add_argument("--arms", type=parse_arms, default=DEFAULT_ARMS, help=f"comma-separated, of {', '.join(ARMS)} "
                    f"(default {DEFAULT_ARMS})")
    ap.add_argument("--seeds", type=parse_seeds, default=DEFAULT_SEEDS, help=f"e.g. 0-4 or 0,3,7 (default "
                    f"{DEFAULT_SEEDS})")
    ap.add_argument("--encoding", default=None, help=ENCODING_HELP)
    ap.add_argument("--device", help="cpu, cuda or cuda:N: every model trains there (default cpu)")
    ap.add_argument("--epochs", type=positive_int, help=f"maximum epochs per model (default {d.epochs})")
    ap.add_argument("--patience", type=non_negative_int, help=f"stop a model after N epochs without a better "
                    f"validation loss; 0 = never (default {d.patience}; the reference arm never stops early)")
    ap.add_argument("--batch-size", type=positive_int, default=d.batch_size, help=f"default {d.batch_size}")
    ap.add_argument("--lr", type=positive_float, default=d.lr, help=f"Adam learning rate (default {d.lr})")
    ap.add_argument("--gamma", type=positive_float, default=d.gamma, help=f"learning-rate decay per epoch "
                    f"(default {d.gamma})")
    ap.add_argument("--hidden", type=positive_int, default=d.hidden, help=f"hidden width H (default {d.hidden})")
    ap.add_argument("--dropout", type=number(float, 0, 1, hi_open=True, name="dropout"), default=d.dropout,
                    help=f"default {d.dropout}")
    ap.add_argument("--drop-missing", action="store_true", help="as bin/train: the LLM arms train on the pitches "
                    "whose persona features are all scores in 1..5")
    return ap


def experiment_from_args(args: argparse.Namespace) -> Experiment:
    d = Experiment("", "")
    return Experiment(pitches=args.pitches, out=args.out, features=args.features, arms=args.arms, seeds=args.seeds,
                      encoding=args.encoding, device=args.device or d.device, epochs=args.epochs or d.epochs,
                      patience=d.patience if args.patience is None else args.patience, batch_size=args.batch_size,
                      lr=args.lr, gamma=args.gamma, hidden=args.hidden, dropout=args.dropout,
                      drop_missing=args.drop_missing)


def main(argv: Sequence[str] | None = None) -> int:
    """``bin/experiment``: train, write the tables and the report, print the summary."""
    ap = parser()
    args = ap.parse_args(argv)
    check_encoding(args.encoding)
    if not args.features and any(ARMS[a][1]["inputs"] != "tabular" for a in args.arms):
        ap.error("--features FEATURES_DIR is required with an arm that uses the persona features "
                 f"({', '.join(a for a in args.arms if a != 'tabular')})")
    exp = experiment_from_args(args)
    # torch and matplotlib: only once the arguments are good
    from .report import write_html
    from .run import run_experiment
    from .tables import result_row, summary_rows, write_tables

    trained = run_experiment(exp)
    out = Path(exp.out)
    results = [result_row(m.arm, m.seed, s) for m, s in trained]
    text = write_tables(out, results, exp.arms, exp.seeds)
    histories = {arm: [m.history for m, _ in trained if m.arm == arm] for arm in exp.arms}
    lines = [f"Written {dt.datetime.now():%Y-%m-%d %H:%M} by bin/experiment from {exp.pitches}"
             + (f" and {exp.features}" if exp.features else "") + f": {len(trained)} models "
             f"({len(exp.arms)} arms × {len(exp.seeds)} seeds), at most {exp.epochs} epochs, patience {exp.patience}. "
             "Each model's files are under models/ARM-SEED/."]
    write_html(out, results, summary_rows(results, exp.arms), histories, lines)
    print(text, end="")
    print(f"experiment: wrote {out}/results.csv, summary.csv, summary.md, report.html and models/ARM-SEED/")
    return 0
