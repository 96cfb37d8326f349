"""Training: epochs, evaluation, model selection, checkpoints, resume.

:func:`train` reads top to bottom: settings, data, model and optimiser,
metrics file, epochs (steps, evaluation, keep the best, stop early), summary.
The presets and every setting are in :mod:`.config` (``--device`` is resolved
here), the checkpoint format in :mod:`.checkpoint`.

Validation loss (for model selection) is the unweighted mean per-sample loss
with ``w_kl = 1``. On CPU the epochs (steps and evaluation) run on one
thread: at batch 16 every op is tiny, and extra threads only wait on each
other (tenfold slower on a busy machine). Every epoch appends to
``metrics.csv`` and rewrites ``last.pt`` (model, optimiser, scheduler and RNG
state); ``--resume`` continues from it.
"""

from __future__ import annotations

import json
import math
import sys
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterator, TextIO

import torch

from ..data.layout import REG
from ..errors import InputError, LiveroomError
from .checkpoint import build_net, checkpoint, load_checkpoint, save
from .config import TrainConfig
from .data import SPLITS, Dataset, load_training_data
from .loss import kl_weight
from .metrics import Row, append_metrics, evaluate_splits, start_metrics
from .model import FastStep, SalesNet, linear


def resolve_device(name: str) -> torch.device:
    """The torch device for ``--device``, refused with a usable message when absent."""
    if name == "cpu":
        return torch.device("cpu")
    if name == "cuda" or name.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise LiveroomError(f"--device {name}: CUDA is not available here (torch {torch.__version__}); use --device cpu")
        dev = torch.device(name)
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise LiveroomError(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s)")
        return dev
    raise LiveroomError(f"--device {name}: expected cpu, cuda or cuda:N")


def train(cfg: TrainConfig, resume: bool = False, log: TextIO | None = None,
          overrides: tuple[str, ...] = ("epochs", "patience", "device")) -> dict[str, Any]:
    """Train as configured; returns the summary also written to ``summary.json``.

    With ``resume`` the run continues from ``OUT/last.pt``: its config is
    kept, except the fields named in ``overrides`` (and the input paths
    and the pitches file's encoding), which are taken from ``cfg``.
    """
    log = log or sys.stderr
    out = Path(cfg.out)

    # -- settings: a resumed run keeps its own, except what was given
    ck = _last_checkpoint(out) if resume else None
    if ck is not None:
        keep = ("pitches", "features", "encoding", *overrides)
        cfg = TrainConfig.from_dict({**ck["config"], **{k: getattr(cfg, k) for k in keep}})
    device = resolve_device(cfg.device)
    torch.manual_seed(cfg.seed)
    gen = torch.Generator(device=device)
    gen.manual_seed(cfg.seed)

    # -- data
    t_load = time.perf_counter()
    data = load_training_data(cfg, device)
    if ck is not None and ck["inputs"] != data.names:
        raise InputError(f"--resume: {out / 'last.pt'} was trained on other inputs ({len(ck['inputs'])} columns)")
    if cfg.drop_missing:
        print(f"train: --drop-missing: left out {data.dropped} of {data.dropped + len(data.rows)} pitches whose "
              f"features are not all scores in 1..5", file=log)

    # -- model and optimiser
    run = Run.start(cfg, data, gen)
    best, start = Best(), 0
    if ck is not None:
        start, best = run.restore(ck), Best(**ck["best"])
        print(f"train: resuming after epoch {start} from {out / 'last.pt'}", file=log)

    # -- metrics file: a resumed run keeps the epochs before its checkpoint
    out.mkdir(parents=True, exist_ok=True)
    history = start_metrics(out / "metrics.csv", start)
    load_seconds = time.perf_counter() - t_load

    # -- epochs
    stopped_early = False
    with one_thread_on_cpu(device):
        for epoch in range(start + 1, cfg.epochs + 1):
            row = run.epoch(epoch)
            append_metrics(out / "metrics.csv", row)
            history.append(row)
            # -- keep the best (and the state to resume from)
            best.update(row["val_loss"], epoch, cfg.select_best)
            if best.epoch == epoch:
                save(run.checkpoint(epoch=epoch), out / "best.pt")
            save(run.checkpoint(epoch=epoch, best=asdict(best), **run.resume_state()), out / "last.pt")
            print(f"epoch {epoch:4d}  train loss {row['train_batch_loss']:.4f}  val loss {row['val_loss']:.4f}  "
                  f"val rmse log_gmv {row['val_rmse_log_gmv']:.4f}  {row['seconds']:.1f}s", file=log, flush=True)
            # -- stop early
            if cfg.patience and best.bad_epochs >= cfg.patience:
                stopped_early = True
                print(f"train: stopping early, no better validation loss for {cfg.patience} epochs", file=log)
                break

    # -- summary
    summary = run_summary(cfg, data, history, best, stopped_early, load_seconds)
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


# --------------------------------------------------------------------------- phases

def _last_checkpoint(out: Path) -> dict[str, Any]:
    path = out / "last.pt"
    if not path.exists():
        raise InputError(f"--resume: {path} not found (nothing to resume)")
    return load_checkpoint(path)


