"""``bin/experiment``'s training: every (arm, seed) model at once, each as ``bin/train`` trains it alone.

:func:`run_experiment` reads top to bottom: settings (a run left in OUT is
continued), data (the pitches read once, one dataset per input set and
sample weight), models (each initialised from its own seed exactly as
``bin/train`` does), groups (the models of one data size trained
together, narrower inputs padded: :mod:`.group`), epochs (each model's metrics, best epoch
and early stop as in :mod:`liveroom.train.loop`), summaries.

Each model's directory ``OUT/models/ARM-SEED`` is what ``bin/train`` writes:
``metrics.csv`` (a row per epoch), ``best.pt`` (the selected epoch; what
``bin/predict``, ``bin/serve`` and ``bin/report`` read) and
``summary.json``; its ``seconds`` column is the group's epoch split evenly
over the models in it. After every epoch ``OUT/state.pt`` keeps every running
model's weights, Adam state, shuffle generator and selection state; a rerun
of the same command goes on from there.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TextIO

import torch

from ..errors import InputError
from ..train.checkpoint import checkpoint, save
from ..train.config import TrainConfig
from ..train.data import Dataset, build_dataset, read_pitches, training_inputs
from ..train.loop import Best, initial_net, one_thread_on_cpu, resolve_device, run_summary
from ..train.metrics import Row, append_metrics, read_metrics, start_metrics
from .arms import Experiment
from .group import Group, Member
from .kstep import KNets

FORMAT = "liveroom-experiment/1"


@dataclass
class Model:
    """One (arm, seed): its settings, data, selection state and metrics so far."""

    arm: str
    seed: int
    cfg: TrainConfig
    data: Dataset
    best: Best = field(default_factory=Best)
    history: list[Row] = field(default_factory=list)
    stopped_early: bool = False

    @property
    def name(self) -> str:
        return f"{self.arm}-{self.seed}"

    @property
    def out(self) -> Path:
        return Path(self.cfg.out)


def run_experiment(exp: Experiment, log: TextIO | None = None) -> list[tuple[Model, dict[str, Any]]]:
    """Train every model of ``exp``; returns each model with its ``summary.json``."""
    log = log or sys.stderr
    out = Path(exp.out)
    state_path = out / "state.pt"

    # -- settings: a run left in OUT goes on, if it is this experiment
    state = _load_state(state_path, exp) if state_path.exists() else None
    device = resolve_device(exp.device)

    # -- data
    t_load = time.perf_counter()
    models = _models(exp, device)
    load_seconds = time.perf_counter() - t_load

    # -- models and groups: from state.pt, or fresh
    start = 0
    if state is not None:
        start = int(state["epoch"])
        groups = _restore(state, models, exp, device)
        print(f"experiment: resuming after epoch {start} from {state_path}", file=log)
    else:
        groups = _fresh_groups(list(models.values()), exp, device)
    for m in models.values():
        m.out.mkdir(parents=True, exist_ok=True)
        if state is not None and state["models"][m.name]["stopped"]:
            m.history = read_metrics(m.out / "metrics.csv")
        else:
            m.history = start_metrics(m.out / "metrics.csv", start)

    # -- epochs
    t0, total = time.perf_counter(), len(models)
    with one_thread_on_cpu(device):
        for epoch in range(start + 1, exp.epochs + 1):
            if not groups:
                break
            seconds = []
            for g in groups:
                t = time.perf_counter()
                for k, row in enumerate(g.epoch(epoch)):
                    _record(models[g.members[k].name], row, g.nets, k)
                seconds.append(time.perf_counter() - t)
            # -- stopped models leave their group
            running = {n for n, m in models.items() if not m.stopped_early}
            groups = [kept for g in groups if (kept := g.keep(running)) is not None]
            _save_state(state_path, exp, epoch, models, groups)
            left = sum(seconds) * (exp.epochs - epoch)  # an upper bound: models that stop early cost less
            print(f"experiment: epoch {epoch}/{exp.epochs}: {len(running)} of {total} models training, "
                  f"{sum(seconds):.1f} s this epoch, elapsed {_clock(time.perf_counter() - t0)}, "
                  f"at most {_clock(left if groups else 0)} left", file=log, flush=True)

    # -- summaries
    results = []
    for m in models.values():
        summary = run_summary(m.cfg, m.data, m.history, m.best, m.stopped_early, load_seconds)
        summary["experiment"] = {"arm": m.arm, "seed": m.seed, "out": str(out)}
        (m.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        results.append((m, summary))
    return results


# --------------------------------------------------------------------------- phases

def _models(exp: Experiment, device: torch.device) -> dict[str, Model]:
    """Every (arm, seed) with its dataset; the pitches file is read once, a dataset built per input set."""
    pitches = read_pitches(exp.pitches, with_targets=True, encoding=exp.encoding)
    inputs: dict[tuple, tuple] = {}
    datasets: dict[tuple, Dataset] = {}
    models: dict[str, Model] = {}
    for arm, seed in exp.models():
        cfg = exp.config(arm, seed)
        read = (cfg.with_llm, cfg.scores if cfg.with_llm else None)
        if read not in inputs:
            inputs[read] = training_inputs(cfg, pitches)
        key = (*read, cfg.debias, cfg.standardize)
        if key not in datasets:
            p, features, dropped = inputs[read]
            datasets[key] = build_dataset(p, features, debias=cfg.debias, standardize=cfg.standardize,
                                          device=device)
            datasets[key].dropped = dropped
        m = Model(arm, seed, cfg, datasets[key])
        models[m.name] = m
    return models


def _members(models: list[Model], device: torch.device, rng: list[torch.Tensor] | None = None) -> list[Member]:
    members = []
    for i, m in enumerate(models):
        gen = torch.Generator(device=device)
        if rng is None:
            gen.manual_seed(m.seed)  # as bin/train: the shuffle and dropout generator starts at the seed
        else:
            gen.set_state(rng[i])
        members.append(Member(m.name, m.data, m.cfg.kl_schedule, gen))
    return members


def _fresh_groups(models: list[Model], exp: Experiment, device: torch.device) -> list[Group]:
    """New networks, initialised as bin/train does, grouped by data size (all together unless --drop-missing)."""
    by_shape: dict[int, list[Model]] = {}
    for m in models:
        by_shape.setdefault(len(m.data.rows), []).append(m)
    groups = []
    for ms in by_shape.values():
        nets = []
        for m in ms:
            torch.manual_seed(m.seed)
            nets.append(initial_net(m.cfg, m.data))
        groups.append(Group(_members(ms, device), KNets.stack(nets, exp.dropout), exp.lr, exp.gamma, exp.batch_size))
    return groups


def _record(m: Model, row: Row, nets: KNets, k: int) -> None:
    """One epoch of model ``m`` (model ``k`` of ``nets``): metrics, the best epoch's weights, early stop."""
    epoch = int(row["epoch"])
    append_metrics(m.out / "metrics.csv", row)
    m.history.append(row)
    m.best.update(row["val_loss"], epoch, m.cfg.select_best)
    if m.best.epoch == epoch:
        ck = checkpoint(nets.net(k), m.cfg, m.data.x_mean, m.data.x_std, m.data.names, epoch=epoch)
        save(ck, m.out / "best.pt")
    if m.cfg.patience and m.best.bad_epochs >= m.cfg.patience:
        m.stopped_early = True


