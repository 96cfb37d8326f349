"""What a training run is asked to do: :class:`TrainConfig`, the presets, the KL schedules.

Two presets fill the choices the reference made differently:

* ``default``: inputs standardised with training-split mean/std (stored with
  the model); share logits at temperature T = 1 with a constant KL weight of 1,
  so the watch/pay heads learn (the reference's T = 500 and KL weight that
  drops to 0 after 40 batches leave them near uniform); the regression output
  bias starts at the training targets' means; the best epoch by validation
  loss is kept in ``best.pt`` and training stops after ``patience`` = 15
  epochs without improvement.
* ``reference``: raw inputs, T = 500, the reference KL schedule, no early
  stopping, and the last epoch is the model (``best.pt`` = last epoch).

Plain data, no torch: ``bin/train``'s flags and their defaults are read from
here, so its ``--help`` and argument errors load none of the model.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

#: the KL weight schedules of :func:`.loss.kl_weight`
KL_SCHEDULES = ("constant", "reference")

PRESETS: dict[str, dict[str, Any]] = {
    "default": dict(temperature=1.0, kl_schedule="constant", standardize=True, init_bias=True,
                    select_best=True, patience=15),
    "reference": dict(temperature=500.0, kl_schedule="reference", standardize=False, init_bias=False,
                      select_best=False, patience=0),
}


@dataclass
class TrainConfig:
    pitches: str
    out: str
    features: str | None = None
    encoding: str | None = None     # text encoding of the pitches CSV; None: UTF-8, with or without BOM
    device: str = "cpu"
    epochs: int = 150
    batch_size: int = 16
    lr: float = 1e-2
    gamma: float = 0.96
    hidden: int = 64
    temperature: float = 1.0
    dropout: float = 0.1
    seed: int = 0
    inputs: str = "tabular+llm"     # or "tabular"
    debias: bool = True             # causal-debias sample weights (needs the LLM features)
    patience: int = 15              # epochs without a better validation loss; 0 = never stop early
    kl_schedule: str = "constant"   # or "reference"
    standardize: bool = True
    init_bias: bool = True
    select_best: bool = True
    preset: str = "default"
    drop_missing: bool = False      # leave out pitches whose features are not all scores in 1..5
    scores: str = "sampled"         # which value of a score is a feature (layout.SCORE_KINDS); absent = sampled

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        """The config saved in a checkpoint; keys this version does not know are ignored."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    @property
    def with_llm(self) -> bool:
        return self.inputs == "tabular+llm"
