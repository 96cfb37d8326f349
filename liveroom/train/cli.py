"""``bin/train``: fit the sales model on pitches + persona features."""

from __future__ import annotations

import argparse
from typing import Sequence

from ..cliargs import command_parser, non_negative_int, number, positive_float, positive_int
from ..data.inputs import ENCODING_HELP, check_encoding
from ..data.layout import SCORE_KINDS
from .config import KL_SCHEDULES, PRESETS, TrainConfig


def parser() -> argparse.ArgumentParser:
    """``bin/train``'s flags; defaults shown are TrainConfig's."""
    d = TrainConfig("", "")
    ap = command_parser(
        "train",
        description="Train the sales model (GMV, orders, buyers, viewers, viewer and buyer mix per persona) "
                    "on a pitches CSV and the persona feature matrices. Writes MODEL_DIR/metrics.csv, "
                    "summary.json, best.pt and last.pt.",
        epilog="Presets: 'default' standardises inputs, uses T=1 with a constant KL weight, keeps the best "
               "epoch by validation loss and stops after --patience epochs without improvement; 'reference' "
               "reproduces the published method (raw inputs, T=500, KL weight max(1-0.025*batch, 0), "
               "no early stopping, last epoch kept). Flags given explicitly override the preset.")
    ap.add_argument("--pitches", required=True, metavar="P.csv", help="pitches CSV with the 8 tabular columns and 20 targets")
    ap.add_argument("--features", metavar="FEATURES_DIR",
                    help="directory with entry/action/read/state.npy (pitches x 8) and optional index.npy; "
                         "required unless --inputs tabular")
    ap.add_argument("--out", required=True, metavar="MODEL_DIR", help="output directory (created)")
    ap.add_argument("--encoding", default=None, help=ENCODING_HELP)
    ap.add_argument("--device", help="cpu, cuda or cuda:N (default cpu)")
    ap.add_argument("--epochs", type=positive_int, help=f"maximum epochs (default {d.epochs})")
    ap.add_argument("--batch-size", type=positive_int, default=d.batch_size, help=f"default {d.batch_size}")
    ap.add_argument("--lr", type=positive_float, default=d.lr, help=f"Adam learning rate (default {d.lr})")
    ap.add_argument("--gamma", type=positive_float, default=d.gamma, help=f"learning-rate decay per epoch (default {d.gamma})")
    ap.add_argument("--hidden", type=positive_int, default=d.hidden, help=f"hidden width H (default {d.hidden})")
    ap.add_argument("--share-temperature", "--temperature", dest="temperature", type=positive_float,
                    metavar="T", help="softmax temperature of the share heads (default 1, or 500 with --preset "
                    "reference) (--temperature: the same)")
    ap.add_argument("--dropout", type=number(float, 0, 1, hi_open=True, name="dropout"), default=d.dropout, help=f"default {d.dropout}")
    ap.add_argument("--seed", type=non_negative_int, default=d.seed, help=f"default {d.seed}")
    ap.add_argument("--inputs", choices=("tabular", "tabular+llm"), default=d.inputs,
                    help="model inputs: the 8 tabular columns, or those plus the 32 persona features (default)")
    ap.add_argument("--scores", choices=SCORE_KINDS, default=d.scores,
                    help="which value of each persona score is a feature: the sampled integers (entry.npy ...; "
                         "the method, default) or the expected scores from the digit token's probabilities "
                         "(entry_expected.npy ...: bin/score --score-probs, then bin/collect); kept in the "
                         "model, so bin/predict and bin/serve read the same kind")
    ap.add_argument("--no-debias", action="store_true", help="do not weight samples by the causal-debias weight "
                    "(it needs the action/state features, so it is off with --inputs tabular)")
    ap.add_argument("--patience", type=non_negative_int, help="stop after N epochs without a better validation loss; "
                    "0 = never (default 15, or 0 with --preset reference)")
    ap.add_argument("--kl-schedule", choices=KL_SCHEDULES, help="KL weight per batch: constant 1 (default) or "
                    "the reference's max(1-0.025*batch, 0)")
    ap.add_argument("--drop-missing", action="store_true",
                    help="train on the pitches whose persona features are all scores in 1..5, leaving out those "
                         "with a NaN (bin/collect --allow-missing) or a 0 (missing in the reference's files); "
                         "the count left out is printed and kept in summary.json. Without it such cells are refused")
    ap.add_argument("--resume", action="store_true", help="continue from MODEL_DIR/last.pt with its settings; "
                    "--epochs, --patience and --device, when given, override them")
    ap.add_argument("--preset", choices=tuple(PRESETS), default="default", help="see below (default: default)")
    return ap


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The preset's settings, overridden by the flags given."""
    d = TrainConfig("", "")
    preset = dict(PRESETS[args.preset])
    for name in ("temperature", "patience", "kl_schedule"):
        if getattr(args, name) is not None:
            preset[name] = getattr(args, name)
    return TrainConfig(
        pitches=args.pitches, out=args.out, features=args.features, encoding=args.encoding,
        device=args.device or d.device,
        epochs=args.epochs or d.epochs, batch_size=args.batch_size, lr=args.lr, gamma=args.gamma,
        hidden=args.hidden, dropout=args.dropout, seed=args.seed, inputs=args.inputs, debias=not args.no_debias,
        preset=args.preset, drop_missing=args.drop_missing, scores=args.scores, **preset)


def main(argv: Sequence[str] | None = None) -> int:
    """``bin/train``: train, print the selected epoch's test metrics."""
    ap = parser()
    args = ap.parse_args(argv)
    check_encoding(args.encoding)  # a name Python does not know: one line, before anything is read
    if args.scores != "sampled" and args.inputs == "tabular":
        ap.error(f"--scores {args.scores} needs the persona features; --inputs tabular reads none")
    from .loop import train  # torch: only once the arguments are good

    given = tuple(name for name in ("epochs", "patience", "device") if getattr(args, name) is not None)
    summary = train(config_from_args(args), resume=args.resume, overrides=given)
    test = summary["test"]
    nan = float("nan")
    print(f"best epoch {summary['best_epoch']}: test rmse log_gmv {test.get('rmse_log_gmv', nan):.4f}, "
          f"kl watch {test.get('kl_watch_batchmean', nan):.4f}, kl pay {test.get('kl_pay_batchmean', nan):.4f} "
          "(kl: sum over the shares, mean over pitches)")
    return 0
