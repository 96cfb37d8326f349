"""From files to tensors on the device, built once.

The pitches CSV gives the 8 tabular columns (time columns computed from
``start`` when absent) and, for training, the 20 targets. FEATURES_DIR gives
``entry.npy``, ``action.npy``, ``read.npy``, ``state.npy`` (pitches x 8
personas, rows in the pitches file's order) and optionally ``index.npy``
(the pitch ``index`` of each row, checked against the file). A model trained
with ``--scores expected`` reads ``entry_expected.npy`` and its kin instead
(:func:`feature_file`), the expected scores ``bin/collect`` writes beside the
integers. Every cell is
a score in 1..5: a NaN (``bin/collect --allow-missing``) or the reference's 0
for a missing reply is refused, naming the count and the first pitches, or
with ``--drop-missing`` those pitches are left out before the split.

Training data is split chronologically (rows in file order, no shuffle) as
the method does: the first ``n * 7 // 10`` pitches train, the next
``n // 10`` validation, the rest (about 20 %) test.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from ..data.inputs import load_pitches
from ..data.layout import (
    EXPECTED,
    LLM_FEATURES,
    N_PERSONAS,
    N_TARGETS,
    PAY,
    PAY_TARGETS,
    SCORE_MAX,
    SCORE_MIN,
    TABULAR_COLUMNS,
    TARGET_COLUMNS,
    WATCH,
    WATCH_TARGETS,
    input_names,
)
from ..data.personas import PERSONA_KEYS
from ..errors import InputError
from .config import TrainConfig
from .loss import debias_weight, ylogy

SPLITS = ("train", "val", "test")


def read_pitches(path: str | Path, with_targets: bool, encoding: str | None = None) -> pd.DataFrame:
    """The pitches file with its tabular columns (and the targets, for training) checked numeric.

    ``encoding`` is the file's text encoding (None: UTF-8, with or without BOM).
    """
    numeric = (*TABULAR_COLUMNS, *(TARGET_COLUMNS if with_targets else ()))
    return load_pitches(path, need=(), numeric=numeric, encoding=encoding)


def _load_npy(path: Path) -> np.ndarray:
    """One .npy file, never unpickled, or a one-line error."""
    if not path.is_file():
        raise InputError(f"{path.parent}: missing {path.name}")
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise InputError(f"{path}: not a readable .npy array ({str(e).splitlines()[0]})") from None


def feature_file(name: str, kind: str = "sampled") -> str:
    """The file of feature ``name`` of score kind ``kind``: ``entry.npy`` (sampled) or ``entry_expected.npy``."""
    return f"{name}{EXPECTED if kind == 'expected' else ''}.npy"


def read_features(directory: str | Path, index: np.ndarray, kind: str = "sampled") -> dict[str, np.ndarray]:
    """The four (pitches x 8) matrices of score kind ``kind``, validated against the pitches' ``index``."""
    directory = Path(directory)
    if not directory.is_dir():
        raise InputError(f"{directory}: features directory not found")
    if kind == "expected":
        absent = [feature_file(n, kind) for n in LLM_FEATURES if not (directory / feature_file(n, kind)).is_file()]
        if absent:
            raise InputError(f"{directory}: missing {absent[0]} (--scores expected reads the expected scores that "
                             "bin/collect writes from a run scored with --score-probs)")
    n, k = len(index), N_PERSONAS
    if (directory / "index.npy").exists():
        idx = _load_npy(directory / "index.npy")
        if idx.shape != (n,):
            raise InputError(f"{directory / 'index.npy'}: shape {idx.shape}, expected ({n},) for {n} pitches")
        diff = np.flatnonzero(idx != index)
        if diff.size:
            r = int(diff[0])
            raise InputError(f"{directory / 'index.npy'}: row {r + 1} is pitch index {idx[r]}, "
                             f"but the pitches file has index {index[r]} there")
    out: dict[str, np.ndarray] = {}
    for name in LLM_FEATURES:
        path = directory / feature_file(name, kind)
        a = _load_npy(path)
        if a.ndim != 2 or a.shape != (n, k):
            raise InputError(f"{path}: shape {a.shape}, expected ({n}, {k}) (pitches x personas)")
        if not np.issubdtype(a.dtype, np.number):
            raise InputError(f"{path}: dtype {a.dtype} is not numeric")
        out[name] = a.astype(np.float64)
    return out


