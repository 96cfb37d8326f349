"""The ``limits`` table of bench/bench_engine.py: bin/score under the limits real providers enforce.

Each scenario runs ``bin/score`` against ``bin/sim-server`` on loopback twice in the
same run, the live concurrency limit (the default) and ``--fixed-concurrency`` side by side:

* a cap of 16 in flight at 200 ms, ``--concurrency 64``: Zhipu's ``1302``, then the same cap
  answered with OpenAI's ``rate_limit_exceeded`` (``--cap-code none``);
* 10% scattered 429s with ``Retry-After: 1`` at 50 +- 25 ms, C = 64, against the same run
  without faults (2,400 requests, and 12,000 where the last retries weigh less),
  and at 200 ms, where client and simulator are not short of CPU;
* a server ``--rpm-limit 600`` (60-s sliding window) at 50 ms, no ``--rpm``: without and with
  the ``x-ratelimit-*`` headers;
* arrears after 50 answers (each provider's code), 200 ms, C = 64;
* no faults at 200 ms, C = 64.

Rates are taken over the sending period of the records (first to last ``t``), as the
throughput table does; 429 shares are the server's (429 answers / requests received).
"""

from __future__ import annotations

import argparse
import math
import time
from typing import Any

from harness import Child, Report, Sim, fresh, record_times, run_records, score_cmd, show_cmd, synthetic, table

MODES = (("adaptive", ()), ("fixed", ("--fixed-concurrency",)))


def _run(o: argparse.Namespace, name: str, sim: Sim, n: int, c: int, *flags: str,
         expect_rc: tuple[int, ...] = (0,)) -> dict[str, Any]:
    """One bin/score run to its end; what the records and the server say about it."""
    pitches, goods = synthetic(o.work, math.ceil(n / 24))
    run = fresh(o.work / f"lim-{name}")
    s0 = sim.stats()
    cmd = score_cmd(pitches, goods, run, sim.url, c, *flags)
    log = o.work / f"lim-{name}.log"
    ch = Child(cmd, log=log).wait(900)
    end = time.time()
    if ch.rc not in expect_rc:  # a run that broke is not a row of the table
        raise SystemExit(f"bench: {show_cmd(cmd)} exited {ch.rc} (expected {expect_rc}); see {log}")
    s1 = sim.stats()
    ts = record_times(run)
    requests = s1["requests"] - s0["requests"]
    refused = sum(s1["error_codes"].get("429", {}).values()) - sum(s0["error_codes"].get("429", {}).values())
    recs = run_records(run)
    return {"cmd": show_cmd(cmd), "rc": ch.rc, "wall": ch.wall, "end": end, "ts": ts,
            "rate": (len(ts) - 1) / (ts[-1] - ts[0]) if len(ts) > 1 and ts[-1] > ts[0] else float("nan"),
            "requests": requests, "429": refused, "share": refused / requests if requests else float("nan"),
            "ok": sum(r["status"] == "ok" for r in recs), "failed": sum(r["status"] != "ok" for r in recs),
            "stats": s1, "stderr": log.read_text(errors="replace")}


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def cap_rows(o: argparse.Namespace) -> tuple[list[list[Any]], list[str]]:
    n = 480 if o.quick else 1200
    rows, cmds = [], []
    for code, flags in (("1302 (Zhipu)", ()), ("rate_limit_exceeded only", ("--cap-code", "none"))):
        with Sim(200, "--profile", "zhipu", "--max-inflight", "16", *flags) as sim:
            for mode, extra in MODES:
                r = _run(o, f"cap-{len(flags)}-{mode}", sim, n, 64, *extra)
                cmds.append(r["cmd"])
                rows.append([f"cap 16 in flight, 429 {code}", mode, f"{n:,}", f"{r['rate']:.1f}",
                             f"**{r['rate'] / 80:.2f}** of 80", f"{r['429']:,} of {r['requests']:,}",
                             f"**{_pct(r['share'])}**", r["failed"]])
    return rows, cmds


SCATTERED = ((50, 2400), (50, 12000), (200, 12000))  # (latency ms, requests); jitter 25 ms


def scattered_rows(o: argparse.Namespace) -> tuple[list[list[Any]], list[str]]:
    rows, cmds = [], []
    for latency, n in SCATTERED[:1] if o.quick else SCATTERED:
        with Sim(latency, "--jitter-ms", "25") as clean, Sim(latency, "--jitter-ms", "25", "--p-429", "0.1",
                                                             "--retry-after", "1") as faulty:
            for mode, extra in MODES:
                base = _run(o, f"sc0-{latency}-{n}-{mode}", clean, n, 64, *extra)
                r = _run(o, f"sc10-{latency}-{n}-{mode}", faulty, n, 64, *extra)
                cmds.append(r["cmd"])
                rows.append([f"10% scattered 429, Retry-After 1, {latency} +- 25 ms", mode, f"{n:,}",
                             f"{r['rate']:.0f}", f"**{r['rate'] / base['rate']:.2f}** of {base['rate']:.0f} "
                             "without faults", f"{r['429']:,} of {r['requests']:,}", _pct(r["share"]), r["failed"]])
    return rows, cmds