@dataclass
class Best:
    """The selected epoch, as saved in ``last.pt`` (so a resumed run selects the same way)."""

    epoch: int = 0
    val_loss: float = math.inf
    bad_epochs: int = 0

    def update(self, val_loss: float, epoch: int, select_best: bool) -> None:
        """Count the epoch; it becomes the selected one if better (or always, without selection)."""
        improved = val_loss < self.val_loss
        if improved:
            self.val_loss, self.bad_epochs = val_loss, 0
        else:
            self.bad_epochs += 1
        if improved or not select_best:
            self.epoch = epoch


@dataclass
class Run:
    """The network, its fast step, the optimiser, LR schedule and shuffle generator of one run."""

    cfg: TrainConfig
    data: Dataset
    net: SalesNet
    fast: FastStep
    opt: torch.optim.Adam
    sched: torch.optim.lr_scheduler.ExponentialLR
    gen: torch.Generator

    @classmethod
    def start(cls, cfg: TrainConfig, data: Dataset, gen: torch.Generator) -> Run:
        """A fresh network (from torch's seed) and its optimiser."""
        net = initial_net(cfg, data)
        fast = FastStep(net)
        opt = torch.optim.Adam([fast.flat], lr=cfg.lr, fused=True)
        sched = torch.optim.lr_scheduler.ExponentialLR(opt, gamma=cfg.gamma)
        return cls(cfg, data, net, fast, opt, sched, gen)

    def restore(self, ck: dict[str, Any]) -> int:
        """Load the state of ``last.pt``; returns the epoch it was saved after."""
        self.net.load_state_dict(ck["model"])
        self.opt.load_state_dict(ck["optimizer"])
        self.sched.load_state_dict(ck["scheduler"])
        self.gen.set_state(ck["rng"])
        return int(ck["epoch"])

    def epoch(self, epoch: int) -> Row:
        """One pass over the shuffled training split, the LR decay, and every split's metrics."""
        t0 = time.perf_counter()
        lr = self.opt.param_groups[0]["lr"]
        train_loss = self._steps()
        self.sched.step()
        row: Row = {"epoch": epoch, "train_batch_loss": train_loss, **evaluate_splits(self.net, self.data)}
        row["lr"], row["seconds"] = lr, time.perf_counter() - t0
        return row

    def _steps(self) -> float:
        cfg, data, fast = self.cfg, self.data, self.fast
        train_rows = data.part("train")
        n, B = len(train_rows), cfg.batch_size
        n_batches = math.ceil(n / B)
        self.net.train()
        rows = train_rows[torch.randperm(n, generator=self.gen, device=train_rows.device)]
        loss_sum = torch.zeros((), device=rows.device)
        for b in range(n_batches):
            batch = rows[b * B:(b + 1) * B]
            masks = fast.masks(len(batch), cfg.dropout, self.gen)
            loss_sum += fast.loss_and_grad(data.x(batch), data.y(batch), data.weight(batch), data.ylogy(batch),
                                           kl_weight(b, cfg.kl_schedule), masks)
            self.opt.step()
        return loss_sum.item() / n_batches

    def checkpoint(self, **extra: Any) -> dict[str, Any]:
        return checkpoint(self.net, self.cfg, self.data.x_mean, self.data.x_std, self.data.names, **extra)

    def resume_state(self) -> dict[str, Any]:
        """What ``last.pt`` adds to a model checkpoint so that ``--resume`` continues exactly."""
        return {"optimizer": self.opt.state_dict(), "scheduler": self.sched.state_dict(),
                "rng": self.gen.get_state()}


def initial_net(cfg: TrainConfig, data: Dataset) -> SalesNet:
    """A fresh network (weights from torch's current seed) on the data's device; with ``init_bias``
    the regression head starts at the training targets' means."""
    net = build_net(cfg, data.n_in, data.rows.device)
    if cfg.init_bias:
        with torch.no_grad():
            linear(net.reg, 3).bias.copy_(data.y(data.part("train"))[:, REG].mean(0))
    return net


@contextmanager
def one_thread_on_cpu(device: torch.device) -> Iterator[None]:
    """Batch-16 steps on one CPU thread: more threads only wait on each other."""
    if device.type != "cpu":
        yield
        return
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


def run_summary(cfg: TrainConfig, data: Dataset, history: list[Row], best: Best, stopped_early: bool,
             load_seconds: float) -> dict[str, Any]:
    """summary.json: the selected epoch's val and test metrics, and how the run went."""
    best_row = next((r for r in history if int(r["epoch"]) == best.epoch), None) or {}
    return {
        "best_epoch": best.epoch,
        "epochs_run": int(history[-1]["epoch"]) if history else 0,
        "stopped_early": stopped_early,
        "selection": "lowest validation loss" if cfg.select_best else "last epoch",
        "test": {k[5:]: float(v) for k, v in best_row.items() if k.startswith("test_")},
        "val": {k[4:]: float(v) for k, v in best_row.items() if k.startswith("val_")},
        "load_seconds": load_seconds,
        "n_pitches": {s: len(data.part(s)) for s in SPLITS},
        "dropped_pitches": data.dropped,
        "inputs": data.names,
        "config": asdict(cfg),
    }
