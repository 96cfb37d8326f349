"""What an experiment trains: the arms, the seeds, and one :class:`TrainConfig` per (arm, seed).

An arm is a set of ``bin/train`` flags (``llm`` and ``llm-expected`` differ
only in ``--scores``: the sampled integers against the expected scores); model (arm, seed) is the model that
``bin/train`` with those flags and ``--seed seed`` trains (:func:`train_argv`
spells the command out). Plain data, no torch: ``bin/experiment --help``
and its argument errors load none of the model.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path

from ..train.config import PRESETS, TrainConfig

#: arm name -> (what it is, TrainConfig fields, the bin/train flags that give them)
ARMS: dict[str, tuple[str, dict, tuple[str, ...]]] = {
    "tabular": ("tabular only", dict(inputs="tabular", debias=False), ("--inputs", "tabular", "--no-debias")),
    "llm": ("+ LLM features", dict(inputs="tabular+llm", debias=False), ("--no-debias",)),
    "llm+debias": ("+ LLM features + debias", dict(inputs="tabular+llm", debias=True), ()),
    "llm-expected": ("+ LLM features, expected scores", dict(inputs="tabular+llm", debias=False, scores="expected"),
                     ("--no-debias", "--scores", "expected")),
    "llm+debias-expected": ("+ LLM features + debias, expected scores",
                            dict(inputs="tabular+llm", debias=True, scores="expected"), ("--scores", "expected")),
    "reference": ("reference preset (+ LLM features + debias; no early stopping, last epoch kept)",
                  dict(inputs="tabular+llm", debias=True, preset="reference", **PRESETS["reference"]),
                  ("--preset", "reference")),
}
DEFAULT_ARMS = "tabular,llm,llm+debias"
DEFAULT_SEEDS = "0-4"
#: the arm the others are compared with, when it is run
BASELINE = "tabular"


def parse_arms(text: str) -> list[str]:
    """``tabular,llm,...`` -> arm names, in the order given (an argparse ``type=``)."""
    arms = [a.strip() for a in text.split(",") if a.strip()]
    unknown = [a for a in arms if a not in ARMS]
    if unknown or not arms:
        raise argparse.ArgumentTypeError(f"unknown arm {unknown[0]!r}; arms are {', '.join(ARMS)}" if unknown
                                         else "no arm given")
    if len(set(arms)) < len(arms):
        raise argparse.ArgumentTypeError(f"an arm is named twice in {text!r}")
    return arms


def parse_seeds(text: str) -> list[int]:
    """``0-4``, ``0,3,7`` or ``0-2,9`` -> the seeds, in order (an argparse ``type=``)."""
    seeds: list[int] = []
    for part in (p.strip() for p in text.split(",")):
        lo, sep, hi = part.partition("-")
        try:
            a, b = int(lo), int(hi) if sep else int(lo)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected seeds like 0-4 or 0,3,7, got {text!r}") from None
        if a < 0 or b < a:
            raise argparse.ArgumentTypeError(f"{part!r}: expected a range FROM-TO of seeds >= 0 with FROM <= TO")
        seeds += range(a, b + 1)
    if len(set(seeds)) < len(seeds):
        raise argparse.ArgumentTypeError(f"a seed is named twice in {text!r}")
    return seeds


@dataclass
class Experiment:
    """One experiment's settings: the data, the arms and seeds, and the training settings they share."""

    pitches: str
    out: str
    features: str | None = None
    arms: list[str] = field(default_factory=lambda: parse_arms(DEFAULT_ARMS))
    seeds: list[int] = field(default_factory=lambda: parse_seeds(DEFAULT_SEEDS))
    encoding: str | None = None
    device: str = "cpu"
    epochs: int = TrainConfig.epochs
    patience: int = TrainConfig.patience     # the default-preset arms'; the reference arm never stops early
    batch_size: int = TrainConfig.batch_size
    lr: float = TrainConfig.lr
    gamma: float = TrainConfig.gamma
    hidden: int = TrainConfig.hidden
    dropout: float = TrainConfig.dropout
    drop_missing: bool = False

    def models(self) -> list[tuple[str, int]]:
        """Every (arm, seed), arm by arm."""
        return [(arm, seed) for arm in self.arms for seed in self.seeds]

    def model_dir(self, arm: str, seed: int) -> Path:
        return Path(self.out) / "models" / f"{arm}-{seed}"

    def config(self, arm: str, seed: int) -> TrainConfig:
        """The TrainConfig of model (arm, seed): ``bin/train``'s for :func:`train_argv`."""
        arm_fields = dict(ARMS[arm][1])
        settings = {**PRESETS[arm_fields.get("preset", "default")], "patience": self.patience, **arm_fields}
        features = self.features if arm_fields["inputs"] != "tabular" else None  # not read: not recorded
        return TrainConfig(pitches=self.pitches, out=str(self.model_dir(arm, seed)), features=features,
                           encoding=self.encoding, device=self.device, epochs=self.epochs,
                           batch_size=self.batch_size, lr=self.lr, gamma=self.gamma, hidden=self.hidden,
                           dropout=self.dropout, seed=seed, drop_missing=self.drop_missing, **settings)

    def train_argv(self, arm: str, seed: int, out: str | Path) -> list[str]:
        """The ``bin/train`` arguments that train model (arm, seed) alone, into ``out``."""
        argv = ["--pitches", self.pitches, "--out", str(out), "--seed", str(seed), "--epochs", str(self.epochs)]
        if self.features and ARMS[arm][1]["inputs"] != "tabular":
            argv += ["--features", self.features]
        if arm != "reference":
            argv += ["--patience", str(self.patience)]
        d = TrainConfig("", "")
        for flag, value, default in (("--batch-size", self.batch_size, d.batch_size), ("--lr", self.lr, d.lr),
                                     ("--gamma", self.gamma, d.gamma), ("--hidden", self.hidden, d.hidden),
                                     ("--dropout", self.dropout, d.dropout), ("--device", self.device, d.device),
                                     ("--encoding", self.encoding, None)):
            if value != default:
                argv += [flag, str(value)]
        if self.drop_missing:
            argv.append("--drop-missing")
        return argv + list(ARMS[arm][2])

    def spec(self) -> dict:
        """What a resumed experiment must share with the one it continues (all but epochs, patience, device,
        which may change on the way as with ``bin/train --resume``)."""
        keep = ("pitches", "features", "arms", "seeds", "batch_size", "lr", "gamma", "hidden", "dropout",
                "drop_missing")
        spec = {k: getattr(self, k) for k in keep}
        spec.update({k: str(Path(spec[k]).resolve()) for k in ("pitches", "features") if spec[k]})
        return spec
