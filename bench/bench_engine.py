"""Scoring-engine benchmarks: ``bin/score`` against ``bin/sim-server`` on loopback.

Every measurement runs the real commands as separate processes (the server in
its own process, started with ``--port 0``), repeats each point (``--repeats``,
default 3) and reports the median; ratios are computed within the same run.

    python bench/bench_engine.py all [--write-docs]      # every table (about 40 minutes)
    python bench/bench_engine.py --quick all             # small sizes, one repeat: a smoke test
    python bench/bench_engine.py throughput|cpu|oldway|resume|memory|ratelimit|limits|budget|scattered|probs [...]

Tables:

* ``throughput``: concurrency 8/64/256 x server latency 0/50/200 ms (and
  50 +- 25 ms) against the ideal ``min(C / latency, rpm / 60)`` and against a
  bare aiohttp client on the same server. The rate is taken over the sending
  period: (records - 1) / (last ``t`` - first ``t``) of the run's JSONL, so
  interpreter start-up and input loading are not in it.
* ``cpu``: client CPU (user + sys of the ``bin/score`` process, from
  ``wait4``) per request at latency 0, minus the start-up cost measured with
  the same command over the already complete run directory (which sends
  nothing), client and server pinned to their own cores; and the floor: a
  bare aiohttp loop on uvloop posting the same payloads at the same
  concurrency (CPU measured around the send loop only).
* ``oldway``: 8 processes x 1 request in flight (rows ``row % 8 == i``, each
  on its own shard file and run directory, started together) against one
  ``bin/score --concurrency 64``; wall time from start to the last exit.
* ``memory``: peak RSS (``VmHWM``) of ``bin/score`` with 10k/100k/1M
  requests queued, stopped with SIGTERM after a while; and when resuming a run
  directory holding 1M ok records (:mod:`bench_scale`, as the next two).
* ``resume``: time from process start to the first request at the server and
  to exit, on a run directory holding 1M records of which a few hundred are
  not done.
* ``ratelimit``: ``--rpm``/``--tpm`` runs of 70 s; the busiest second and
  the busiest 60-s window seen by the server (requests) and in the records
  (tokens used).
* ``limits``: the limits real providers enforce (an in-flight cap with and
  without a provider code, scattered 429s, a server-side rpm window, arrears),
  the live concurrency limit against ``--fixed-concurrency`` in the same run
  (:mod:`bench_limits`).
* ``budget``: where ``--budget`` stops, in worst cases of one job (:mod:`bench_budget`).
* ``probs``: what ``--score-probs`` costs: client and simulator CPU per request, reply and record
  bytes, with and without it (:mod:`bench_probs`).
* ``scattered``: 10% scattered 429s at 200 ms, ``--repeats`` runs, the time split into the slot-time
  bound and the tail, beside a client without overhead (:mod:`bench_scattered`).

The helpers every table shares (child processes, the simulator, inputs, the Markdown
tables and the docs they go to) are :mod:`harness`'s.

Every load is bounded in count and in time (each child has a timeout and is
killed past it); servers bind 127.0.0.1 only. Work files go to
``runs/bench-engine`` (``--work``).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import math
import subprocess
import sys
import time
from pathlib import Path
from typing import Sequence

from bench_budget import bench_budget
from bench_limits import bench_limits
from bench_probs import bench_probs
from bench_scale import bench_memory, bench_ratelimit, bench_resume
from bench_scattered import bench_scattered
from harness import (
    PY,
    ROOT,
    SECTION,
    Child,
    Report,
    Sim,
    fresh,
    load_now,
    machine_line,
    median,
    pinned,
    score_cmd,
    send_rate,
    shard,
    show_cmd,
    spread,
    synthetic,
    table,
    write_docs,
)

# ----------------------------------------------------------------------------- floor: bare aiohttp


def build_payloads(pitches: Path, goods: Path, url: str) -> list[bytes]:
    """The chat-completions bodies bin/score would send for these inputs, serialized."""
    import orjson

    from liveroom.scoring.plan import ModelParams, make_plan, plan_jobs, scan_done

    plan = make_plan(str(pitches), str(goods), "entry,buy,read", None, ModelParams(), url)
    jobs, _ = plan_jobs(plan, scan_done(plan))
    return [orjson.dumps(j.payload) for j in jobs]


async def _floor_loop(url: str, bodies: list[bytes], concurrency: int, via_client: bool = False) -> list[float]:
    """Post every body with ``concurrency`` workers; the wall-clock time each reply came back."""
    import aiohttp
    import orjson

    done: list[float] = []
    it = iter(bodies)
    if via_client:  # the project's ChatClient (timeout, headers, status handling) around the same session
        from liveroom.async_client.chat import ChatClient

        async with ChatClient(url.removesuffix("/chat/completions"), None, 120.0, concurrency) as client:
            payloads = [orjson.loads(b) for b in bodies]
            it = iter(payloads)

            async def one() -> None:
                for payload in it:
                    await client.complete(payload)
                    done.append(time.time())

            await asyncio.gather(*(one() for _ in range(concurrency)))
        return done
    async with aiohttp.ClientSession(headers={"Content-Type": "application/json"},
                                     connector=aiohttp.TCPConnector(limit=concurrency)) as session:
        async def worker() -> None:
            for body in it:
                async with session.post(url, data=body) as resp:
                    data = orjson.loads(await resp.read())
                    assert resp.status == 200 and data["choices"][0]["message"]["content"]
                done.append(time.time())

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return done


def floor_main(args: argparse.Namespace) -> int:
    """Internal: a bare aiohttp loop, run as its own process; prints one JSON line."""
    import resource

    from liveroom.async_client.runner import run_loop  # uvloop and the collector settings bin/score runs with

    bodies = build_payloads(Path(args.pitches), Path(args.goods), args.url)
    r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    done = run_loop(_floor_loop(args.url.rstrip("/") + "/chat/completions", bodies, args.concurrency,
                                  args.via_client))
    r1, t1 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    period = (len(done) - 1) / (done[-1] - done[0]) if len(done) > 1 and done[-1] > done[0] else float("nan")
    print(json.dumps({"requests": len(bodies), "cpu_s": cpu, "wall_s": t1 - t0, "period_rate": period}))
    return 0


def run_floor(pitches: Path, goods: Path, url: str, concurrency: int, via_client: bool = False,
              cpu: int | None = None) -> dict:
    cmd = [PY, __file__, "_floor", "--pitches", str(pitches), "--goods", str(goods), "--url", url,
           "--concurrency", str(concurrency)] + (["--via-client"] if via_client else [])
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=300,
                         preexec_fn=pinned(cpu)).stdout
    return json.loads(out.strip().splitlines()[-1])


# ----------------------------------------------------------------------------- tables


def bench_cpu(o: argparse.Namespace, rep: Report) -> dict:
    n = 100 if o.quick else 1000
    pitches, goods = synthetic(o.work, n)
    requests = 24 * n
    rows, out = [], {}
    cmd_shown = ""
    repeats = o.repeats if o.quick else max(o.repeats, 5)
    with Sim(0, cpu=1) as sim:  # server on core 1, client on core 0: the same placement every run
        for c in o.concurrency_cpu:
            per, startup, floor, floor_rate, rates = [], [], [], [], []
            for r in range(repeats):
                run = fresh(o.work / f"cpu-c{c}-{r}")
                cmd = score_cmd(pitches, goods, run, sim.url, c)
                cmd_shown = show_cmd(cmd)
                total = Child(cmd, cpu=0).wait(600)
                assert total.rc == 0, total.rc
                idle = Child(cmd, cpu=0).wait(120)  # over a complete run: sends nothing
                startup.append(idle.cpu)
                per.append((total.cpu - idle.cpu) / requests * 1e6)
                rates.append(send_rate(run)[0])
                f = run_floor(pitches, goods, sim.url, c, cpu=0)
                floor.append(f["cpu_s"] / f["requests"] * 1e6)
                floor_rate.append(f["requests"] / f["wall_s"])
            m, fl = median(per), median(floor)
            out[c] = {"us": m, "floor_us": fl, "startup_s": median(startup)}
            rows.append([c, f"{requests:,}", f"**{m:.0f}** ({spread(per)})", f"{median(startup):.2f}",
                         f"{median(rates):,.0f}", f"{fl:.0f} ({spread(floor)})", f"{median(floor_rate):,.0f}",
                         f"{m - fl:.0f}", f"{m / fl:.2f}"])
    rep.add(f"### Client CPU per request at latency 0\n\n"
            f"`{cmd_shown}` (C = 8, 64, 256); CPU = user + sys of the process (`wait4`), minus the start-up "
            f"cost: the same command run again over the complete run directory, which sends nothing. "
            f"Floor: `python bench/bench_engine.py _floor` posts the same bodies (built and serialized "
            f"before timing) with one aiohttp `ClientSession` on uvloop (with the collector settings of bin/score), C workers, reading and parsing "
            f"each reply; its CPU is taken around the send loop only. Client (bin/score, floor) pinned to core 0, "
            f"simulator to core 1 (`sched_setaffinity`): unpinned, where the scheduler put the two processes "
            f"moved the figures by 30% between runs. Median of {repeats} "
            f"(min-max in brackets). Target: <= 150 us.\n\n"
            + table(["C", "requests", "bin/score us/req", "start-up CPU s", "bin/score req/s",
                     "floor us/req", "floor req/s", "engine over floor us", "ratio"], rows))
    return out


def ideal_rate(c: int, latency_ms: float, rpm: float | None = None) -> float:
    caps = [c / (latency_ms / 1000) if latency_ms > 0 else math.inf]
    if rpm:
        caps.append(rpm / 60)
    return min(caps)


THROUGHPUT_POINTS = ((0, 0), (50, 0), (200, 0), (50, 25))  # (latency ms, +- jitter ms)


def bench_throughput(o: argparse.Namespace, rep: Report) -> dict:
    rows, out, cmd_shown = [], {}, ""
    for lat, jit in THROUGHPUT_POINTS:
        with Sim(lat, "--jitter-ms", str(jit)) as sim:
            for c in (8, 64, 256):
                ideal = ideal_rate(c, lat)
                if o.quick:
                    requests = 480 if lat == 0 else max(240, int(1.5 * ideal))
                else:
                    requests = 10008 if lat == 0 else max(1000, int(5 * ideal))
                pitches, goods = synthetic(o.work, math.ceil(requests / 24))
                requests = 24 * math.ceil(requests / 24)
                rates, floors, client_cores, server_cores = [], [], [], []
                for r in range(o.repeats):
                    run = fresh(o.work / f"tp-l{lat}-j{jit}-c{c}-{r}")
                    cmd = score_cmd(pitches, goods, run, sim.url, c)
                    cmd_shown = show_cmd(cmd)
                    s0 = sim.cpu()
                    ch = Child(cmd).wait(600)
                    assert ch.rc == 0, (cmd, ch.rc)
                    s1 = sim.cpu()
                    rate, n = send_rate(run)
                    assert n == requests, (n, requests)
                    rates.append(rate)
                    client_cores.append(ch.cpu / ch.wall)
                    server_cores.append((s1 - s0) / ch.wall)
                    floors.append(run_floor(pitches, goods, sim.url, c)["period_rate"])
                m, fl = median(rates), median(floors)
                mif = sim.stats()["max_in_flight"]
                ratio = m / ideal if ideal < math.inf else float("nan")
                out[(lat, jit, c)] = {"rate": m, "ratio": ratio, "floor": fl}
                rows.append([f"{lat} ms" + (f" +- {jit}" if jit else ""), c, f"{requests:,}",
                             "inf" if ideal == math.inf else f"{ideal:,.0f}",
                             f"{m:,.0f} ({spread(rates)})",
                             "CPU-bound" if ideal == math.inf else f"**{ratio:.3f}**",
                             f"{fl:,.0f} ({spread(floors)})", f"{m / fl:.2f}",
                             f"{median(client_cores):.2f}", f"{median(server_cores):.2f}", mif])
    rep.add(f"### Throughput against the ideal min(C / latency, rpm / 60)\n\n"
            f"`{cmd_shown}` against `python bin/sim-server --port 0 --latency-ms L [--jitter-ms J]` (its own "
            f"process; the latency counts from the request's arrival, jitter is uniform in +- J, so the mean "
            f"stays L), a fresh run directory each time. Rate = (records - 1) / (last `t` - first `t`) of "
            f"the run's JSONL records, i.e. over the sending period only (no interpreter start-up, input "
            f"loading or drain). Floor = a bare aiohttp client (`python bench/bench_engine.py _floor`: one "
            f"`ClientSession` on uvloop, C workers posting the same pre-serialized bodies) against the same "
            f"server, rate over its own first..last reply: the most any aiohttp client gets from this server "
            f"on this machine. Median of {o.repeats} (min-max in brackets). Client and server cores = CPU "
            f"seconds of each process / wall seconds of the `bin/score` run (the machine has 2 cores). "
            f"Max in flight is the server's `/stats` `max_in_flight` (at latency 0 the simulator answers "
            f"without yielding, so it stays 1).\n\n"
            + table(["latency", "C", "requests", "ideal req/s", "bin/score req/s", "ratio to ideal",
                     "floor req/s", "bin/score / floor", "client cores (whole process)", "server cores",
                     "max in flight"], rows, right=1))
    return out


def bench_oldway(o: argparse.Namespace, rep: Report) -> dict:
    rows, out = [], {}
    shown_old = shown_new = ""
    for lat, n in ((50, 96), (200, 48)):
        if o.quick:
            n = 16
        pitches, goods = synthetic(o.work, n)
        shards = [shard(pitches, 8, i, o.work / f"old-{n}" / f"shard{i}.csv") for i in range(8)]
        requests = 24 * n
        with Sim(lat) as sim:
            old_rate, new_rate, new_send = [], [], []
            for r in range(o.repeats):
                runs = [fresh(o.work / f"old-l{lat}-{r}-s{i}") for i in range(8)]
                t0 = time.perf_counter()
                kids = [Child(score_cmd(shards[i], goods, runs[i], sim.url, 1)) for i in range(8)]
                for k in kids:
                    k.wait(600)
                    assert k.rc == 0, k.rc
                wall_old = time.perf_counter() - t0
                shown_old = show_cmd(kids[0].args)
                run = fresh(o.work / f"new-l{lat}-{r}")
                one = Child(score_cmd(pitches, goods, run, sim.url, 64)).wait(600)
                assert one.rc == 0
                shown_new = show_cmd(one.args)
                old_rate.append(requests / wall_old)
                new_rate.append(requests / one.wall)
                new_send.append(send_rate(run)[0])
            mo, mn = median(old_rate), median(new_rate)
            ratios = [b / a for a, b in zip(old_rate, new_rate)]
            out[lat] = {"old": mo, "new": mn, "ratio": median(ratios)}
            rows.append([f"{lat} ms", f"{requests:,}", f"{mo:,.1f} ({spread(old_rate, '{:.1f}')})",
                         f"{mn:,.1f} ({spread(new_rate, '{:.1f}')})", f"**{median(ratios):.1f}x**",
                         f"{median(new_send):,.0f}", f"{8 / (lat / 1000):,.0f}"])
    rep.add(f"### The old way: 8 processes x 1 in flight against one process x 64\n\n"
            f"Old: 8 processes started together, process i on the rows `row % 8 == i` (its own shard file "
            f"and run directory), e.g. `{shown_old}`; wall time from the first start to the last exit. "
            f"New: `{shown_new}`, wall time of the process. Both include interpreter start-up and input "
            f"loading (8 start-ups share 2 cores in the old way). Ratio = new / old req/s, median of the "
            f"{o.repeats} paired runs.\n\n"
            + table(["latency", "requests", "old: 8 x C=1 req/s", "new: 1 x C=64 req/s", "new / old",
                     "new, sending period req/s", "old ideal (8 / latency)"], rows))
    return out


COMMANDS = {"throughput": bench_throughput, "cpu": bench_cpu, "oldway": bench_oldway,
            "resume": bench_resume, "memory": bench_memory, "ratelimit": bench_ratelimit, "limits": bench_limits,
            "budget": bench_budget, "scattered": bench_scattered, "probs": bench_probs}


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("table", nargs="*", metavar="TABLE",
                    help=f"{', '.join(COMMANDS)} or all (none with --write-docs: rebuild the section from the "
                         f"saved tables)")
    ap.add_argument("--quick", action="store_true", help="small sizes, one repeat: a smoke test")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--work", type=Path, default=ROOT / "runs" / "bench-engine")
    ap.add_argument("--write-docs", action="store_true", help="put the tables under '## Engine' in docs/BENCHMARKS.md")
    # internal (_floor)
    ap.add_argument("--pitches"), ap.add_argument("--goods"), ap.add_argument("--url")
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--via-client", action="store_true")
    o = ap.parse_args(argv)
    if o.table == ["_floor"]:
        return floor_main(o)
    unknown = [t for t in o.table if t not in (*COMMANDS, "all")]
    if unknown or not (o.table or o.write_docs):
        ap.error(f"choose tables from {', '.join(COMMANDS)} or all" + (f" (not {', '.join(unknown)})" if unknown else ""))
    if o.quick:
        o.repeats = 1
    o.concurrency_cpu = (8, 64, 256)
    o.work.mkdir(parents=True, exist_ok=True)
    rep = Report()
    load = load_now()
    names = list(COMMANDS) if "all" in o.table else [n for n in COMMANDS if n in o.table]
    resume = None
    resume_file = o.work / "resume-result.json"
    for name in names:
        before = len(rep.parts)
        if name == "memory":
            if resume is None and resume_file.exists() and not o.quick:
                resume = json.loads(resume_file.read_text())
            bench_memory(o, rep, resume)
        else:
            res = COMMANDS[name](o, rep)
            if name == "resume":
                resume = res
                if not o.quick:
                    resume_file.write_text(json.dumps(res))
        if not o.quick:  # each table kept apart, so the section can be rebuilt from the latest of each
            stamp = f"\n\n_Measured {dt.datetime.now():%Y-%m-%d %H:%M}, load average {load} before, {load_now()} after._"
            (o.work / f"table-{name}.md").write_text("\n\n".join(rep.parts[before:]) + stamp + "\n")
    if o.write_docs and not o.quick:  # a smoke test writes nothing
        parts = [(o.work / f"table-{n}.md").read_text().rstrip("\n") for n in COMMANDS
                 if (o.work / f"table-{n}.md").exists()]
        head = (f"{SECTION}\n\n{machine_line(load)}\n\n"
                "```\npython bench/bench_engine.py all --write-docs      # every table, then this section\n"
                "python bench/bench_engine.py resume memory --write-docs   # some tables again; the others are kept\n"
                "python bench/bench_engine.py --write-docs             # this section again from the saved tables\n"
                "python bench/bench_engine.py --quick all             # smoke test, writes nothing\n```\n")
        write_docs(head if "all" in o.table else None, parts)
    return 0


if __name__ == "__main__":
    sys.exit(main())
