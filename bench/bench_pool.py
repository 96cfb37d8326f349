"""Several endpoints of one model: bin/score --endpoints against four bin/sim-server processes.

Four endpoints with in-flight caps 8, 16, 16 and 32 (Zhipu's ``1302`` beyond the cap), 200 ms
each: 72 in flight and 360 req/s are possible. ``bin/score --concurrency 64`` over all four,
beside today's figure, the same command on the cap-32 endpoint alone. 7,200 requests
(300 synthetic pitches). Writes ``### Several endpoints`` under ``## Engine`` in
docs/BENCHMARKS.md.

    python bench/bench_pool.py [--pitches 300] [--work /tmp/bench-pool] [--no-docs]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from harness import (
    Child,
    Report,
    Sim,
    fresh,
    load_now,
    machine_line,
    score_cmd,
    send_rate,
    show_cmd,
    synthetic,
    table,
    write_docs,
)

CAPS = (8, 16, 16, 32)
LATENCY_MS = 200.0


def run(cmd: list[str], log: Path) -> Child:
    child = Child(cmd, log).wait(1800)
    if child.rc != 0:
        raise SystemExit(f"{show_cmd(cmd)} exited {child.rc}; see {log}")
    return child


def pool_row(work: Path, pitches: Path, goods: Path, told: bool) -> list:
    """A run over the four endpoints: its table row, then its command."""
    sims = [Sim(LATENCY_MS, "--profile", "zhipu", "--max-inflight", str(cap)) for cap in CAPS]
    try:
        f = work / "endpoints.toml"
        f.write_text("".join(f'[[endpoint]]\nname = "cap{cap}-{i}"\nbase_url = "{s.url}"\n'
                             + (f"max_concurrency = {cap}\n" if told else "")
                             for i, (cap, s) in enumerate(zip(CAPS, sims))))
        out = fresh(work / "pool")
        cmd = [c for c in score_cmd(pitches, goods, out, "X", 64) if c not in ("--base-url", "X")]
        cmd += ["--endpoints", str(f)]
        child = run(cmd, work / "pool.log")
        rate, n = send_rate(out)
        stats = [s.stats() for s in sims]
    finally:
        for s in sims:
            s.stop()
    wall = child.wall
    each = ", ".join(f"{st['answered'] / wall:.0f} of {cap / LATENCY_MS * 1000:.0f} "
                     f"({st['answered'] / wall / (cap / LATENCY_MS * 1000):.2f})" for cap, st in zip(CAPS, stats))
    throttled = sum(st["replies"].get("429", 0) for st in stats) / max(1, sum(st["requests"] for st in stats))
    what = "each told its cap (`max_concurrency`)" if told else "not told the caps (ceilings 64)"
    return [f"four endpoints (caps 8/16/16/32), `--endpoints`, {what}", f"{rate:.0f}", f"{rate / 360:.2f}",
            f"{throttled:.1%}", each, f"{child.cpu / n * 1000:.2f}", n, show_cmd(cmd)]


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--pitches", type=int, default=300)
    p.add_argument("--work", type=Path, default=Path("/tmp/bench-pool"))
    p.add_argument("--no-docs", action="store_true")
    args = p.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    pitches, goods = synthetic(args.work, args.pitches)
    load = load_now()
    rows = []

    with Sim(LATENCY_MS, "--profile", "zhipu", "--max-inflight", "32") as alone:
        cmd = score_cmd(pitches, goods, fresh(args.work / "alone"), alone.url, 64)
        child = run(cmd, args.work / "alone.log")
        rate, n = send_rate(args.work / "alone")
        st = alone.stats()
        rows.append(["one endpoint (cap 32), `--base-url`", f"{rate:.0f}", f"{rate / 360:.2f}",
                     f"{st['replies'].get('429', 0) / max(1, st['requests']):.1%}",
                     f"{rate:.0f} of 160 ({rate / 160:.2f})", f"{child.cpu / n * 1000:.2f}", n])

    for told in (True, False):  # each endpoint's ceiling its cap, or --concurrency (the live limit finds the cap)
        rows.append(pool_row(args.work, pitches, goods, told))
    pool_cmd = rows[-2].pop()
    rows[-1].pop()

    report = Report()
    report.add("### Several endpoints\n\n"
               f"Four `bin/sim-server --profile zhipu --max-inflight CAP --latency-ms 200` (caps 8, 16, 16, 32: "
               f"360 req/s possible), `--concurrency 64`, {args.pitches * 24:,} requests. Each endpoint's rate is "
               "its answers over the run's wall time, against its cap / latency. Target: >= 0.9 of 360 req/s, "
               "<= 10% answered 429, each endpoint >= 0.7 of its cap's rate.\n\n"
               + table(["client", "req/s", "of 360", "answered 429", "each endpoint (req/s of cap rate)",
                        "client CPU ms/request", "records"], rows)
               + f"\n\n`python bench/bench_pool.py --pitches {args.pitches}`; the pool run: `{pool_cmd}`. "
               + machine_line(load))
    if not args.no_docs:
        write_docs(None, report.parts)


if __name__ == "__main__":
    main()