def per_minute(ts: list[float]) -> float:
    """Mean records per whole 60-s window of the run, from its first record."""
    if len(ts) < 2 or ts[-1] - ts[0] < 60:
        return float("nan")
    whole = int((ts[-1] - ts[0]) // 60)
    return sum(1 for t in ts if t - ts[0] < 60 * whole) / whole


def rpm_rows(o: argparse.Namespace) -> tuple[list[list[Any]], list[str]]:
    if o.quick:
        return [], []
    rows, cmds, limit, n = [], [], 600, 1512
    for headers in ((), ("--ratelimit-headers",)):
        with Sim(50, "--rpm-limit", str(limit), *headers) as sim:
            for mode, extra in MODES if not headers else MODES[:1]:
                r = _run(o, f"rpm-{len(headers)}-{mode}", sim, n, 64, *extra)
                cmds.append(r["cmd"])
                best = 60 * (math.ceil(n / limit) - 1)  # the last window opens at best; a burst fills it at once
                rows.append([f"--rpm-limit {limit} (60-s window){', with x-ratelimit headers' if headers else ''}",
                             mode, f"{n:,}", f"{60 * r['rate']:.0f}/min",
                             f"**{per_minute(r['ts']) / limit:.2f}** of {limit}/min "
                             f"(done at {r['ts'][-1] - r['ts'][0]:.0f} s, best {best} s)",
                             f"{r['429']:,} of {r['requests']:,}", f"**{_pct(r['share'])}**", r["failed"]])
    return rows, cmds


ARREARS = {"zhipu": "1113", "openai": "insufficient_quota", "dashscope": "Arrearage"}


def arrears_rows(o: argparse.Namespace) -> tuple[list[list[Any]], list[str]]:
    rows, cmds = [], []
    for profile, code in ARREARS.items():
        with Sim(200, "--profile", profile, "--arrears-after", "50") as sim:
            r = _run(o, f"arrears-{profile}", sim, 1200, 64, expect_rc=(2,))
            cmds.append(r["cmd"])
            st = r["stats"]
            lines = [line for line in r["stderr"].splitlines() if line.strip()]
            after = r["end"] - st["arrears_started_at"] if st["arrears_started_at"] else float("nan")
            rows.append([f"arrears after 50 answers: {profile} {code}", f"exit {r['rc']}",
                         f"**{after:.1f} s**", f"**{st['requests_after_arrears']}** (limit 64 + 5)",
                         f"{len(lines)}: `{lines[-1][:110] if lines else ''}...`"])
    return rows, cmds


def clean_rows(o: argparse.Namespace) -> tuple[list[list[Any]], list[str]]:
    n = 960 if o.quick else 2400
    rows, cmds = [], []
    with Sim(200) as sim:
        for mode, extra in MODES:
            r = _run(o, f"clean-{mode}", sim, n, 64, *extra)
            cmds.append(r["cmd"])
            rows.append(["no faults, 200 ms", mode, f"{n:,}", f"{r['rate']:.0f}", f"**{r['rate'] / 320:.2f}** of 320",
                         f"{r['429']} of {r['requests']:,}", _pct(r["share"]), r["failed"]])
    return rows, cmds


def bench_limits(o: argparse.Namespace, rep: Report) -> dict:
    """The ``limits`` table (see the module docstring)."""
    header = ["scenario", "concurrency", "requests", "req/s", "of the limit", "429 answers", "429 share", "failed"]
    rows, cmds = [], []
    for part in (cap_rows, scattered_rows, rpm_rows, clean_rows):
        r, c = part(o)
        rows += r
        cmds += c[:2]  # one scenario's two modes
    arrears, arrears_cmds = arrears_rows(o)
    rep.add("### Provider limits\n\n"
            "`bin/score` against `bin/sim-server` answering as a provider with limits does "
            "(`--profile`, `--max-inflight`, `--cap-code`, `--p-429`, `--rpm-limit`, `--ratelimit-headers`, "
            "`--arrears-after`); each scenario with the live concurrency limit (adaptive, the default) and "
            "`--fixed-concurrency` one after the other in the same run. req/s over the sending period "
            "(first to last record `t`); 429 share = the server's 429 answers / requests it received; "
            "\"of the limit\" for the rpm window = mean answers per whole minute of the run / the limit. "
            "One run each. Commands, e.g.:\n\n"
            + "\n".join(f"    {c}" for c in dict.fromkeys(cmds + arrears_cmds[:1])) + "\n\n"
            + table(header, rows, right=2)
            + "\n\nArrears (`--arrears-after 50`, 200 ms, `--concurrency 64`): time from the server's first "
            "arrears answer to the exit of bin/score, requests the server received after it, and what "
            "bin/score printed.\n\n"
            + table(["scenario", "exit", "stopped after", "requests after", "lines on stderr"], arrears, right=2))
    return {"rows": rows, "arrears": arrears, "commands": cmds + arrears_cmds}

