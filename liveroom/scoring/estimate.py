"""The dry run's numbers: per stage, the requests still to send and their tokens and cost.

The requests are those the real command would send after what the run
directory holds (:func:`~.plan.plan_jobs` over the same done table; for
``bin/batch prepare`` also its re-asks, and without the requests in
submitted batches). Their prompt tokens are the token limiter's estimate
(:func:`~.plan.estimate_tokens` of the messages sent), calibrated, when the
run has ok first asks with ``usage``, by the ratio of their real
``prompt_tokens`` to the same estimate of those same requests; their
completion tokens run from the observed mean per request to ``max_tokens``.
Everything here only reads.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterator
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING

import orjson

from ..async_client.checkpoint import Checkpoint
from ..async_client.engine import Job
from ..async_client.record import Record, RecordError, loads
from ..errors import InputError
from .plan import DoneTable, Plan, estimate_tokens, plan_jobs, scan_done

if TYPE_CHECKING:
    from .batch.prepare import ShardLimits
    from .cost import Prices

SAMPLE = 2000  # ok records per stage read to calibrate the estimates


def read_records(checkpoint: Checkpoint, group: str) -> Iterator[Record]:
    """The whole records of ``group``; a damaged line is no record (and counts nowhere), nor a torn tail."""
    path = checkpoint.path(group)
    if not path.exists():
        return
    with open(path, "rb") as f:
        for line in f:
            if line.endswith(b"\n"):
                try:
                    yield loads(line)
                except RecordError:
                    continue


def usage_of(rec: Record, key: str) -> int:
    """A token count of a record's usage; 0 when absent."""
    value = rec.usage.get(key, 0)
    return value if type(value) is int else 0


@dataclass
class Tally:
    """Requests of a stage and their tokens: the limiter's prompt estimate, and the real ones when known."""

    requests: int = 0
    estimated: int = 0
    prompt: int = 0
    completion: int = 0

    def __iadd__(self, other: Tally) -> Tally:
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))
        return self


def prompt_estimate(job: Job) -> int:
    """The token limiter's estimate of a job's prompt: :func:`estimate_tokens` of the messages it sends
    (for a first ask, ``job.tokens`` less ``max_tokens``)."""
    return estimate_tokens(job.payload["messages"], 0)


def observed(plan: Plan, checkpoint: Checkpoint, cap: int = SAMPLE) -> dict[str, Tally]:
    """Per stage, up to ``cap`` ok first asks of the run: their real tokens beside the limiter's estimate."""
    used: dict[str, tuple[int, int]] = {}
    want = DoneTable(plan.pitches["index"].to_numpy(), [s.name for s in plan.stages], [p.key for p in plan.personas])
    for s in plan.stages:
        ids: list[bytes] = []
        for rec in read_records(checkpoint, s.name):
            if rec.ok and not rec.reasks and {"prompt_tokens", "completion_tokens"} <= rec.usage.keys():
                used[rec.id] = usage_of(rec, "prompt_tokens"), usage_of(rec, "completion_tokens")
                ids.append(rec.id.encode())
                if len(ids) >= cap:
                    break
        want.add(s.name, ids)
    want.flags = ~want.flags  # all "done" but the sampled requests: plan_jobs builds only those
    out = {s.name: Tally() for s in plan.stages}
    for job in plan_jobs(plan, want)[0]:
        prompt, completion = used[job.id]
        out[job.group] += Tally(1, prompt_estimate(job), prompt, completion)
    return out


@dataclass
class Estimate:
    """What the dry run found."""

    todo: dict[str, Tally]      # per stage: the requests to send
    seen: dict[str, Tally]      # per stage: the calibration sample
    planned: int                # requests of the plan
    done: int                   # of them ok in the run directory
    files: int | None = None    # batch: request files prepare would write
    reasks: int = 0             # batch: requests sent as a re-ask
    pending: int = 0            # batch: left out, in submitted batches
    exhausted: int = 0          # batch: left out, re-asked --max-reasks times already


def _batch_jobs(args: argparse.Namespace, plan: Plan, done: DoneTable, run_dir: Path, limits: ShardLimits,
                est: Estimate) -> Iterator[Job]:
    """The jobs ``bin/batch prepare`` would write, each line checked as it checks them; nothing written."""
    from .batch.prepare import PrepareResult, _reasked  # here: the batch package imports bin/score's module
    from .batch.state import invalid_records, load_state, pending_ids

    state = load_state(run_dir)  # unreadable state: refused, as prepare refuses it
    if not args.include_submitted:
        pending = [i.encode() for i in pending_ids(run_dir, state)]
        for s in plan.stages:
            done.add(s.name, pending)
    est.pending = done.count() - est.done
    result, size, count, est.files = PrepareResult(run_dir), 0, 0, 0
    for job in _reasked(plan_jobs(plan, done)[0], invalid_records(run_dir, [s.name for s in plan.stages]),
                        args.max_reasks, result):
        line = len(orjson.dumps({"custom_id": job.id, "method": "POST", "url": limits.endpoint,
                                 "body": job.payload})) + 1
        cap = min(limits.max_bytes, limits.max_line_bytes or limits.max_bytes)
        if line > cap:
            raise InputError(f"request {job.id} is {line} bytes, over the {cap} bytes a request line may have "
                             "(--max-bytes, --max-line-bytes); bin/batch prepare would refuse it")
        if not est.files or count >= limits.max_requests or size + line > limits.max_bytes:
            est.files, size, count = est.files + 1, 0, 0
        size, count = size + line, count + 1
        yield job
    est.reasks, est.exhausted = result.reasks, result.exhausted