def not_scores(features: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Per matrix, the (pitches x personas) cells that hold no score: NaN or outside 1..5."""
    return {name: ~((a >= SCORE_MIN) & (a <= SCORE_MAX)) for name, a in features.items()}


def incomplete(features: dict[str, np.ndarray]) -> np.ndarray:
    """(pitches,) True where any of a pitch's persona features is not a score."""
    return np.any([bad.any(1) for bad in not_scores(features).values()], axis=0)


def check_scores(features: dict[str, np.ndarray], index: np.ndarray, where: str | Path, hint: str = "",
                 kind: str = "sampled") -> None:
    """Refuse features (of score kind ``kind``) that are not scores, in one line: how many, where, the first pitches."""
    bad = not_scores(features)
    rows = np.flatnonzero(incomplete(features))
    if not rows.size:
        return
    cells = sum(int(b.sum()) for b in bad.values())
    per_file = ", ".join(f"{feature_file(name, kind)} {int(b.sum())}" for name, b in bad.items() if b.any())
    first = []
    for r in rows[:3]:
        name = next(n for n, b in bad.items() if b[r].any())
        k = int(np.flatnonzero(bad[name][r])[0])
        first.append(f"pitch index {index[r]} (row {r + 1}, {feature_file(name, kind)} persona {PERSONA_KEYS[k]} = "
                     f"{features[name][r, k]:g})")
    raise InputError(f"{where}: {cells} feature cell(s) outside {SCORE_MIN:g}..{SCORE_MAX:g} (NaN, or 0 = missing "
                     f"in the reference's files) in {rows.size} of {len(index)} pitches ({per_file}); "
                     f"first: {', '.join(first)}{hint}")


def raw_inputs(pitches: pd.DataFrame, features: dict[str, np.ndarray] | None) -> np.ndarray:
    """(n, 8 or 40) float64 inputs in :func:`liveroom.data.layout.input_names` order."""
    cols = [pitches[list(TABULAR_COLUMNS)].to_numpy(np.float64)]
    if features is not None:
        cols += [features[name] for name in LLM_FEATURES]
    return np.concatenate(cols, 1)


def split_bounds(n: int) -> tuple[int, int]:
    """(end of train, end of val): ``n * 7 // 10`` and ``n // 10`` pitches in file order, as the method.

    Integer arithmetic: ``int(0.7 * n)`` is one less for about 2 % of sizes (n = 90, 170, 1300, ...).
    """
    n_train, n_val = n * 7 // 10, n // 10
    if n_val < 1 or n - n_train - n_val < 1:
        raise InputError(f"{n} pitches are too few to split 70/10/20 (need at least 10)")
    return n_train, n_train + n_val


@dataclass
class Dataset:
    """Everything the loop needs, on the device.

    ``rows`` packs per pitch [x (d) | y (20) | debias weight | y log y of
    watch, pay], so an epoch's shuffle is one gather and a batch is a slice.
    """

    rows: Tensor
    n_in: int
    bounds: tuple[int, int]
    x_mean: Tensor
    x_std: Tensor
    names: list[str]
    dropped: int = 0  # pitches left out before the split (--drop-missing)

    def part(self, split: str) -> Tensor:
        """The rows of one split: ``train``, ``val`` or ``test``."""
        a, b = self.bounds
        return {"train": self.rows[:a], "val": self.rows[a:b], "test": self.rows[b:]}[split]

    def x(self, rows: Tensor) -> Tensor:
        return rows[:, :self.n_in]

    def y(self, rows: Tensor) -> Tensor:
        return rows[:, self.n_in:self.n_in + N_TARGETS]

    def weight(self, rows: Tensor) -> Tensor:
        return rows[:, self.n_in + N_TARGETS]

    def ylogy(self, rows: Tensor) -> Tensor:
        return rows[:, self.n_in + N_TARGETS + 1:]


def build_dataset(pitches: pd.DataFrame, features: dict[str, np.ndarray] | None, *, debias: bool,
                  standardize: bool, device: torch.device) -> Dataset:
    """Split, standardise with training-split statistics, and move to ``device``."""
    x = torch.from_numpy(raw_inputs(pitches, features))
    y = torch.from_numpy(pitches[list(TARGET_COLUMNS)].to_numpy(np.float64))
    bad = np.flatnonzero((pitches[list(WATCH_TARGETS + PAY_TARGETS)].to_numpy() < 0).any(1))
    if bad.size:
        raise InputError(f"pitches: negative share in the prop_* targets at pitch index {pitches['index'].iat[int(bad[0])]}")
    bounds = split_bounds(len(x))
    if standardize:
        mean, std = x[:bounds[0]].mean(0), x[:bounds[0]].std(0)
        std = torch.where(std > 1e-8, std, torch.ones_like(std))
    else:
        mean, std = torch.zeros(x.shape[1], dtype=x.dtype), torch.ones(x.shape[1], dtype=x.dtype)
    if debias and features is not None:
        w = debias_weight(torch.from_numpy(features["action"]), torch.from_numpy(features["state"]))
    else:
        w = torch.ones(len(x), dtype=x.dtype)
    ylogys = torch.stack([ylogy(y[:, WATCH]), ylogy(y[:, PAY])], 1)
    rows = torch.cat([(x - mean) / std, y, w[:, None], ylogys], 1).to(device=device, dtype=torch.float32)
    return Dataset(rows, x.shape[1], bounds, mean.float().to(device), std.float().to(device),
                   input_names(features is not None))


def training_inputs(cfg: TrainConfig, pitches: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, np.ndarray] | None, int]:
    """The pitches (read with :func:`read_pitches`) and the persona features that ``cfg`` trains on.

    Pitches whose features are not all scores are refused, or left out with
    ``drop_missing``; returns the pitches, the features (None for tabular
    inputs) and how many pitches were left out.
    """
    if not cfg.with_llm:
        return pitches, None, 0
    if not cfg.features:
        raise InputError("--features FEATURES_DIR is required with --inputs tabular+llm")
    features = read_features(cfg.features, pitches["index"].to_numpy(), cfg.scores)
    keep = ~incomplete(features)
    if not cfg.drop_missing:
        check_scores(features, pitches["index"].to_numpy(), cfg.features,
                     f"; --drop-missing trains on the {int(keep.sum())} complete pitches", cfg.scores)
    elif not keep.all():
        dropped = int((~keep).sum())
        return pitches[keep].reset_index(drop=True), {k: v[keep] for k, v in features.items()}, dropped
    return pitches, features, 0


def load_training_data(cfg: TrainConfig, device: torch.device) -> Dataset:
    """The configured pitches (and persona features) as a :class:`Dataset` on ``device``.

    Pitches whose features are not all scores are refused, or left out with ``drop_missing``.
    """
    pitches = read_pitches(cfg.pitches, with_targets=True, encoding=cfg.encoding)
    pitches, features, dropped = training_inputs(cfg, pitches)
    data = build_dataset(pitches, features, debias=cfg.debias, standardize=cfg.standardize, device=device)
    data.dropped = dropped
    return data
