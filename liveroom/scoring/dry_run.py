"""The dry run (``bin/score --dry-run``, ``bin/batch prepare --dry-run``): per stage, the requests
still to send and their tokens and cost, printed; nothing sent, nothing written (not even the manifest
or the directory).

The command checks every input as the real command does first. The requests
are those the real command would send after what the run directory holds
(:func:`~.plan.plan_jobs` over the same done table; for ``bin/batch prepare``
its own planner, :class:`~.batch.prepare.Preview`: its re-asks, its files, and
without the requests in submitted batches). Their prompt tokens are the token limiter's estimate
(:func:`~.plan.estimate_tokens` of the messages sent), calibrated, when the
run has ok first asks with ``usage``, by the ratio of their real
``prompt_tokens`` to the same estimate of those same requests; their
completion tokens run from the observed mean per request to ``max_tokens``.
Everything here only reads.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Protocol

from ..async_client.engine import Job
from ..async_client.run_dir import RunDir
from .plan import DoneTable, Plan, plan_jobs, prompt_estimate, scan_done
from .prices import Prices
from .usage import usage_of

SAMPLE = 2000  # ok records per stage read to calibrate the estimates


class BatchPreview(Protocol):
    """What ``bin/batch prepare`` would write (:class:`~.batch.prepare.Preview`): its requests, given the
    done table, and once they are all taken, its files and what it left out."""

    def __call__(self, done: DoneTable) -> Iterator[Job]: ...

    @property
    def files(self) -> int: ...

    @property
    def counts(self) -> tuple[int, int, int]: ...  # re-asks, left out as pending, left out as exhausted


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


def observed(plan: Plan, records: RunDir, cap: int = SAMPLE) -> dict[str, Tally]:
    """Per stage, up to ``cap`` ok first asks of the run: their real tokens beside the limiter's estimate."""
    used: dict[str, tuple[int, int]] = {}
    want = DoneTable(plan.pitches["index"].to_numpy(), [s.name for s in plan.stages], [p.key for p in plan.personas])
    for s in plan.stages:
        ids: list[bytes] = []
        for rec in records.records(s.name, damaged=[]):  # a damaged line counts nowhere
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


def estimate(plan: Plan, run_dir: Path, batch: BatchPreview | None = None) -> Estimate:
    """Count and estimate what the command would send, reading ``run_dir`` only."""
    records = RunDir(run_dir)
    done = scan_done(plan, records)
    est = Estimate({s.name: Tally() for s in plan.stages}, observed(plan, records), done.flags.size, done.count())
    for job in plan_jobs(plan, done)[0] if batch is None else batch(done):
        t = est.todo[job.group]
        t.requests += 1
        t.estimated += prompt_estimate(job)
    if batch is not None:
        est.files = batch.files
        est.reasks, est.pending, est.exhausted = batch.counts
    return est


def dry_run(run_dir: Path, plan: Plan, prices: Prices | None, batch: BatchPreview | None = None) -> int:
    """``--dry-run``, called with the plan bin/score (or, with its preview, bin/batch prepare) made from every
    input it checked: print what the run would send and cost; nothing sent, nothing written."""
    RunDir(run_dir).check(plan.manifest)  # a run made by another command is refused, as the real run refuses it
    est = estimate(plan, run_dir, batch)
    held = f"{est.done:,} of its {est.planned:,} requests done" if est.done else "nothing done yet"
    lines = [f"{'batch prepare' if batch else 'score'} --dry-run: nothing sent, nothing written; "
             f"model {plan.params.model}; {run_dir}: {held}", ""]
    lines += table(est, plan.params.max_tokens, prices, batch is not None) + [""]
    lines += notes(est, plan.params.max_tokens, prices, batch is not None)
    print("\n".join(lines))
    return 0


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
