"""The ``scattered`` table of bench/bench_engine.py: where the time goes under 10% scattered 429s.

``bin/score --concurrency 64`` against ``bin/sim-server`` at 200 +- 25 ms, 12,000 requests, without
faults and then with ``--p-429 0.1 --retry-after 1`` (the server holds a 429 for the whole latency),
``--repeats`` pairs. Each run's ratio (req/s over first to last record ``t``, faulty / clean) is split
in two, from the records:

* **the slot-time bound**: a 429 holds its slot for a round trip as an answer does, so the faulty run
  can complete at most clean req/s x requests / HTTP attempts; ``steady`` is the faulty run's rate up to
  the answer to the last job first sent, against that bound;
* **the tail**: from there to the last record, the jobs first sent last waiting out their
  ``Retry-After`` once, twice or more (each 429 adds a second and a round trip) while the slots idle.

Beside them, :func:`model`: the same load played by a client that spends no time at all (an event
simulation: C slots, a 429 holds its slot for the latency, its job waits ``Retry-After`` holding none
and comes back before new jobs), over :data:`SEEDS` draws: the ratio no client can beat, and its spread.
"""

from __future__ import annotations

import argparse
import heapq
import random
import statistics
from collections import deque
from typing import Any

from bench_limits import _run
from harness import Report, Sim, run_records, table

LATENCY, JITTER, N, C, P429, RETRY_AFTER = 0.2, 0.025, 12000, 64, 0.1, 1.0
SEEDS = 200


def model(p: float, seed: int, n: int = N, c: int = C, latency: float = LATENCY, jitter: float = JITTER,
          retry_after: float = RETRY_AFTER) -> float:
    """Req/s (first to last completion) of a client without overhead: ``c`` slots, each attempt a
    uniform ``latency +- jitter``, refused with chance ``p`` and then waiting ``retry_after`` off its
    slot, retried before any new job."""
    rnd = random.Random(seed)
    events: list[tuple[float, int, int]] = []  # (time, 0 answer | 1 retry due, job)
    back: deque[int] = deque()
    free, fresh, now = c, 0, 0.0
    done: list[float] = []
    while True:
        while free and (back or fresh < n):
            if back:
                job = back.popleft()
            else:
                job, fresh = fresh, fresh + 1
            heapq.heappush(events, (now + rnd.uniform(latency - jitter, latency + jitter), 0, job))
            free -= 1
        if not events:
            break
        now, kind, job = heapq.heappop(events)
        if kind == 1:
            back.append(job)
        elif rnd.random() < p:
            free += 1
            heapq.heappush(events, (now + retry_after, 1, job))
        else:
            free += 1
            done.append(now)
    return (len(done) - 1) / (done[-1] - done[0])


def model_ratios(seeds: int = SEEDS) -> list[float]:
    return sorted(model(P429, s) / model(0.0, seeds + s) for s in range(seeds))


def split(clean: dict[str, Any], faulty: dict[str, Any], run_dir: Any) -> dict[str, float]:
    """The faulty run's ratio, its slot-time bound, its rate to the tail and the tail (s)."""
    recs = run_records(run_dir)
    ts = sorted(r["t"] for r in recs)
    last_first = max(r["t"] - r["latency_ms"] / 1000 for r in recs)  # the last job first sent
    end = last_first + LATENCY  # its answer, had it come at once
    steady = sum(t <= end for t in ts) - 1
    bound = clean["rate"] * N / faulty["requests"]
    # what a retry adds to its job beyond its Retry-After and round trip: waiting for a slot, timers
    over = {k: statistics.median(r["latency_ms"] / 1000 - k * LATENCY - (k - 1) * RETRY_AFTER
                                 for r in recs if r["attempts"] == k) for k in (1, 2)}
    return {"ratio": faulty["rate"] / clean["rate"], "bound": bound / clean["rate"],
            "steady": steady / (end - ts[0]) / bound, "tail": ts[-1] - end, "retry": over[2] - over[1]}


