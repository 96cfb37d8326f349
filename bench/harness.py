"""What every engine benchmark shares: the repository's paths, child processes measured with
``wait4`` (:class:`Child`), ``bin/sim-server`` in its own process (:class:`Sim`), synthetic
inputs, ``bin/score`` command lines, record times, and the Markdown tables with the code that
puts them under ``## Engine`` in docs/BENCHMARKS.md.

Imported by bench/bench_engine.py and the tables it runs from other files (bench_limits.py,
bench_scale.py); it imports none of them.
"""

from __future__ import annotations

import datetime as dt
import json
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

# ----------------------------------------------------------------------------- processes


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def load_avg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


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

    def __init__(self, latency_ms: float = 0.0, *flags: str, cpu: int | None = None, log: Path | None = None):
        self._log = open(log, "wb") if log else subprocess.DEVNULL  # its stderr (--log-requests lines)
        self.proc = subprocess.Popen([PY, str(BIN / "sim-server"), "--port", "0", "--latency-ms", str(latency_ms),
                                      *flags], stdout=subprocess.PIPE, stderr=self._log, text=True,
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
        if self._log is not subprocess.DEVNULL:
            self._log.close()

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
