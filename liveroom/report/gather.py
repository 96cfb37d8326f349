"""What the report shows, read from a model directory and a run directory.

A model (``bin/train``'s MODEL_DIR): its summary, the per-epoch
``metrics.csv``, and its predictions on the test split, recomputed from
``best.pt`` and the training data (the pitches file and features it was
trained on, or those given), split as training split them; the pitches file
it was trained on is read in the encoding it was trained with, one given in
the encoding given (default UTF-8). A run
(``bin/score``'s RUN_DIR): per stage the last word on every request (ok if
any record of it is ok, as ``bin/collect`` counts), its scores, and the tokens
of every record, retries included, and the expected scores of the replies
that carry their probabilities. A features directory (``bin/collect``'s):
its integer matrices beside its expected scores, when it has them.
Everything comes back as numbers; nothing is drawn here.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..async_client.record import INVALID, OK
from ..async_client.run_dir import RunDir
from ..data.inputs import load_pitches
from ..data.layout import EXPECTED, LLM_FEATURES, PAY, REG, REGRESSION_TARGETS, TARGET_COLUMNS, WATCH
from ..data.personas import PERSONA_KEYS
from ..errors import InputError
from ..prompts.stages import STAGES
from ..scoring.usage import read_usage
from ..train.checkpoint import load_model
from ..train.config import TrainConfig
from ..train.data import (
    check_scores,
    feature_file,
    incomplete,
    raw_inputs,
    read_features,
    read_pitches,
    split_bounds,
)
from ..train.predict import predict

#: the per-epoch columns the learning curves use
CURVES = ("epoch", "train_loss", "train_batch_loss", "val_loss", "val_rmse_log_gmv")
SCORES = np.arange(1, 6)  # the score scale, 1..5


@dataclass
class ModelResult:
    """One trained model: how it trained and what it predicts on its test split."""

    name: str
    path: Path
    summary: dict[str, Any]
    config: TrainConfig
    curves: dict[str, np.ndarray]   # CURVES column -> value per epoch (NaN where absent)
    y_true: np.ndarray              # (test pitches, 20) targets in TARGET_COLUMNS order
    y_pred: np.ndarray              # (test pitches, 20) the model's predictions
    train_mean: np.ndarray          # (20,) training split's mean of each target: predict-the-mean

    @property
    def best_epoch(self) -> int:
        return int(self.summary.get("best_epoch", 0))

    def test_metrics(self, pred: np.ndarray | None = None) -> dict[str, float]:
        """RMSE/MAE of the regressions and KL (summed over shares, mean over pitches) of ``pred``.

        ``pred`` defaults to the model's predictions; pass ``train_mean`` for predict-the-mean.
        """
        p = np.broadcast_to(self.y_pred if pred is None else pred, self.y_true.shape)
        err = p[:, REG] - self.y_true[:, REG]
        out: dict[str, float] = {}
        for j, t in enumerate(REGRESSION_TARGETS):
            out[f"rmse_{t}"] = float(np.sqrt(np.mean(err[:, j] ** 2)))
            out[f"mae_{t}"] = float(np.mean(np.abs(err[:, j])))
        for name, cols in (("watch", WATCH), ("pay", PAY)):
            y, q = self.y_true[:, cols], p[:, cols]
            ylogy = np.where(y > 0, y * np.log(np.where(y > 0, y, 1.0)), 0.0)
            out[f"kl_{name}_batchmean"] = float(np.mean(np.sum(ylogy - y * np.log(q + 1e-9), 1)))
        return out


@dataclass
class StageResult:
    """One stage of a run: final status counts, scores and tokens."""

    name: str
    ok: int = 0
    invalid: int = 0
    failed: int = 0
    missing: int | None = None        # requests never finished, when the pitches are known
    hist: np.ndarray = field(default_factory=lambda: np.zeros(len(SCORES), np.int64))  # scores 1..5
    persona_mean: np.ndarray = field(default_factory=lambda: np.zeros(0))  # mean score per persona (NaN: none)
    expected: np.ndarray = field(default_factory=lambda: np.zeros(0))  # expected scores of the ok replies with them
    prompt_tokens: int = 0
    completion_tokens: int = 0
    records: int = 0                  # lines in the stage's file, retries included
    retried: int = 0                  # records that took more than one HTTP attempt
    reasked: int = 0                  # records whose first reply was unusable and was asked again


@dataclass
class RunResult:
    """A scoring run: what was asked of which model, and per stage what came back."""

    path: Path
    model: str
    endpoint: str
    personas: list[str]
    stages: list[StageResult]
    cost: float | None = None         # from RUN_DIR/usage.json, when something wrote one
    currency: str = ""


# --------------------------------------------------------------------------- models

def _read_json(path: Path) -> dict[str, Any]:
    try:
        obj = json.loads(path.read_text())
    except FileNotFoundError:
        raise InputError(f"{path.parent}: missing {path.name} (not a model directory written by bin/train)") from None
    except (OSError, ValueError) as e:
        raise InputError(f"{path}: unreadable ({str(e).splitlines()[0]})") from None
    if not isinstance(obj, dict):
        raise InputError(f"{path}: not a JSON object")
    return obj


def read_curves(path: Path) -> dict[str, np.ndarray]:
    """The learning-curve columns of ``metrics.csv`` as floats (NaN where a cell is empty)."""
    try:
        with path.open(newline="") as f:
            rows = list(csv.DictReader(f))
    except FileNotFoundError:
        raise InputError(f"{path.parent}: missing {path.name} (not a model directory written by bin/train)") from None
    if not rows:
        raise InputError(f"{path}: no epochs")

    def num(text: str | None, line: int, col: str) -> float:
        try:
            return float(text) if text not in (None, "") else float("nan")
        except ValueError:
            raise InputError(f"{path} line {line}: {col} = {text!r} is not a number") from None

    return {c: np.array([num(r.get(c), i, c) for i, r in enumerate(rows, 2)]) for c in CURVES}


def _existing(given: str | None, trained_on: str | None, what: str, model_dir: Path, flag: str) -> str:
    """The path to read: the one given, else the one the model was trained on, if it is still there."""
    if given:
        return given
    if not trained_on:
        raise InputError(f"{model_dir}: its config names no {what}; pass {flag}")
    if not Path(trained_on).exists():
        raise InputError(f"{model_dir}: trained on {trained_on}, which is not there; pass {flag}")
    return trained_on


def load_model_result(model_dir: str | Path, name: str | None = None, pitches: str | None = None,
                      features: str | None = None, encoding: str | None = None) -> ModelResult:
    """Summary, curves and test-split predictions of the model in ``model_dir``.

    ``encoding`` is the pitches file's; when None, the model's own file is read
    in the encoding it was trained with and a given ``pitches`` as UTF-8.
    """
    d = Path(model_dir)
    if not d.is_dir():
        raise InputError(f"{d}: model directory not found")
    summary = _read_json(d / "summary.json")
    curves = read_curves(d / "metrics.csv")
    net, ck = load_model(d)
    if ck["personas"] != list(PERSONA_KEYS):
        raise InputError(f"{d}: model was trained for personas {', '.join(ck['personas'])}")
    cfg = TrainConfig.from_dict(ck["config"])
    pitches_path = _existing(pitches, cfg.pitches, "pitches file", d, "--pitches")
    df = read_pitches(pitches_path, with_targets=True, encoding=encoding or (None if pitches else cfg.encoding))
    feats = None
    if cfg.with_llm:  # the same pitches as training: refused, or left out with --drop-missing
        features_dir = _existing(features, cfg.features, "features directory", d, "--features")
        feats = read_features(features_dir, df["index"].to_numpy(), cfg.scores)
        keep = ~incomplete(feats)
        if not cfg.drop_missing:
            check_scores(feats, df["index"].to_numpy(), features_dir, kind=cfg.scores)
        elif not keep.all():
            df, feats = df[keep].reset_index(drop=True), {k: v[keep] for k, v in feats.items()}
    n_train, n_seen = split_bounds(len(df))
    sizes = {"train": n_train, "val": n_seen - n_train, "test": len(df) - n_seen}
    if summary.get("n_pitches", sizes) != sizes:
        raise InputError(f"{d}: trained on {summary['n_pitches']} pitches per split, but {pitches_path} gives "
                         f"{sizes}; pass the training data with --pitches / --features")
    x = raw_inputs(df, feats)
    if x.shape[1] != len(ck["inputs"]):
        raise InputError(f"{d}: inputs have {x.shape[1]} columns, the model expects {len(ck['inputs'])}")
    y = df[list(TARGET_COLUMNS)].to_numpy(np.float64)
    pred = predict(net, ck, x[n_seen:]).astype(np.float64)
    return ModelResult(name or f"{d.name} ({cfg.inputs})", d, summary, cfg, curves, y[n_seen:], pred,
                       y[:n_train].mean(0))


# --------------------------------------------------------------------------- runs

def _record_scores(stage: str, scores: Any) -> list[float]:
    """The 1..5 scores of one ok record: every item's for ``buy``, else the stage's feature."""
    if not isinstance(scores, dict):
        return []
    if isinstance(scores.get("scores"), list):
        return [float(s) for s in scores["scores"] if isinstance(s, (int, float))]
    names = STAGES[stage].features[:1] if stage in STAGES else tuple(scores)[:1]
    return [float(scores[n]) for n in names if isinstance(scores.get(n), (int, float))]


def _record_expected(stage: str, scores: Any) -> list[float]:
    """The expected scores of one ok record whose reply's probabilities were found: every item's for ``buy``."""
    if not isinstance(scores, dict):
        return []
    items = scores.get("items" + EXPECTED)
    if isinstance(items, list):
        return [float(s) for s in items if isinstance(s, (int, float))]
    names = STAGES[stage].features[:1] if stage in STAGES else ()
    return [float(scores[n + EXPECTED]) for n in names if isinstance(scores.get(n + EXPECTED), (int, float))]


def _stage(records: RunDir, stage: str, personas: list[str], pitch_index: set[int] | None) -> StageResult:
    res = StageResult(stage)
    final: dict[str, tuple[str, str, list[float], list[float]]] = {}  # id -> (persona, status, scores, expected)
    for rec in records.records(stage):
        res.records += 1
        res.retried += rec.attempts > 1
        res.reasked += rec.reasks > 0
        res.prompt_tokens += int(rec.usage.get("prompt_tokens", 0) or 0)
        res.completion_tokens += int(rec.usage.get("completion_tokens", 0) or 0)
        if pitch_index is not None and rec.meta.get("index") not in pitch_index:
            continue
        seen = final.get(rec.id)
        if rec.ok:
            final[rec.id] = (str(rec.meta.get("persona")), OK, _record_scores(stage, rec.scores),
                             _record_expected(stage, rec.scores))
        elif seen is None or seen[1] != OK:
            final[rec.id] = (str(rec.meta.get("persona")), rec.status, [], [])
    sums, counts = np.zeros(len(personas)), np.zeros(len(personas))
    col = {k: i for i, k in enumerate(personas)}
    expected: list[float] = []
    for persona, status, scores, exp in final.values():
        expected += exp
        if status == OK:
            res.ok += 1
            for s in scores:
                if 1 <= round(s) <= 5:
                    res.hist[round(s) - 1] += 1
            if scores and persona in col:
                sums[col[persona]] += float(np.mean(scores))
                counts[col[persona]] += 1
        elif status == INVALID:
            res.invalid += 1
        else:
            res.failed += 1
    with np.errstate(invalid="ignore", divide="ignore"):
        res.persona_mean = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
    res.expected = np.asarray(expected, float)
    if pitch_index is not None:
        res.missing = max(len(pitch_index) * len(personas) - len(final), 0)
    return res


def _cost(run_dir: Path) -> tuple[float | None, str]:
    """``usage.json``'s ``cost`` (and ``currency``) when the run has one: bin/score and bin/batch keep it,
    priced when they were given prices."""
    obj = read_usage(run_dir)
    cost = obj.get("cost") if isinstance(obj, dict) else None
    if not isinstance(cost, (int, float)) or isinstance(cost, bool):
        return None, ""
    return float(cost), str(obj.get("currency", ""))


def load_run_result(run_dir: str | Path, pitches: str | None = None, encoding: str | None = None) -> RunResult:
    """Every stage of the run in ``run_dir``; with ``pitches`` (read in ``encoding``, default UTF-8), only its
    pitches, and what is missing."""
    d = Path(run_dir)
    if not d.is_dir():
        raise InputError(f"{d}: run directory not found")
    records = RunDir(d)
    manifest = records.manifest()
    personas, groups = manifest.persona_keys, list(manifest.groups)
    if not personas or not groups:
        raise InputError(f"{records.manifest_path}: no personas or stages (not written by bin/score)")
    index = None
    if pitches:
        index = {int(i) for i in load_pitches(pitches, need=(), encoding=encoding)["index"]}
    stages = [_stage(records, g, personas, index) for g in groups]
    cost, currency = _cost(d)
    return RunResult(d, manifest.model or "", manifest.endpoint or "", personas, stages,
                     cost, currency)


# --------------------------------------------------------------------------- features

def load_feature_scores(features_dir: str | Path) -> dict[str, tuple[np.ndarray, np.ndarray]] | None:
    """feature -> (integer matrix, expected matrix) of a features directory with expected scores; None without."""
    d = Path(features_dir)
    if not all((d / feature_file(f, "expected")).is_file() for f in LLM_FEATURES):
        return None
    out = {}
    for f in LLM_FEATURES:
        pair = []
        for path in (d / feature_file(f), d / feature_file(f, "expected")):
            try:
                pair.append(np.asarray(np.load(path, allow_pickle=False), float))
            except (OSError, ValueError) as e:
                raise InputError(f"{path}: not a readable .npy array ({str(e).splitlines()[0]})") from None
        out[f] = (pair[0], pair[1])
    return out
