"""The ``probs`` table of bench/bench_engine.py: what ``--score-probs`` costs.

``bin/score`` against ``bin/sim-server`` (latency 0, client on core 0, simulator on core 1) over
the same pitches, without and with ``--score-probs`` (K = 5): the client CPU per request (the
process's user + sys from ``wait4``, less the start-up cost of the same command over the complete
run directory, as the ``cpu`` table measures it), the simulator's CPU per request, the bytes of a
reply body (every request's body posted once more, by a bare aiohttp loop) and the bytes of a
record on disk. The simulator sends K alternatives for every token of a reply, as real servers
do, so the reply bytes are of the size a provider's are for a reply of the same tokens.
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path
from typing import Any

from harness import Child, Report, Sim, fresh, median, score_cmd, show_cmd, spread, synthetic, table

CONCURRENCY = 64
TOP = 5


async def _reply_bytes(url: str, bodies: list[dict[str, Any]]) -> list[int]:
    import aiohttp
    import orjson

    sizes: list[int] = []
    it = iter(bodies)
    async with aiohttp.ClientSession(headers={"Content-Type": "application/json"}) as session:
        async def worker() -> None:
            for body in it:
                async with session.post(url + "/chat/completions", data=orjson.dumps(body)) as resp:
                    sizes.append(len(await resp.read()))

        await asyncio.gather(*(worker() for _ in range(16)))
    return sizes


def reply_bytes(pitches: Path, goods: Path, url: str, top: int | None) -> float:
    """Mean bytes of a reply body to the requests bin/score sends (``top``: with --score-probs)."""
    from liveroom.scoring.plan import ModelParams, make_plan, plan_jobs, scan_done

    plan = make_plan(str(pitches), str(goods), "entry,buy,read", None, ModelParams(top_logprobs=top), url)
    bodies = [j.payload for j in plan_jobs(plan, scan_done(plan))[0]]
    sizes = asyncio.run(_reply_bytes(url, bodies))
    return sum(sizes) / len(sizes)


def bench_probs(o: argparse.Namespace, rep: Report) -> dict:
    n = 25 if o.quick else 100
    pitches, goods = synthetic(o.work, n)
    requests = 24 * n
    rows, out, shown = [], {}, ""
    with Sim(0, cpu=1) as sim:
        for label, flags in (("without", ()), ("--score-probs", ("--score-probs", "--top-logprobs", TOP))):
            client, server, record = [], [], []
            for r in range(o.repeats):
                run = fresh(o.work / f"probs-{bool(flags)}-{r}")
                cmd = score_cmd(pitches, goods, run, sim.url, CONCURRENCY, *flags)
                shown = show_cmd(cmd)
                s0 = sim.cpu()
                total = Child(cmd, cpu=0).wait(600)
                assert total.rc == 0, total.rc
                server.append((sim.cpu() - s0) / requests * 1e6)
                idle = Child(cmd, cpu=0).wait(120)  # over the complete run: sends nothing
                client.append((total.cpu - idle.cpu) / requests * 1e6)
                record.append(sum(f.stat().st_size for f in run.glob("*.jsonl")) / requests)
            body = reply_bytes(pitches, goods, sim.url, TOP if flags else None)
            out[label] = {"client_us": median(client), "sim_us": median(server), "reply_bytes": body,
                          "record_bytes": median(record)}
            rows.append([label, f"{requests:,}", f"**{median(client):.0f}** ({spread(client)})",
                         f"{median(server):.0f}", f"{body:,.0f}", f"{median(record):,.0f}"])
    base, probs = out["without"], out["--score-probs"]
    rows.append(["ratio", "", f"{probs['client_us'] / base['client_us']:.2f}",
                 f"{probs['sim_us'] / base['sim_us']:.2f}", f"{probs['reply_bytes'] / base['reply_bytes']:.1f}",
                 f"{probs['record_bytes'] / base['record_bytes']:.2f}"])
    rep.add(f"### Cost of --score-probs (K = {TOP})\n\n`{shown}` and the same without `--score-probs`; "
            f"latency 0, C = {CONCURRENCY}, client pinned to core 0 and simulator to core 1; client CPU less "
            f"the start-up cost (the same command over the complete run directory); median of {o.repeats} "
            f"(min-max in brackets). Reply bytes: the mean body of every request posted once more.\n\n"
            + table(["requests asked", "requests", "bin/score CPU us/req", "simulator CPU us/req",
                     "reply bytes", "record bytes"], rows))
    return out
