"""Training: epochs, evaluation, model selection, checkpoints, resume.

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

Validation loss (for model selection) is the unweighted mean per-sample loss
with ``w_kl = 1``. On CPU the epochs (steps and evaluation) run on one
thread: at batch 16 every op is tiny, and extra threads only wait on each
other (tenfold slower on a busy machine). Every epoch appends to
``metrics.csv`` and rewrites ``last.pt`` (model, optimiser, scheduler and RNG state); ``--resume``
continues from it.
"""

from __future__ import annotations

import csv
import json
import math
import sys
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Iterator, TextIO

import torch
from torch import Tensor

from ..errors import InputError, LiveroomError
from ..data.layout import REGRESSION_TARGETS, TARGET_COLUMNS
from ..data.personas import PERSONA_KEYS
from .data import SPLITS, Dataset, build_dataset, read_features, read_pitches
from .loss import kl, kl_weight, per_sample_loss
from .model import FastStep, SalesNet

PRESETS: dict[str, dict] = {
    "default": dict(temperature=1.0, kl_schedule="constant", standardize=True, init_bias=True,
                    select_best=True, patience=15),
    "reference": dict(temperature=500.0, kl_schedule="reference", standardize=False, init_bias=False,
                      select_best=False, patience=0),
}
FORMAT = "liveroom-sales-model/1"


@dataclass
class TrainConfig:
    pitches: str
    out: str
    features: str | None = None
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

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


def resolve_device(name: str) -> torch.device:
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


@contextmanager
def one_thread_on_cpu(device: torch.device) -> Iterator[None]:
    if device.type != "cpu":
        yield
        return
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


# --------------------------------------------------------------------------- evaluation

@torch.no_grad()
def evaluate(net: SalesNet, data: Dataset, rows: Tensor, chunk: int = 65536) -> dict[str, float]:
    """RMSE and MAE of the 4 regressions, KL of the shares, and loss on ``rows``."""
    net.eval()
    sq = torch.zeros(4, device=rows.device)
    ab = torch.zeros(4, device=rows.device)
    kls = torch.zeros(2, device=rows.device)
    loss = torch.zeros((), device=rows.device)
    for part in rows.split(chunk):
        x, y = data.x(part), data.y(part)
        reg, watch, pay = net(x)
        err = reg - y[:, :4]
        sq += (err * err).sum(0)
        ab += err.abs().sum(0)
        kls += torch.stack([kl(y[:, 4:12], watch).sum(), kl(y[:, 12:20], pay).sum()])
        loss += per_sample_loss(reg, watch, pay, y, 1.0).sum()
    n = len(rows)
    out = {}
    for t, s, a in zip(REGRESSION_TARGETS, (sq / n).sqrt().tolist(), (ab / n).tolist()):
        out[f"rmse_{t}"], out[f"mae_{t}"] = s, a
    out["kl_watch"], out["kl_pay"] = (kls / n).tolist()
    out["loss"] = loss.item() / n
    return out


# --------------------------------------------------------------------------- checkpoints

def checkpoint(net: SalesNet, cfg: TrainConfig, data: Dataset, **extra) -> dict:
    """A dict that ``torch.load(weights_only=True)`` reads back: tensors and plain data only."""
    return {
        "format": FORMAT,
        "model": {k: v.detach().clone().cpu() for k, v in net.state_dict().items()},
        "config": asdict(cfg),
        "x_mean": data.x_mean.cpu(), "x_std": data.x_std.cpu(),
        "inputs": list(data.names), "targets": list(TARGET_COLUMNS), "personas": list(PERSONA_KEYS),
        **extra,
    }


def load_checkpoint(path: Path, device: torch.device | str = "cpu") -> dict:
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
    return SalesNet(n_in, cfg.hidden, cfg.dropout, cfg.temperature).to(device)


def _save(obj: dict, path: Path) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(obj, tmp)
    tmp.replace(path)


# --------------------------------------------------------------------------- training

def metric_names() -> list[str]:
    per_split = [f"{m}_{t}" for t in REGRESSION_TARGETS for m in ("rmse", "mae")] + ["kl_watch", "kl_pay", "loss"]
    return ["epoch", "train_batch_loss", *(f"{s}_{m}" for s in SPLITS for m in per_split), "lr", "seconds"]