def estimate(args: argparse.Namespace, plan: Plan, run_dir: Path, batch: ShardLimits | None = None) -> Estimate:
    """Count and estimate what the command would send, reading ``run_dir`` only."""
    checkpoint = Checkpoint(run_dir)
    done = scan_done(plan, checkpoint)
    est = Estimate({s.name: Tally() for s in plan.stages}, observed(plan, checkpoint), done.flags.size, done.count())
    jobs = plan_jobs(plan, done)[0] if batch is None else _batch_jobs(args, plan, done, run_dir, batch, est)
    for job in jobs:
        t = est.todo[job.group]
        t.requests += 1
        t.estimated += prompt_estimate(job)
    return est


# ----------------------------------------------------------------- the table

def _num(n: float) -> str:
    return f"{round(n):,}"


def _money(v: float) -> str:
    return f"{v:,.2f}" if v >= 10 or v == 0 else f"{v:.3g}"  # a small run's cost keeps its digits


def _span(low: float | None, high: float, show: Callable[[float], str]) -> str:
    return f"{show(low)} - {show(high)}" if low is not None else f"up to {show(high)}"


def table(est: Estimate, max_tokens: int, prices: Prices | None, batch: bool) -> list[str]:
    """Per stage and in total: requests, prompt tokens, completion tokens and cost (ranges), and the calibration."""
    pooled = Tally()
    for t in est.seen.values():
        pooled += t
    rows = [["stage", "requests", "prompt tokens", "completion tokens",
             f"cost ({prices.currency})" if prices else "cost", "prompt calibrated on"]]
    sums: list[float] = [0, 0, 0, 0, 0, 0]
    unknown = False  # a stage to send without a completion mean
    for stage, t in est.todo.items():
        s, basis = (est.seen[stage], "this stage") if est.seen[stage].requests else (pooled, "other stages")
        ratio = s.prompt / s.estimated if s.estimated else None
        prompt = t.estimated * ratio if ratio is not None else float(t.estimated)
        low = t.requests * s.completion / s.requests if s.requests else None
        high = float(t.requests * max_tokens)
        unknown |= low is None and t.requests > 0
        costs = (prices.cost(prompt, low or 0, batch), prices.cost(prompt, high, batch)) if prices else (0.0, 0.0)
        for i, v in enumerate((t.requests, prompt, low or 0, high, *costs)):
            sums[i] += v
        rows.append([stage, _num(t.requests), _num(prompt), _span(low, high, _num),
                     _span(costs[0] if low is not None else None, costs[1], _money) if prices else "-",
                     f"{basis}, x{ratio:.3f}" if ratio is not None else "nothing yet (x1)"])
    n, prompt, low, high, cost_low, cost_high = sums
    rows.append(["total", _num(n), _num(prompt), _span(None if unknown else low, high, _num),
                 _span(None if unknown else cost_low, cost_high, _money) if prices else "-", ""])
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(c.ljust(w) if i in (0, 5) else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))).rstrip()
            for r in rows]


def notes(est: Estimate, max_tokens: int, prices: Prices | None, batch: bool) -> list[str]:
    """What the numbers are, under the table."""
    n = sum(t.requests for t in est.seen.values())
    lines = ["prompt tokens: the --tpm limiter's estimate (characters of the messages sent: about one token per "
             "CJK character, high for ASCII), "
             + (f"calibrated by the usage of {n:,} ok first ask(s) in the run: real prompt_tokens / that estimate "
                "for the same requests" if n else "not calibrated: the run holds no ok record with usage yet"),
             "completion tokens: " + ("the observed mean per request (same records) up to " if n else "up to ")
             + f"max_tokens ({max_tokens}) per request"]
    if prices is None:
        lines.append("cost: give --price-input and --price-output (per million tokens) or --price-file to see it")
    else:
        lines.append(f"cost: {prices.input:g} / {prices.output:g} {prices.currency} per million prompt / completion "
                     f"tokens ({prices.source})" + (f", x{prices.batch_discount:g} at the batch price" if batch else "")
                     + "; prices change: check the provider's page")
    if not batch:
        lines.append("not counted: re-asks of unusable replies and retries of failed requests")
    else:
        lines.append(f"would write {est.files} request file(s)"
                     + (f"; {est.reasks} request(s) sent as re-asks after an unusable reply" if est.reasks else "")
                     + (f"; {est.pending} left out: in submitted batches not fetched yet" if est.pending else "")
                     + (f"; {est.exhausted} left out: still unusable after --max-reasks" if est.exhausted else ""))
    return lines
