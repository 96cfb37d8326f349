"""The ``memory``, ``resume`` and ``ratelimit`` tables of bench/bench_engine.py: bin/score at scale.

* ``memory``: peak RSS (``VmHWM``) of ``bin/score`` with 10k/100k/1M requests queued, stopped
  with SIGTERM after a while; and when resuming a run directory holding 1M ok records;
* ``resume``: time from process start to the first request at the server and to exit, on a run
  directory holding 1M records of which a few hundred are not done;
* ``ratelimit``: ``--rpm``/``--tpm`` runs of 70 s; the busiest second and the busiest 60-s
  window seen by the server (requests) and in the records (tokens used).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import time
from pathlib import Path

from harness import (
    Child,
    Report,
    Sim,
    fresh,
    median,
    proc_rss_mb,
    run_records,
    score_cmd,
    show_cmd,
    spread,
    synthetic,
    table,
)

PITCHES_PER_1M = 41667  # x 24 requests = 1,000,008


def run_until(cmd: list[str], seconds: float, limit: float = 600) -> tuple[Child, list[tuple[float, float]]]:
    """Run ``cmd``; SIGTERM it after ``seconds`` if still running; RSS sampled every 0.5 s."""
    ch, samples = Child(cmd), []
    next_sample = 0.0
    while not ch.poll():
        el = time.perf_counter() - ch.t0
        if el >= next_sample:
            samples.append((el, proc_rss_mb(ch.pid)))
            next_sample += 0.5
        if el > seconds:
            ch.signal(signal.SIGTERM)
            ch.wait(limit)
            break
        time.sleep(0.02)
    return ch, samples


def bench_memory(o: argparse.Namespace, rep: Report, resume_rss: dict | None = None) -> dict:
    rows, out, shown = [], {}, ""
    stop_after = 5 if o.quick else 18
    sizes = (417, 4167) if o.quick else (417, 4167, PITCHES_PER_1M)
    with Sim(50) as sim:
        for n in sizes:
            pitches, goods = synthetic(o.work, n)
            peaks, at5, last, sent = [], [], [], []
            for r in range(o.repeats):
                run = fresh(o.work / f"mem-{n}-{r}")
                cmd = score_cmd(pitches, goods, run, sim.url, 64)
                shown = show_cmd(cmd)
                s0 = sim.stats()["requests"]
                ch, samples = run_until(cmd, stop_after)
                assert ch.rc in (0, 143), ch.rc
                peaks.append(ch.peak_rss_mb)
                steady = [rss for t, rss in samples if t >= 5 and rss == rss]
                at5.append(steady[0] if steady else float("nan"))
                last.append(steady[-1] if steady else float("nan"))
                sent.append(sim.stats()["requests"] - s0)
            out[n] = median(peaks)
            rows.append([f"{24 * n:,} ({n:,} pitches)", f"{median(sent):,.0f}", f"{median(at5):.0f}",
                         f"{median(last):.0f}", f"**{median(peaks):.0f}** ({spread(peaks)})"])
    if resume_rss:
        rows.append([f"resume: {resume_rss['total']:,} with {resume_rss['done']:,} ok records in the run directory",
                     f"{resume_rss['todo']}", "-", "-",
                     f"**{resume_rss['rss']:.0f}** ({resume_rss['spread']})"])
    rep.add(f"### Memory: peak RSS of bin/score\n\n"
            f"`{shown}` against the simulator at 50 ms, SIGTERM after {stop_after} s when still running "
            f"(the queue is fed lazily, so what matters is the steady state). Peak = the process's `VmHWM` "
            f"(/proc, polled every 20 ms until exit; `ru_maxrss` is not used because a child inherits the "
            f"forking parent's high-water mark); RSS at 5 s and at the end are `VmRSS` samples. Median of {o.repeats}, MB "
            f"(MiB). Target: flat, <= 300 MB at 1M.\n\n"
            + table(["requests queued", "sent before stop", "RSS at 5 s", "RSS at end", "peak RSS"], rows))
    return out


def build_done_run(o: argparse.Namespace, n: int, url: str, leave: int) -> tuple[Path, Path, Path, dict, int]:
    """A run directory for ``n`` synthetic pitches holding ok records for all but the last ``leave``
    requests (in the order bin/score sends them); records copied from a real run for realistic sizes."""
    from liveroom.async_client.record import dumps
    from liveroom.async_client.run_dir import RunDir
    from liveroom.data.personas import PERSONA_KEYS
    from liveroom.scoring.plan import DEFAULT_MODEL, ModelParams, make_plan

    pitches, goods = synthetic(o.work, n)
    run = o.work / f"resume-{n}"
    params = ModelParams(model=os.environ.get("LIVEROOM_MODEL", DEFAULT_MODEL))
    plan = make_plan(str(pitches), str(goods), "entry,buy,read", None, params, url)
    run_dir = RunDir(run)
    run_dir.open(plan.manifest)  # the manifest bin/score writes
    run_dir.close()
    stamp = run / "sizes.json"
    if stamp.exists():
        meta = json.loads(stamp.read_text())
        if meta["n"] == n and meta["leave"] == leave:
            return run, pitches, goods, meta["sizes"], meta["done"]
    # templates: a real run over a small synthetic file
    tp, tg = synthetic(o.work, 417)
    tdir = o.work / "resume-template"
    if not (tdir / "read.jsonl").exists():
        with Sim(0) as sim:
            Child(score_cmd(tp, tg, fresh(tdir), sim.url, 64)).wait(600)
    templates = {}
    for g in ("entry", "buy", "read"):
        templates[g] = {(r.meta["index"], r.meta["persona"]): r.to_dict() for r in RunDir(tdir).records(g)}
    indexes = [int(i) for i in plan.pitches["index"]]
    order = [(s.name, i, k) for i in indexes for s in plan.stages for k in PERSONA_KEYS]  # bin/score's order
    keep = len(order) - leave
    files = {g: open(run / f"{g}.jsonl", "wb") for g in ("entry", "buy", "read")}
    t = time.time() - 3600
    for j, (g, i, k) in enumerate(order[:keep]):
        rec = dict(templates[g][(i % 417, k)])
        rec["id"], rec["index"], rec["t"] = f"{g}:{i}:{k}", i, round(t + j * 0.001, 3)
        files[g].write(dumps(rec))
    for f in files.values():
        f.close()
    sizes = {g: (run / f"{g}.jsonl").stat().st_size for g in files}
    stamp.write_text(json.dumps({"n": n, "leave": leave, "sizes": sizes, "done": keep}))
    return run, pitches, goods, sizes, keep


def bench_resume(o: argparse.Namespace, rep: Report) -> dict:
    n = 417 if o.quick else PITCHES_PER_1M
    leave = 312  # the last 13 pitches: the producer walks every done request before the first send
    firsts, exits, rss = [], [], []
    with Sim(0) as sim:
        run, pitches, goods, sizes, done = build_done_run(o, n, sim.url, leave)
        total = 24 * n
        mb = sum(sizes.values()) / 2**20
        cmd = score_cmd(pitches, goods, run, sim.url, 64)
        for r in range(o.repeats):
            for g, size in sizes.items():  # back to `leave` requests not done
                os.truncate(run / f"{g}.jsonl", size)
            s0 = sim.stats()["requests"]
            ch = Child(cmd)
            first = float("nan")
            while not ch.poll():
                if first != first and sim.stats()["requests"] > s0:
                    first = time.perf_counter() - ch.t0
                time.sleep(0.01)
                if time.perf_counter() - ch.t0 > 300:
                    ch.wait(0)
            assert ch.rc == 0, ch.rc
            assert sim.stats()["requests"] - s0 == leave
            firsts.append(first)
            exits.append(ch.wall)
            rss.append(ch.peak_rss_mb)
        idle = Child(cmd).wait(300)  # nothing left: open, scan, exit
        assert idle.rc == 0
    rep.add(f"### Resume: a run directory holding 1M records\n\n"
            f"{done:,} ok records ({mb:,.0f} MB of JSONL, records copied from a real run so sizes are "
            f"realistic) for {n:,} synthetic pitches ({total:,} requests); the last {leave} requests in "
            f"sending order are not done, so the producer walks past every done request before the first "
            f"send (the worst case). `{show_cmd(cmd)}` against the simulator at latency 0. First request = "
            f"from process start to the server's `/stats` `requests` moving (polled every 10 ms). "
            f"Median of {o.repeats} (min-max). Target: <= 3 s.\n\n"
            + table(["what", "seconds"], [
                ["process start to first request at the server", f"**{median(firsts):.2f}** ({spread(firsts, '{:.2f}')})"],
                [f"process start to exit ({leave} requests sent)", f"{median(exits):.2f} ({spread(exits, '{:.2f}')})"],
                ["same command once all are done (open, scan, exit)", f"{idle.wall:.2f}"],
            ]))
    return {"first": median(firsts), "exit": median(exits), "rss": median(rss), "spread": spread(rss),
            "total": total, "done": done, "todo": leave}


def window_max(per_second: list[tuple[int, float]], width: int = 60) -> float:
    """Largest sum over ``width`` consecutive seconds."""
    if not per_second:
        return float("nan")
    counts = dict(per_second)
    lo, hi = min(counts), max(counts)
    return max(sum(counts.get(s, 0) for s in range(a, a + width)) for a in range(lo - width + 1, hi + 1))


def bench_ratelimit(o: argparse.Namespace, rep: Report) -> dict:
    seconds = 15 if o.quick else 70
    pitches, goods = synthetic(o.work, 100)
    rows, out, shown = [], {}, []
    for rpm, tpm in ((1200, 1_000_000), (1200, 120_000)):
        with Sim(50) as sim:
            run = fresh(o.work / f"rl-{rpm}-{tpm}")
            cmd = score_cmd(pitches, goods, run, sim.url, 64, "--rpm", rpm, "--tpm", tpm)
            shown.append(show_cmd(cmd))
            ch, _ = run_until(cmd, seconds)
            st = sim.stats()
        ps = [(s, c) for s, c in st["per_second"]]
        tok: dict[int, float] = {}
        for rec in run_records(run):
            tok[int(rec["t"])] = tok.get(int(rec["t"]), 0) + rec["usage"].get("total_tokens", 0)
        wall = ch.wall
        full = [c for s, c in ps[1:-1]]  # whole seconds only
        req_min, tok_min = window_max(ps), window_max(sorted(tok.items()))
        out[(rpm, tpm)] = {"req_s": max(c for _, c in ps), "req_min": req_min, "tok_min": tok_min}
        rows.append([f"--rpm {rpm} --tpm {tpm:,}", f"{wall:.0f}", st["requests"],
                     f"{max(c for _, c in ps)} (limit {rpm / 60:.0f})", f"{statistics.mean(full):.1f}",
                     f"**{req_min:.0f}** (limit {rpm})", f"**{tok_min:,.0f}** (limit {tpm:,})",
                     st["rate_limited"]])
    rep.add(f"### Rate limits\n\n"
            f"`{shown[0]}` (and the same with `--tpm 120000`), against the simulator at 50 ms; SIGTERM after "
            f"{seconds} s. Requests per second and per 60-s window are the server's `/stats` `per_second` "
            f"counts (window = the busiest 60 consecutive seconds); tokens per 60-s window are the `usage` "
            f"totals of the records, binned by record `t`. The token limit charges an estimate (prompt "
            f"characters + max_tokens) before each call, corrected by the reply's usage, and allows a burst "
            f"of 1 s worth. One run each.\n\n"
            + table(["limits", "seconds", "requests", "max req in a second", "mean req/s",
                     "max req in 60 s", "max tokens in 60 s", "429s"], rows))
    return out