def train(cfg: TrainConfig, resume: bool = False, log: TextIO | None = None,
          overrides: tuple[str, ...] = ("epochs", "patience", "device")) -> dict:
    """Train as configured; returns the summary also written to ``summary.json``.

    With ``resume`` the run continues from ``OUT/last.pt``: its config is
    kept, except the fields named in ``overrides`` (and the input paths),
    which are taken from ``cfg``.
    """
    log = log or sys.stderr
    out = Path(cfg.out)
    last_path = out / "last.pt"
    ck = None
    if resume:
        if not last_path.exists():
            raise InputError(f"--resume: {last_path} not found (nothing to resume)")
        ck = load_checkpoint(last_path)
        keep = ("pitches", "features", *overrides)
        cfg = TrainConfig.from_dict({**ck["config"], **{k: getattr(cfg, k) for k in keep}})
    device = resolve_device(cfg.device)
    torch.manual_seed(cfg.seed)
    gen = torch.Generator(device=device)
    gen.manual_seed(cfg.seed)

    t_load = time.perf_counter()
    with_llm = cfg.inputs == "tabular+llm"
    pitches = read_pitches(cfg.pitches, with_targets=True)
    features = None
    if with_llm:
        if not cfg.features:
            raise InputError("--features FEATURES_DIR is required with --inputs tabular+llm")
        features = read_features(cfg.features, pitches["index"].to_numpy())
    data = build_dataset(pitches, features, debias=cfg.debias, standardize=cfg.standardize, device=device)
    del pitches, features
    if ck is not None and ck["inputs"] != data.names:
        raise InputError(f"--resume: {last_path} was trained on other inputs ({len(ck['inputs'])} columns)")

    net = build_net(cfg, data.n_in, device)
    if cfg.init_bias:
        with torch.no_grad():
            net.reg[3].bias.copy_(data.y(data.part("train"))[:, :4].mean(0))
    fast = FastStep(net)
    opt = torch.optim.Adam([fast.flat], lr=cfg.lr, fused=True)
    sched = torch.optim.lr_scheduler.ExponentialLR(opt, gamma=cfg.gamma)
    start, best = 0, {"epoch": 0, "val_loss": math.inf, "bad_epochs": 0}
    if ck is not None:
        net.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        sched.load_state_dict(ck["scheduler"])
        gen.set_state(ck["rng"])
        start, best = ck["epoch"], dict(ck["best"])
        print(f"train: resuming after epoch {start} from {last_path}", file=log)
    out.mkdir(parents=True, exist_ok=True)
    metrics_path = out / "metrics.csv"
    history = _read_metrics(metrics_path)[:start] if ck is not None else []
    with metrics_path.open("w", newline="") as f:
        w = csv.DictWriter(f, metric_names())
        w.writeheader()
        w.writerows(history)
    load_seconds = time.perf_counter() - t_load

    train_rows = data.part("train")
    n_train, B = len(train_rows), cfg.batch_size
    n_batches = math.ceil(n_train / B)
    w_kl = [kl_weight(b, cfg.kl_schedule) for b in range(n_batches)]
    stopped_early = False
    with one_thread_on_cpu(device):
        for epoch in range(start + 1, cfg.epochs + 1):
            t0 = time.perf_counter()
            lr = opt.param_groups[0]["lr"]
            net.train()
            rows = train_rows[torch.randperm(n_train, generator=gen, device=device)]
            loss_sum = torch.zeros((), device=device)
            for b in range(n_batches):
                batch = rows[b * B:(b + 1) * B]
                masks = fast.masks(len(batch), cfg.dropout, gen)
                loss = fast.loss_and_grad(data.x(batch), data.y(batch), data.weight(batch), data.ylogy(batch),
                                          w_kl[b], masks)
                opt.step()
                loss_sum += loss
            sched.step()
            row = {"epoch": epoch, "train_batch_loss": loss_sum.item() / n_batches}
            for split in SPLITS:
                row.update({f"{split}_{k}": v for k, v in evaluate(net, data, data.part(split)).items()})
            row["lr"], row["seconds"] = lr, time.perf_counter() - t0
            with metrics_path.open("a", newline="") as f:
                csv.DictWriter(f, metric_names()).writerow(row)
            history.append(row)

            improved = row["val_loss"] < best["val_loss"]
            if improved:
                best.update(val_loss=row["val_loss"], bad_epochs=0)
            else:
                best["bad_epochs"] += 1
            if improved or not cfg.select_best:  # best.pt: the selected model
                best["epoch"] = epoch
                _save(checkpoint(net, cfg, data, epoch=epoch), out / "best.pt")
            _save(checkpoint(net, cfg, data, epoch=epoch, best=best, optimizer=opt.state_dict(),
                             scheduler=sched.state_dict(), rng=gen.get_state()), last_path)
            print(f"epoch {epoch:4d}  train loss {row['train_batch_loss']:.4f}  val loss {row['val_loss']:.4f}  "
                  f"val rmse log_gmv {row['val_rmse_log_gmv']:.4f}  {row['seconds']:.1f}s", file=log, flush=True)
            if cfg.patience and best["bad_epochs"] >= cfg.patience:
                stopped_early = True
                print(f"train: stopping early, no better validation loss for {cfg.patience} epochs", file=log)
                break

    best_row = next((r for r in history if int(r["epoch"]) == best["epoch"]), None)
    summary = {
        "best_epoch": best["epoch"],
        "epochs_run": int(history[-1]["epoch"]) if history else 0,
        "stopped_early": stopped_early,
        "selection": "lowest validation loss" if cfg.select_best else "last epoch",
        "test": {k[5:]: float(v) for k, v in (best_row or {}).items() if k.startswith("test_")},
        "val": {k[4:]: float(v) for k, v in (best_row or {}).items() if k.startswith("val_")},
        "load_seconds": load_seconds,
        "n_pitches": {s: len(data.part(s)) for s in SPLITS},
        "inputs": data.names,
        "config": asdict(cfg),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def _read_metrics(path: Path) -> list[dict]:
    if not path.exists():
        return []
    with path.open(newline="") as f:
        return list(csv.DictReader(f))
