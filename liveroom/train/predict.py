"""``bin/predict``: the trained model's forecasts for new pitches.

The pitches file needs only ``index``, ``start``, ``duration`` and
``user_cnt`` (time columns are computed from ``start`` when absent; targets
are not read); it is read as UTF-8 unless ``--encoding`` names another
encoding. The output CSV has ``index`` and the 20 target columns, one row per
pitch in input order. torch is loaded only once the arguments are good.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
import pandas as pd

from ..cliargs import command_parser
from ..data.inputs import ENCODING_HELP, check_encoding
from ..data.layout import N_TABULAR, TARGET_COLUMNS
from ..data.personas import PERSONA_KEYS
from ..errors import InputError

if TYPE_CHECKING:
    from .model import SalesNet


def predict(net: SalesNet, ck: dict[str, Any], x_raw: np.ndarray, chunk: int = 65536) -> np.ndarray:
    """(n, 20) predictions for raw inputs in the model's column order."""
    import torch  # loaded already: ``net`` is a torch module

    with torch.no_grad():
        x = (torch.from_numpy(x_raw).float() - ck["x_mean"]) / ck["x_std"]
        parts = [torch.cat(net(part), 1) for part in x.split(chunk)]
        return torch.cat(parts).numpy()


def parser() -> argparse.ArgumentParser:
    """``bin/predict``'s flags."""
    ap = command_parser(
        "predict",
        description="Write the model's forecasts (index + the 20 target columns) for new pitches.")
    ap.add_argument("--model-dir", "--model", dest="model_dir", required=True, metavar="MODEL_DIR",
                    help="directory written by bin/train (uses best.pt) (--model: the same)")
    ap.add_argument("--pitches", required=True, metavar="P.csv",
                    help="pitches CSV with index, start, duration, user_cnt (targets not needed)")
    ap.add_argument("--features", metavar="FEATURES_DIR",
                    help="entry/action/read/state.npy for these pitches (needed unless the model is tabular-only); "
                         "entry_expected.npy ... for a model trained with --scores expected")
    ap.add_argument("--out", required=True, metavar="PRED.csv", help="output CSV")
    ap.add_argument("--encoding", default=None, help=ENCODING_HELP)
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    """``bin/predict``: read the model and the new pitches, write the forecasts."""
    args = parser().parse_args(argv)
    check_encoding(args.encoding)  # a name Python does not know: one line, before the model is loaded
    from .checkpoint import load_model
    from .config import TrainConfig
    from .data import check_scores, raw_inputs, read_features, read_pitches

    net, ck = load_model(args.model_dir)
    if ck["personas"] != list(PERSONA_KEYS):
        raise InputError(f"{args.model_dir}: model was trained for personas {', '.join(ck['personas'])}")
    pitches = read_pitches(args.pitches, with_targets=False, encoding=args.encoding)
    features = None
    if len(ck["inputs"]) > N_TABULAR:
        if not args.features:
            raise InputError(f"--features is required: the model in {args.model_dir} uses the persona features")
        kind = TrainConfig.from_dict(ck["config"]).scores  # a model from before the choice: sampled
        features = read_features(args.features, pitches["index"].to_numpy(), kind)
        check_scores(features, pitches["index"].to_numpy(), args.features, kind=kind)
    x = raw_inputs(pitches, features)
    if x.shape[1] != len(ck["inputs"]):
        raise InputError(f"inputs have {x.shape[1]} columns, the model expects {len(ck['inputs'])}")
    pred = predict(net, ck, x)
    out = pd.DataFrame(pred.astype(np.float64), columns=list(TARGET_COLUMNS))
    out.insert(0, "index", pitches["index"].to_numpy())
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    out.to_csv(args.out, index=False, float_format="%.6g")
    print(f"predict: wrote {args.out} ({len(out)} pitches)", flush=True)  # the result
    return 0