def bench_scattered(o: argparse.Namespace, rep: Report) -> dict:
    rows, cmds, splits = [], [], []
    for i in range(1 if o.quick else o.repeats):
        with Sim(LATENCY * 1000, "--jitter-ms", str(JITTER * 1000)) as ok, \
                Sim(LATENCY * 1000, "--jitter-ms", str(JITTER * 1000), "--p-429", str(P429),
                    "--retry-after", str(RETRY_AFTER)) as faulty:
            base = _run(o, f"scatter0-{i}", ok, N, C)
            r = _run(o, f"scatter10-{i}", faulty, N, C)
        s = split(base, r, o.work / f"lim-scatter10-{i}")
        splits.append(s)
        cmds.append(r["cmd"])
        rows.append([f"run {i + 1}", f"{base['rate']:.0f}", f"{r['rate']:.0f}", f"**{s['ratio']:.3f}**",
                     f"{r['requests']:,}", f"{s['bound']:.3f}", f"{s['steady']:.3f}", f"{1000 * s['retry']:.1f} ms",
                     f"{s['tail']:.2f} s"])
    ratios = model_ratios(40 if o.quick else SEEDS)
    under = sum(x < 0.85 for x in ratios) / len(ratios)
    rows.append([f"a client without overhead ({len(ratios)} draws)", "", "", f"median **{statistics.median(ratios):.3f}**"
                 f" ({ratios[0]:.3f}-{ratios[-1]:.3f}); {100 * under:.0f}% under 0.85", "", "", "", "", ""])
    low = [f"{x['ratio']:.3f}" for x in splits if x["ratio"] < 0.85]
    verdict = (f"met ({len(splits)} of {len(splits)})" if not low else
               f"not met in {len(low)} of {len(splits)} ({', '.join(low)}); a client without overhead falls under "
               f"0.85 in {100 * under:.0f}% of the draws")
    rep.add("### 10% scattered 429s: where the time goes\n\n"
            f"`bin/score --concurrency {C}` against `bin/sim-server` at {LATENCY * 1000:.0f} +- {JITTER * 1000:.0f} ms, "
            f"{N:,} requests, without faults and with `--p-429 {P429} --retry-after {RETRY_AFTER:.0f}` "
            "(a 429 held for the whole latency), one pair after the other "
            "(`python bench/bench_engine.py scattered --write-docs`). ratio = faulty / clean req/s over first to "
            "last record `t`; bound = the most a 429 that holds its slot for a round trip leaves (clean req/s x "
            "requests / HTTP attempts, as a share of clean); steady = the faulty rate up to the answer to the "
            "job first sent last, as a share of that bound; per retry = the median time a retry adds to its "
            "job beyond its `Retry-After` and round trip (its wait for a slot, the timers); tail = from there "
            "to the last record (jobs first "
            "sent last waiting out one or more `Retry-After` seconds while the slots idle). The last row plays "
            "the same load through a client that spends no time (an event simulation, bench/bench_scattered.py "
            "`model`): the ratio no client that honours `Retry-After` can beat, and its spread over draws. The "
            "simulator draws a request's 429 from a hash of its content, its seed and the attempt, so the same "
            "jobs are refused in every run with the same input: runs differ by the CPU the machine leaves them, "
            "and the tail is this input's; the model draws anew each time, as another input would. The faulty "
            "run, e.g.:\n\n"
            + "\n".join(f"    {c}" for c in cmds[:1]) + "\n\n"
            + table(["run", "clean req/s", "faulty req/s", "ratio", "HTTP attempts", "bound", "steady", "per retry", "tail"],
                    rows, right=1)
            + f"\n\nTarget >= 0.85 of the clean rate in each run: {verdict}.")
    return {"rows": rows, "splits": splits, "model": ratios, "commands": cmds}
