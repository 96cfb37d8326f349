"""Scoring-engine benchmarks: ``bin/score`` against ``bin/sim-server`` on loopback.

Every measurement runs the real commands as separate processes (the server in
its own process, started with ``--port 0``), repeats each point (``--repeats``,
default 3) and reports the median; ratios are computed within the same run.

    python bench/bench_engine.py all [--write-docs]      # every table (about 40 minutes)
    python bench/bench_engine.py --quick all             # small sizes, one repeat: a smoke test
    python bench/bench_engine.py throughput|cpu|oldway|resume|memory|ratelimit|limits [...]

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
  directory holding 1M ok records.
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
import os
import platform
import signal
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any, Sequence

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from liveroom.process import stop_process  # noqa: E402

BIN = ROOT / "bin"
PY = sys.executable
DOC = ROOT / "docs" / "BENCHMARKS.md"
SECTION = "## Engine"
PITCHES_PER_1M = 41667  # x 24 requests = 1,000,008

# ----------------------------------------------------------------------------- processes


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def proc_cpu(pid: int) -> float:
    """user + sys CPU seconds of a running process so far (from /proc)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def proc_status_mb(pid: int, key: str) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0.0


def proc_rss_mb(pid: int) -> float:
    return proc_status_mb(pid, "VmRSS:") or float("nan")


def pinned(cpu: int | None) -> Any:
    """A ``preexec_fn`` that keeps the child on core ``cpu`` (None: anywhere, or where it cannot be pinned)."""
    if cpu is None or not hasattr(os, "sched_setaffinity") or (os.cpu_count() or 1) < 2:
        return None
    return lambda: os.sched_setaffinity(0, {cpu})


class Child:
    """A subprocess whose exit is reaped with ``wait4`` (CPU time and peak RSS)."""

    def __init__(self, args: Sequence[str], log: Path | None = None, env: dict | None = None,
                 cpu: int | None = None):
        self.args = [str(a) for a in args]
        self.t0 = time.perf_counter()
        self._log = open(log, "wb") if log else subprocess.DEVNULL
        self.proc = subprocess.Popen(self.args, stdout=self._log, stderr=self._log, env=env,
                                     start_new_session=True, preexec_fn=pinned(cpu))
        self.pid = self.proc.pid
        self.rc: int | None = None
        self.wall = float("nan")
        self.cpu = float("nan")
        self.user = self.sys = float("nan")
        self.maxrss_mb = float("nan")
        self.peak_rss_mb = 0.0
        self._hwm_at = 0.0

    def poll(self) -> bool:
        """True once exited (and reaped)."""
        if self.rc is not None:
            return True
        now = time.perf_counter()
        if now - self._hwm_at > 0.02:
            # peak RSS of the process's own memory since exec; ru_maxrss from wait4 would also count the
            # memory of this (forking) process, which the child inherits as its high-water mark
            self.peak_rss_mb = max(self.peak_rss_mb, proc_status_mb(self.pid, "VmHWM:"))
            self._hwm_at = now
        pid, status, ru = os.wait4(self.pid, os.WNOHANG)
        if pid == 0:
            return False
        self._reaped(status, ru)
        return True

    def _reaped(self, status: int, ru: Any) -> None:
        self.wall = time.perf_counter() - self.t0
        self.rc = os.waitstatus_to_exitcode(status)
        self.proc.returncode = self.rc
        self.user, self.sys = ru.ru_utime, ru.ru_stime
        self.cpu = ru.ru_utime + ru.ru_stime
        self.maxrss_mb = ru.ru_maxrss / 1024
        if self._log is not subprocess.DEVNULL:
            self._log.close()

    def wait(self, timeout: float) -> "Child":
        end = time.perf_counter() + timeout
        while not self.poll():
            if time.perf_counter() > end:
                self.signal(signal.SIGKILL)
                _, status, ru = os.wait4(self.pid, 0)
                self._reaped(status, ru)
                raise TimeoutError(f"{' '.join(self.args[:3])}... ran past {timeout:.0f} s; killed")
            time.sleep(0.005)
        return self

    def signal(self, sig: int) -> None:
        if self.rc is None:
            try:
                os.kill(self.pid, sig)
            except ProcessLookupError:
                pass


class Sim:
    """``bin/sim-server --port 0`` in its own process."""

    def __init__(self, latency_ms: float = 0.0, *flags: str, cpu: int | None = None):
        self.proc = subprocess.Popen([PY, str(BIN / "sim-server"), "--port", "0", "--latency-ms", str(latency_ms),
                                      *flags], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                                     preexec_fn=pinned(cpu))
        line = self.proc.stdout.readline()
        if not line.startswith("listening on "):
            self.stop()
            raise RuntimeError(f"sim-server did not start: {line!r}")
        self.url = line.split()[-1]
        self.latency_ms = latency_ms

    def stats(self) -> dict:
        with urllib.request.urlopen(self.url.removesuffix("/v1") + "/stats", timeout=10) as r:
            return json.load(r)

    def cpu(self) -> float:
        return proc_cpu(self.proc.pid)

    def stop(self) -> None:
        stop_process(self.proc)

    def __enter__(self) -> "Sim":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


# ----------------------------------------------------------------------------- data


def synthetic(work: Path, n: int) -> tuple[Path, Path]:
    """pitches.csv and goods.json of ``n`` synthetic pitches (made once, cached)."""
    d = work / f"syn-{n}"
    if not (d / "goods.json").exists():
        subprocess.run([PY, str(BIN / "make-synthetic"), "--n", str(n), "--seed", "0", "--out", str(d)],
                       check=True, stdout=subprocess.DEVNULL, timeout=600)
    return d / "pitches.csv", d / "goods.json"


