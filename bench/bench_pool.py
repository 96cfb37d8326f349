"""Several endpoints of one model: bin/score --endpoints against four bin/sim-server processes.

Four endpoints with in-flight caps 8, 16, 16 and 32 (Zhipu's ``1302`` beyond the cap), 200 ms
each: 72 in flight and 360 req/s are possible. 7,200 requests (300 synthetic pitches),
``bin/score --concurrency 64``. Modes, each its own subsection under ``## Engine`` in
docs/BENCHMARKS.md:

* ``pool``: over all four, beside the same command on the cap-32 endpoint alone;
* ``faults``: the cap-32 endpoint killed (SIGKILL) 8 s in, a cap-16 one in arrears (``1113``)
  after 300 answers;
* ``slow``: the cap-32 endpoint at 1 s, the others at 200 ms;
* ``before``: one endpoint (``--latency-ms 0``, the same requests), this tree against trees
  before the pool (``git worktree add --detach /tmp/old-tree 9ad3885``; ``--old-tree`` again for
  another), alternated ``--repeats`` times.

    python bench/bench_pool.py [--modes pool,faults,slow,before] [--pitches 300] [--old-tree /tmp/old-tree ...]
        [--work /tmp/bench-pool] [--no-docs]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import time
from pathlib import Path

from harness import (
    PY,
    Child,
    Report,
    Sim,
    fresh,
    load_now,
    machine_line,
    median,
    run_records,
    score_cmd,
    send_rate,
    show_cmd,
    spread,
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


def names() -> list[str]:
    return [f"cap{cap}-{i}" for i, cap in enumerate(CAPS)]


def pool_cmd(work: Path, pitches: Path, goods: Path, sims: list[Sim], out: Path, told: bool = True) -> list[str]:
    """bin/score --endpoints over ``sims`` (declared in ``work/endpoints.toml``), ``--concurrency 64``."""
    f = work / "endpoints.toml"
    f.write_text("".join(f'[[endpoint]]\nname = "{name}"\nbase_url = "{s.url}"\n'
                         + (f"max_concurrency = {cap}\n" if told else "")
                         for name, cap, s in zip(names(), CAPS, sims)))
    cmd = [c for c in score_cmd(pitches, goods, out, "X", 64) if c not in ("--base-url", "X")]
    return cmd + ["--endpoints", str(f)]


def pool_row(work: Path, pitches: Path, goods: Path, told: bool) -> list:
    """A run over the four endpoints: its table row, then its command."""
    sims = [Sim(LATENCY_MS, "--profile", "zhipu", "--max-inflight", str(cap)) for cap in CAPS]
    try:
        out = fresh(work / "pool")
        cmd = pool_cmd(work, pitches, goods, sims, out, told)
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


KILL_AT = 8.0         # seconds after bin/score starts that the cap-32 endpoint is killed
ARREARS_AFTER = 300   # answers before the arrears endpoint (a cap-16 one) answers 1113 only
KILLED, BROKE = 3, 1  # which of CAPS


def verdict(ok: bool) -> str:
    return "met" if ok else "**not met**"


def faults_section(work: Path, pitches: Path, goods: Path, n_req: int) -> str:
    """The cap-32 endpoint killed KILL_AT s in, a cap-16 one in arrears after ARREARS_AFTER answers."""
    killed_log = work / "killed-sim.log"
    sims = [Sim(LATENCY_MS, "--profile", "zhipu", "--max-inflight", str(cap),
                *(["--log-requests"] if i == KILLED else []),
                *(["--arrears-after", str(ARREARS_AFTER)] if i == BROKE else []),
                log=killed_log if i == KILLED else None) for i, cap in enumerate(CAPS)]
    log = work / "faults.log"
    try:
        out = fresh(work / "faults")
        cmd = pool_cmd(work, pitches, goods, sims, out)
        child, t0 = Child(cmd, log), time.time()
        kill_t = retired_t = None
        in_flight = 0
        while not child.poll():
            now = time.time()
            if kill_t is None and now - t0 >= KILL_AT:
                in_flight = sims[KILLED].stats()["in_flight"]
                sims[KILLED].proc.kill()
                kill_t = time.time()
                sims[KILLED].proc.wait()
            if retired_t is None and f"endpoint {names()[BROKE]} retired" in log.read_text(errors="replace"):
                retired_t = time.time()
            if time.time() - t0 > 1800:
                child.signal(9)
            time.sleep(0.01)
        stats = {i: s.stats() for i, s in enumerate(sims) if i != KILLED}
    finally:
        for s in sims:
            s.stop()
    if child.rc != 0 or kill_t is None:
        raise SystemExit(f"{show_cmd(cmd)} exited {child.rc} (killed at {kill_t}); see {log}")
    recs = run_records(out)
    ids = [r["id"] for r in recs]
    killed_answers = sum(line.startswith("sim-server: 200") for line in killed_log.read_text().splitlines())
    answered = sum(st["answered"] for st in stats.values()) + killed_answers
    twice = answered - len(set(ids))
    broke = stats[BROKE]
    lag = (retired_t or float("inf")) - broke["arrears_started_at"]
    after = sorted(r["t"] for r in recs if r["t"] >= kill_t)
    survivors = sum(cap for i, cap in enumerate(CAPS) if i not in (KILLED, BROKE)) / LATENCY_MS * 1000
    rate_after = len(after) / (after[-1] - kill_t)
    rows = [
        ["exit status", child.rc, "0", verdict(child.rc == 0)],
        ["records (each id once)", f"{len(set(ids)):,} of {n_req:,} ({len(ids) - len(set(ids))} twice)",
         f"{n_req:,}", verdict(len(ids) == len(set(ids)) == n_req)],
        ["requests answered twice (answers of all four servers less the records)",
         f"{twice} (the killed endpoint had {in_flight} in flight)", f"<= {in_flight}", verdict(twice <= in_flight)],
        [f"arrears endpoint ({names()[BROKE]}): first `1113` to the retirement line", f"{lag:.2f} s", "<= 1 s",
         verdict(lag <= 1)],
        ["arrears endpoint: requests it got after its first `1113`", broke["requests_after_arrears"],
         f"<= {CAPS[BROKE] + 5}", verdict(broke["requests_after_arrears"] <= CAPS[BROKE] + 5)],
        [f"rate after the kill, of the survivors' {survivors:.0f} req/s", f"{rate_after:.0f} req/s "
         f"({rate_after / survivors:.2f})", ">= 0.80", verdict(rate_after / survivors >= 0.8)],
    ]
    return ("### Several endpoints: an endpoint killed, another in arrears\n\n"
            f"The four endpoints above (caps 8/16/16/32 at 200 ms, each told its cap), `--concurrency 64`, "
            f"{n_req:,} requests; `{names()[KILLED]}` killed with SIGKILL {KILL_AT:.0f} s after bin/score "
            f"started (at {kill_t - t0:.1f} s), `{names()[BROKE]}` started with `--arrears-after "
            f"{ARREARS_AFTER}` (Zhipu's HTTP 429 `1113` for every request after {ARREARS_AFTER} answers). "
            f"Answers of the killed server are its `--log-requests` lines with status 200 (one is written as "
            f"each answer goes out, so an answer cut by the kill counts), the others' from their /stats. The "
            f"retirement is when bin/score's `endpoint {names()[BROKE]} retired` line appeared in its log "
            f"(polled every 10 ms). Wall {child.wall:.1f} s, client CPU {child.cpu / len(ids) * 1000:.2f} ms a "
            f"request.\n\n"
            + table(["measure", "figure", "target", ""], rows)
            + f"\n\n`python bench/bench_pool.py --modes faults`; the run: `{show_cmd(cmd)}`.")


SLOW, SLOW_MS = 3, 1000.0  # the cap-32 endpoint at 1 s


def slow_section(work: Path, pitches: Path, goods: Path, n_req: int) -> str:
    """One endpoint five times slower than the others."""
    lat = [SLOW_MS if i == SLOW else LATENCY_MS for i in range(len(CAPS))]
    possible = sum(cap / ms * 1000 for cap, ms in zip(CAPS, lat))
    sims = [Sim(ms, "--profile", "zhipu", "--max-inflight", str(cap)) for cap, ms in zip(CAPS, lat)]
    try:
        out = fresh(work / "slow")
        cmd = pool_cmd(work, pitches, goods, sims, out)
        child = run(cmd, work / "slow.log")
        rate, n = send_rate(out)
        stats = [s.stats() for s in sims]
    finally:
        for s in sims:
            s.stop()
    each = ", ".join(f"{name} {st['answered'] / child.wall:.0f} of {cap / ms * 1000:.0f}"
                     for name, st, cap, ms in zip(names(), stats, CAPS, lat))
    rows = [[f"{rate:.0f}", f"{n / child.wall:.0f}", f"{possible:.0f}", f"**{rate / possible:.2f}**",
             f"{n / child.wall / possible:.2f}", each, verdict(rate / possible >= 0.85)]]
    return ("### Several endpoints: one endpoint five times slower\n\n"
            f"The four endpoints above, `{names()[SLOW]}` at {SLOW_MS:.0f} ms and the others at "
            f"{LATENCY_MS:.0f} ms (each told its cap), `--concurrency 64`, {n:,} records: possible "
            f"sum of cap / latency = {possible:.0f} req/s. The rate is records over the first..last record "
            f"time (as above); over the command's wall time ({child.wall:.1f} s, start-up included) beside it. "
            f"Target: >= 0.85 of the possible.\n\n"
            + table(["req/s", "req/s over wall", "possible", "of possible", "over wall, of possible",
                     "each endpoint (answers/s over wall, of cap / latency)", "target"], rows)
            + f"\n\n`python bench/bench_pool.py --modes slow`; the run: `{show_cmd(cmd)}`.")


def commit_of(tree: Path) -> str:
    return subprocess.run(["git", "-C", str(tree), "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                          check=True).stdout.strip()


def before_section(work: Path, olds: list[Path], repeats: int, n_pitches: int) -> str:
    """One endpoint, this tree against trees before the pool, alternated."""
    pitches, goods = synthetic(work, n_pitches)
    trees = {f"before the pool ({commit_of(old)})": old for old in olds}
    trees["this tree"] = Path(__file__).resolve().parent.parent
    got: dict[str, list[tuple[float, float, float, float, int]]] = {k: [] for k in trees}
    labels = list(trees)
    with Sim(0.0) as sim:
        for r in range(repeats):
            for label in labels[r % len(labels):] + labels[:r % len(labels)]:  # each tree first in turn
                tree, out = trees[label], fresh(work / "before-run")
                cmd = [PY, str(tree / "bin" / "score"), "--pitches", str(pitches), "--goods", str(goods),
                       "--out", str(out), "--base-url", sim.url, "--concurrency", "64", "--progress-every", "3600"]
                env = {**os.environ, "PYTHONPATH": str(tree)}
                child = Child(cmd, work / "before.log", env=env).wait(600)
                if child.rc != 0:
                    raise SystemExit(f"{show_cmd(cmd)} exited {child.rc}; see {work / 'before.log'}")
                idle = Child(cmd, work / "before-idle.log", env=env).wait(600)  # all done: the start-up alone
                rate, n = send_rate(out)
                got[label].append((rate, n / child.wall, child.cpu / n * 1000, (child.cpu - idle.cpu) / n * 1000, n))
    rows = []
    for label, runs in got.items():
        rows.append([label] + [f"{median([x[i] for x in runs]):{f}} ({spread([x[i] for x in runs], '{:' + f + '}')})"
                               for i, f in ((0, ".0f"), (1, ".0f"), (2, ".3f"), (3, ".3f"))] + [runs[0][4]])
    new_m, new_c = median([x[0] for x in got["this tree"]]), median([x[3] for x in got["this tree"]])
    ratios = []
    for label in labels[:-1]:
        old_m, old_c = median([x[0] for x in got[label]]), median([x[3] for x in got[label]])
        ratios.append(f"against {label}: throughput {new_m / old_m:.3f}x, client CPU per request less "
                      f"start-up {new_c / old_c:.3f}x ({verdict(new_m >= 0.95 * old_m and new_c <= 1.05 * old_c)})")
    return ("### Several endpoints: one endpoint before and after\n\n"
            f"A run with one endpoint is a pool of one on the same code path. `bin/score --concurrency 64` "
            f"against one `bin/sim-server --latency-ms 0`, {rows[0][-1]:,} requests (`bin/make-synthetic --n "
            f"{n_pitches}`), trees before the pool (`git worktree add --detach TREE COMMIT`) and this one, "
            f"alternated {repeats} times on the same simulator, each tree first in turn; medians (range). The "
            f"client's CPU includes its start-up (imports, reading the inputs), some 0.8 s that varies by a "
            f"fifth from one start to the next; the same command run again at once, with every request done, "
            f"measures that start-up, and the CPU less it is the requests'. Target: throughput and client CPU "
            f"per request within 5%.\n\n"
            + table(["tree", "req/s (first..last record)", "req/s (wall)", "client CPU ms/request",
                     "less start-up", "records"], rows)
            + "\n\nThis tree " + "; ".join(ratios) + ". "
            f"`python bench/bench_pool.py --modes before --repeats {repeats}"
            + "".join(f" --old-tree {old}" for old in olds) + "`; each run: `env PYTHONPATH=TREE "
            f"python TREE/bin/score --pitches syn-{n_pitches}/pitches.csv --goods syn-{n_pitches}/goods.json "
            f"--out RUN --base-url SIM --concurrency 64 --progress-every 3600`.")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--modes", default="pool,faults,slow,before", help="which sections to measure, in order")
    p.add_argument("--pitches", type=int, default=300)
    p.add_argument("--repeats", type=int, default=3, help="before: runs of each tree, alternated")
    p.add_argument("--old-tree", type=Path, action="append",
                   help="before: a tree before the pool (repeatable; default /tmp/old-tree)")
    p.add_argument("--work", type=Path, default=Path("/tmp/bench-pool"))
    p.add_argument("--no-docs", action="store_true")
    args = p.parse_args()
    modes = args.modes.split(",")
    args.work.mkdir(parents=True, exist_ok=True)
    pitches, goods = synthetic(args.work, args.pitches)
    n_req = args.pitches * 24
    report = Report()
    load = load_now()
    if "pool" in modes:
        report.add(pool_section(args.work, pitches, goods, args.pitches, load))
    if "faults" in modes:
        report.add(faults_section(args.work, pitches, goods, n_req) + f" Load average {load_now()} after.")
    if "slow" in modes:
        report.add(slow_section(args.work, pitches, goods, n_req) + f" Load average {load_now()} after.")
    if "before" in modes:
        report.add(before_section(args.work, args.old_tree or [Path("/tmp/old-tree")], args.repeats, args.pitches)
                   + f" Load average {load_now()} after.")
    if not args.no_docs:
        write_docs(None, report.parts)


def pool_section(work: Path, pitches: Path, goods: Path, n_pitches: int, load: str) -> str:
    """Four endpoints beside the cap-32 one alone."""
    rows = []
    with Sim(LATENCY_MS, "--profile", "zhipu", "--max-inflight", "32") as alone:
        cmd = score_cmd(pitches, goods, fresh(work / "alone"), alone.url, 64)
        child = run(cmd, work / "alone.log")
        rate, n = send_rate(work / "alone")
        st = alone.stats()
        rows.append(["one endpoint (cap 32), `--base-url`", f"{rate:.0f}", f"{rate / 360:.2f}",
                     f"{st['replies'].get('429', 0) / max(1, st['requests']):.1%}",
                     f"{rate:.0f} of 160 ({rate / 160:.2f})", f"{child.cpu / n * 1000:.2f}", n])

    for told in (True, False):  # each endpoint's ceiling its cap, or --concurrency (the live limit finds the cap)
        rows.append(pool_row(work, pitches, goods, told))
    the_cmd = rows[-2].pop()
    rows[-1].pop()
    return ("### Several endpoints\n\n"
            f"Four `bin/sim-server --profile zhipu --max-inflight CAP --latency-ms 200` (caps 8, 16, 16, 32: "
            f"360 req/s possible), `--concurrency 64`, {n_pitches * 24:,} requests. Each endpoint's rate is "
            "its answers over the run's wall time, against its cap / latency. Target: >= 0.9 of 360 req/s, "
            "<= 10% answered 429, each endpoint >= 0.7 of its cap's rate.\n\n"
            + table(["client", "req/s", "of 360", "answered 429", "each endpoint (req/s of cap rate)",
                     "client CPU ms/request", "records"], rows)
            + f"\n\n`python bench/bench_pool.py --modes pool --pitches {n_pitches}`; the pool run: `{the_cmd}`. "
            + machine_line(load))


if __name__ == "__main__":
    main()