# --------------------------------------------------------------------------- state.pt

def _save_state(path: Path, exp: Experiment, epoch: int, models: dict[str, Model], groups: list[Group]) -> None:
    save({"format": FORMAT, "spec": exp.spec(), "epoch": epoch,
          "models": {n: {"best": asdict(m.best), "stopped": m.stopped_early} for n, m in models.items()},
          "groups": [g.state() for g in groups]}, path)


def _load_state(path: Path, exp: Experiment) -> dict[str, Any]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # unpickling errors come in many types
        raise InputError(f"{path}: not an experiment state file ({str(e).splitlines()[0][:120]})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise InputError(f"{path}: not an experiment state file")
    old, new = state["spec"], exp.spec()
    diff = [k for k in new if old.get(k) != new[k]]
    if diff:
        k = diff[0]
        raise InputError(f"{path.parent} holds an experiment with other settings ({k}: {old.get(k)} there, "
                         f"{new[k]} now); give another --out, or the same settings to continue it")
    return state


def _restore(state: dict[str, Any], models: dict[str, Model], exp: Experiment, device: torch.device) -> list[Group]:
    """The groups saved in ``state``, and every model's selection state."""
    for name, s in state["models"].items():
        models[name].best, models[name].stopped_early = Best(**s["best"]), bool(s["stopped"])
    groups = []
    for g in state["groups"]:
        ms = [models[n] for n in g["names"]]
        temps = torch.tensor([m.cfg.temperature for m in ms], dtype=torch.float32)
        nets = KNets([p.to(device) for p in g["params"]], temps, exp.dropout, [m.data.n_in for m in ms])
        groups.append(Group(_members(ms, device, g["rng"]), nets, float(g["lr"]), exp.gamma, exp.batch_size,
                            {k: g[k] for k in ("step", "exp_avg", "exp_avg_sq")}))
    return groups


def _clock(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"