def shard(pitches: Path, n_shards: int, i: int, out: Path) -> Path:
    """Rows ``row % n_shards == i`` of a pitches CSV (the reference's hand sharding)."""
    import pandas as pd

    df = pd.read_csv(pitches, dtype=str, keep_default_na=False)
    out.parent.mkdir(parents=True, exist_ok=True)
    df.iloc[i::n_shards].to_csv(out, index=False)
    return out


def score_cmd(pitches: Path, goods: Path, out: Path, url: str, concurrency: int, *extra: Any) -> list[str]:
    return [PY, str(BIN / "score"), "--pitches", str(pitches), "--goods", str(goods), "--out", str(out),
            "--base-url", url, "--concurrency", str(concurrency), "--progress-every", "3600", *map(str, extra)]


def show_cmd(cmd: Sequence[str]) -> str:
    """A command as a reader would type it (paths relative to the repository)."""
    def rel(a: str) -> str:
        if a == PY:
            return "python"
        try:
            return str(Path(a).relative_to(ROOT))
        except ValueError:
            return a
    return " ".join(rel(a) for a in cmd)


def run_records(run_dir: Path) -> list[dict[str, Any]]:
    """Every whole record of the run in ``run_dir``, every stage, each as the flat mapping its line holds."""
    from liveroom.async_client.run_dir import RunDir

    records = RunDir(run_dir)
    manifest = records.recorded()
    return [r.to_dict() for g in (manifest.groups if manifest else ()) for r in records.records(g, damaged=[])]


def record_times(run_dir: Path) -> list[float]:
    return sorted(r["t"] for r in run_records(run_dir))


def send_rate(run_dir: Path) -> tuple[float, int]:
    """(requests per second over first..last record ``t``, records)."""
    ts = record_times(run_dir)
    if len(ts) < 2 or ts[-1] <= ts[0]:
        return float("nan"), len(ts)
    return (len(ts) - 1) / (ts[-1] - ts[0]), len(ts)


def fresh(d: Path) -> Path:
    import shutil

    if d.exists():
        shutil.rmtree(d)
    return d


def median(xs: Sequence[float]) -> float:
    xs = [x for x in xs if x == x]
    return statistics.median(xs) if xs else float("nan")


def spread(xs: Sequence[float], fmt: str = "{:.0f}") -> str:
    xs = [x for x in xs if x == x]
    return f"{fmt.format(min(xs))}-{fmt.format(max(xs))}" if xs else "-"


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


class Report:
    """Markdown pieces collected for docs/BENCHMARKS.md, printed as they come."""

    def __init__(self) -> None:
        self.parts: list[str] = []

    def add(self, text: str) -> None:
        print(text, flush=True)
        self.parts.append(text)


def table(header: Sequence[str], rows: list[Sequence[Any]], right: int = 1) -> str:
    lines = ["| " + " | ".join(header) + " |",
             "| " + " | ".join(["---"] * right + ["---:"] * (len(header) - right)) + " |"]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


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


def load_now() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def machine_line(load_before: str) -> str:
    import aiohttp
    import uvloop

    return (f"Measured {dt.date.today().isoformat()} on {os.cpu_count()} cores (`nproc`), CPU `{cpu_model()}`, "
            f"Linux {platform.release()}, Python {platform.python_version()}, aiohttp {aiohttp.__version__}, "
            f"uvloop {uvloop.__version__}; client and simulator on uvloop (each its own process), both on the same 2 cores. "
            f"The machine was shared with other work (load average {load_before} when this section was "
            f"written; each table gives its own), so absolute numbers are noisy; ratios come from the "
            f"same run.")


def subsections(text: str) -> dict[str, str]:
    """The ``### `` subsections of a section's text, by heading line, in order (the head under ``""``)."""
    parts: dict[str, list[str]] = {"": []}
    key = ""
    for line in text.splitlines(keepends=True):
        if line.startswith("### "):
            key = line.rstrip()
            parts[key] = []
        parts[key].append(line)
    return {k: "".join(v).strip("\n") for k, v in parts.items()}


def write_docs(head: str | None, tables: list[str]) -> None:
    """Put ``tables`` (and ``head``, unless None) under SECTION of the doc: a table replaces the subsection
    of its heading, others are added at the end; subsections not measured again (or written by hand) and,
    without ``head``, the section's opening stay as they are."""
    doc = DOC.read_text() if DOC.exists() else "# Benchmarks\n"
    lines = doc.splitlines(keepends=True)
    start = next((i for i, line in enumerate(lines) if line.rstrip() == SECTION), None)
    if start is None:
        start = end = len(lines)
    else:
        end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
    kept = subsections("".join(lines[start:end]))
    if head is not None or not kept[""]:
        kept[""] = (head or SECTION).strip("\n")
    for part in tables:
        kept.update({k: v for k, v in subsections(part).items() if k})
    tail = "".join(lines[end:])
    DOC.write_text("".join(lines[:start]).rstrip("\n") + "\n\n" + "\n\n".join(kept.values()) + "\n"
                   + ("\n" + tail if tail else ""))


def bench_limits(o: argparse.Namespace, rep: Report) -> dict:
    """Provider limits: in-flight caps, scattered 429s, a rate window, arrears (bench/bench_limits.py)."""
    from bench_limits import bench_limits as run

    return run(o, rep)


COMMANDS = {"throughput": bench_throughput, "cpu": bench_cpu, "oldway": bench_oldway,
            "resume": bench_resume, "memory": bench_memory, "ratelimit": bench_ratelimit, "limits": bench_limits}


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
