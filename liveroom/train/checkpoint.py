"""Checkpoint files (``best.pt``, ``last.pt``): what they hold, how they are written and read.

A checkpoint is a plain dict of tensors and data that
``torch.load(weights_only=True)`` reads back (no pickled code, safe to load):
``format``, ``model`` (the state dict), ``config``, ``x_mean``/``x_std`` (the
input standardisation), ``inputs``, ``targets``, ``personas``, ``epoch``;
``last.pt`` adds ``best``, ``optimizer``, ``scheduler`` and ``rng`` for
``--resume``. Prediction needs only this module, not the training loop.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..data.layout import TARGET_COLUMNS
from ..data.personas import PERSONA_KEYS
from ..errors import InputError
from .config import TrainConfig
from .model import SalesNet

FORMAT = "liveroom-sales-model/1"


def checkpoint(net: SalesNet, cfg: TrainConfig, x_mean: Tensor, x_std: Tensor, inputs: list[str],
               **extra: Any) -> dict[str, Any]:
    """The dict saved for ``net``: tensors (on the CPU) and plain data only."""
    return {
        "format": FORMAT,
        "model": {k: v.detach().clone().cpu() for k, v in net.state_dict().items()},
        "config": asdict(cfg),
        "x_mean": x_mean.cpu(), "x_std": x_std.cpu(),
        "inputs": list(inputs), "targets": list(TARGET_COLUMNS), "personas": list(PERSONA_KEYS),
        **extra,
    }


def save(obj: dict[str, Any], path: Path) -> None:
    """Write through a temporary file, so a crash never leaves half a checkpoint."""
    tmp = path.with_suffix(".tmp")
    torch.save(obj, tmp)
    tmp.replace(path)


def load_checkpoint(path: Path, device: torch.device | str = "cpu") -> dict[str, Any]:
    """A checkpoint written by :func:`save`, or a one-line :class:`InputError`."""
    try:
        ck = torch.load(path, map_location=device, weights_only=True)
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except Exception as e:  # unpickling errors come in many types
        raise InputError(f"{path}: not a liveroom model checkpoint ({str(e).splitlines()[0][:120]})") from None
    if not isinstance(ck, dict) or ck.get("format") != FORMAT:
        raise InputError(f"{path}: not a liveroom model checkpoint")
    return ck


def build_net(cfg: TrainConfig, n_in: int, device: torch.device) -> SalesNet:
    """A fresh network of the configured shape (weights from torch's current seed)."""
    return SalesNet(n_in, cfg.hidden, cfg.dropout, cfg.temperature).to(device)


def load_model(model_dir: str | Path) -> tuple[SalesNet, dict[str, Any]]:
    """The model in ``MODEL_DIR/best.pt`` (eval mode, CPU) and its checkpoint dict."""
    ck = load_checkpoint(Path(model_dir) / "best.pt")
    net = build_net(TrainConfig.from_dict(ck["config"]), len(ck["inputs"]), torch.device("cpu"))
    net.load_state_dict(ck["model"])
    return net.eval(), ck
