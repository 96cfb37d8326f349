"""The ``budget`` table of bench/bench_engine.py: where ``bin/score --budget`` stops.

``bin/score --budget B`` against ``bin/sim-server`` (200 ms) with made-up prices, at
``--concurrency`` 8 and 64 and budgets of a few to a hundred worst cases of one job. W is
the largest worst case of the run's jobs, computed as bin/score does
(:class:`~liveroom.scoring.budget.WorstCase`: the first ask and ``--max-reasks`` re-asks, each
at its whole ``max_tokens``); the spent cost is ``usage.json``'s at the end. Target: the run
stops with spent >= B - 2 W and never above B.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from harness import Child, Report, Sim, fresh, run_records, score_cmd, show_cmd, synthetic, table

PRICES = ("--price-input", "2", "--price-output", "8")  # per million tokens; a request costs ~W/37 here
PITCHES = 150  # 3,600 requests: more than any budget below lets go
CASES = ((8, 12), (64, 12), (8, 50), (64, 50))  # (concurrency, budget in W)


def worst_case(pitches: Any, goods: Any, reasks: int = 2) -> float:
    """The largest worst case of a job of the run, at bin/score's defaults and :data:`PRICES`."""
    from liveroom.prompts.stages import STAGES
    from liveroom.scoring.budget import WorstCase
    from liveroom.scoring.plan import ModelParams, make_plan, plan_jobs, scan_done
    from liveroom.scoring.prices import Prices

    plan = make_plan(str(pitches), str(goods), ",".join(STAGES), None, ModelParams(), "http://127.0.0.1/v1")
    worst = WorstCase(Prices(float(PRICES[1]), float(PRICES[3])), reasks)
    return max(worst(job) for job in plan_jobs(plan, scan_done(plan))[0])


def bench_budget(o: argparse.Namespace, rep: Report) -> dict:
    pitches, goods = synthetic(o.work, PITCHES)
    w = worst_case(pitches, goods)
    rows, cmds = [], []
    with Sim(200) as sim:
        for c, k in CASES[:2] if o.quick else CASES:
            budget = round(k * w, 4)
            run = fresh(o.work / f"budget-{c}-{k}")
            cmd = score_cmd(pitches, goods, run, sim.url, c, "--budget", budget, *PRICES)
            log = o.work / f"budget-{c}-{k}.log"
            ch = Child(cmd, log=log).wait(600)
            if ch.rc != 130:
                raise SystemExit(f"bench: {show_cmd(cmd)} exited {ch.rc}, not 130 (budget reached); see {log}")
            spent = json.loads((run / "usage.json").read_text())["cost"]
            met = budget - 2 * w <= spent <= budget
            cmds.append(show_cmd(cmd))
            n = len(run_records(run))
            rows.append([f"C = {c}", f"{budget:.4f} ({k} W)", f"{w:.4f}", f"{spent / n / w:.3f} W" if n else "-",
                         f"{spent:.4f}", f"**{(budget - spent) / w:.2f} W**", f"{n:,}", ch.rc,
                         "yes" if met else "**no**"])
    rep.add("### --budget: where the run stops\n\n"
            f"`bin/score --budget B` against `bin/sim-server` at 200 ms, prices {' '.join(PRICES)}, "
            f"{PITCHES * 24:,} requests to do (more than any of these budgets lets go). W = the largest worst "
            "case of a job of the run, as bin/score computes it (first ask and 2 re-asks, each at its whole "
            "`max_tokens` 1000); a request here costs a few hundredths of W (its mean in the table). spent = `usage.json`'s cost at the "
            "end. Target: stops with spent >= B - 2 W, never above B. A job that does not fit waits for the jobs "
            "in flight to be released; the run stops when one does not fit with nothing in flight. (Before, the "
            "first job that did not fit beside the worst cases in flight stopped the run: budget 0.504, spent "
            "0.165 at C = 8.) One run each (`python bench/bench_engine.py budget --write-docs`). "
            "The run, e.g.:\n\n"
            + "\n".join(f"    {c}" for c in cmds[:1]) + "\n\n"
            + table(["concurrency", "budget B", "W", "mean cost of a request", "spent", "B - spent", "records", "exit", "target met"],
                    rows, right=1))
    return {"rows": rows, "commands": cmds}
