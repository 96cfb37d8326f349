"""Shared fixtures: small input files in the reference format, built per test,
bin/sim-server processes (:class:`Sim`, the ``sim`` fixture), and the check
that no test leaves a process behind (:func:`no_process_left`).

The column list and the sample rows are written out here by hand (not taken
from the package) so that tests check the package against the format, not
against itself. All strings are made up.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import math
import os
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import chinese_calendar
import pytest

SIM_SERVER = Path(__file__).resolve().parent.parent / "bin" / "sim-server"

#: persona keys in the reference's fixed order
PERSONA_ORDER: tuple[str, ...] = (
    "Z", "exquisite_mother", "new_white", "deep_middle",
    "city_blue", "city_old", "town_youth", "town_old",
)

TIME_COLS: tuple[str, ...] = ("dow_cos", "dow_sin", "hour_cos", "hour_sin", "is_workday", "is_holiday")
TARGET_LOG_COLS: tuple[str, ...] = ("log_gmv", "log_deal_order_cnt", "log_live_deal_user_cnt", "log_watch_user_cnt")

#: the 33 columns of the reference pitches file, in the order the authors' file has them
PITCH_COLUMNS: tuple[str, ...] = (
    "index", "start", "title", "prod", "duration", "user_cnt", "text",
    *TIME_COLS,
    *TARGET_LOG_COLS,
    *(f"prop_{k}_{kind}" for k in PERSONA_ORDER for kind in ("pay", "watch")),
)
assert len(PITCH_COLUMNS) == 33

#: every column that holds a number
NUMERIC_COLUMNS: tuple[str, ...] = tuple(c for c in PITCH_COLUMNS if c not in ("index", "start", "title", "prod", "text"))


def _shares(seed: int) -> list[float]:
    """Eight positive shares summing to 1, different per seed."""
    raw = [((seed * 7 + i * 3) % 11) + 1 for i in range(8)]
    total = sum(raw)
    return [r / total for r in raw]


def pitch_row(index: int, start: str, *, title: str = "春季上新专场", prod: str = "加厚保暖羊毛袜",
              text: str = "家人们看过来，这款袜子很暖和。", duration: float = 5, user_cnt: float = 1200,
              is_workday: int | None = None, **extra: Any) -> dict[str, Any]:
    """One complete row of the reference format.

    Time columns are computed by hand from ``start`` (Monday = 0, period 7;
    hour, period 24); ``is_workday`` from the official calendar unless given.
    """
    when = dt.datetime.strptime(start, "%Y-%m-%d %H:%M")
    dow, hour = when.weekday(), when.hour
    if is_workday is None:
        is_workday = int(chinese_calendar.is_workday(when.date()))
    watch, pay = _shares(index), _shares(index + 5)
    row: dict[str, Any] = {
        "index": index, "start": start, "title": title, "prod": prod,
        "duration": duration, "user_cnt": user_cnt, "text": text,
        "dow_cos": math.cos(2 * math.pi * dow / 7), "dow_sin": math.sin(2 * math.pi * dow / 7),
        "hour_cos": math.cos(2 * math.pi * hour / 24), "hour_sin": math.sin(2 * math.pi * hour / 24),
        "is_workday": float(is_workday), "is_holiday": float(1 - is_workday),
        "log_gmv": 8.5 + index / 10, "log_deal_order_cnt": 3.1, "log_live_deal_user_cnt": 2.9,
        "log_watch_user_cnt": 7.25,
    }
    for k, w, p in zip(PERSONA_ORDER, watch, pay):
        row[f"prop_{k}_pay"] = p
        row[f"prop_{k}_watch"] = w
    row.update(extra)
    return row


def write_pitches(tmp_path: Path, rows: Iterable[Mapping[str, Any] | Sequence[Any]],
                  columns: Sequence[str] | None = None, *, name: str = "pitches.csv",
                  bom: bool = False, lineterminator: str = "\n") -> Path:
    """Write a pitches CSV; quoting as the csv module does (multi-line cells quoted).

    ``rows`` are dicts (cells outside ``columns`` are ignored, missing ones left
    empty) or sequences already in ``columns`` order. ``columns`` defaults to
    the 33 reference columns. ``bom`` writes a UTF-8 byte-order mark first;
    lines end with ``lineterminator`` (the authors' file uses ``\n``).
    """
    columns = list(PITCH_COLUMNS if columns is None else columns)
    path = Path(tmp_path) / name
    with path.open("w", newline="", encoding="utf-8-sig" if bom else "utf-8") as f:
        w = csv.writer(f, lineterminator=lineterminator)
        w.writerow(columns)
        for r in rows:
            if isinstance(r, Mapping):
                w.writerow([r.get(c, "") for c in columns])
            else:
                w.writerow(list(r))
    return path


def write_goods(tmp_path: Path, showcase: Mapping[str, Any] | Any, *, name: str = "goods.json",
                indent: int | None = 4) -> Path:
    """Write a showcase JSON (``start`` -> list of ``[idx, name, price]``) as the authors do."""
    path = Path(tmp_path) / name
    path.write_text(json.dumps(showcase, ensure_ascii=False, indent=indent), encoding="utf-8")
    return path


#: a transcript holding a newline and commas (ASCII and Chinese), as ASR output does
MULTILINE_TEXT = "哈喽家人们，今天福利多多,\n先看这双袜子，加厚款, 三双只要二十九"

#: the start times of :func:`sample_rows`
SAMPLE_STARTS = ("2024-01-01 06:55", "2024-02-04 10:30", "2024-03-09 18:15", "2024-10-01 21:05")


def sample_rows() -> list[dict[str, Any]]:
    """Four valid pitches: a holiday, a swapped working Sunday, a plain Saturday, a holiday evening."""
    return [
        pitch_row(10, SAMPLE_STARTS[0], title="元旦开年第一播", prod="真丝睡衣两件套", text=MULTILINE_TEXT),
        pitch_row(11, SAMPLE_STARTS[1], title="年货节提前购", prod="坚果礼盒", text="这个礼盒，送长辈很有面子。",
                  duration=12, user_cnt=3456),
        pitch_row(12, SAMPLE_STARTS[2], title="周末宠粉夜", prod="不粘锅", text=""),
        pitch_row(13, SAMPLE_STARTS[3], title="国庆狂欢", prod="旅行拉杆箱", text="出门旅行必备，二十寸刚好登机。",
                  duration=3.5, user_cnt=999),
    ]


def sample_showcase() -> dict[str, list[list[Any]]]:
    """A showcase for :data:`SAMPLE_STARTS`; the first item is the promoted one."""
    return {
        SAMPLE_STARTS[0]: [[0, "真丝睡衣两件套", 399.0], [1, "羊绒围巾", 259.9], [2, "赠品小样", 0.0]],
        SAMPLE_STARTS[1]: [[0, "坚果礼盒", 88.0], [1, "牛肉干", 45.5]],
        SAMPLE_STARTS[2]: [[0, "不粘锅", 129.0], [1, "锅铲", -1.0], [2, "砧板", 39.0], [3, "保鲜盒", 19.9]],
        SAMPLE_STARTS[3]: [[0, "旅行拉杆箱", 1000.0]],
    }


@pytest.fixture
def pitches_csv(tmp_path: Path) -> Path:
    """A small valid pitches CSV with all 33 columns; record 1 spans two lines."""
    return write_pitches(tmp_path, sample_rows())


@pytest.fixture
def goods_json(tmp_path: Path) -> Path:
    """The showcase JSON matching :func:`pitches_csv`."""
    return write_goods(tmp_path, sample_showcase())


class Sim:
    """A bin/sim-server subprocess, on a free port unless the flags name one."""

    def __init__(self, *flags: str):
        if "--port" not in flags:
            flags = ("--port", "0", *flags)
        self.proc = subprocess.Popen([sys.executable, str(SIM_SERVER), *flags],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        assert line.startswith("listening on "), line + self.proc.stderr.read()
        self.url = line.split()[-1]

    def stats(self) -> dict:
        """What the server's ``/stats`` counts (every request it got)."""
        with urllib.request.urlopen(self.url.removesuffix("/v1") + "/stats") as r:
            return json.load(r)

    @property
    def port(self) -> str:
        return self.url.rsplit(":", 1)[1].split("/")[0]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(10)


@pytest.fixture
def sim() -> Iterator[Callable[..., Sim]]:
    """Start bin/sim-server processes (``sim(*flags)``); each is stopped after the test."""
    servers: list[Sim] = []

    def start(*flags: str) -> Sim:
        servers.append(Sim(*flags))
        return servers[-1]

    yield start
    for s in servers:
        s.stop()


# ----------------------------------------------------------------- bin/batch's tests: Batch API server, key, inputs
# (kit.py holds the classes and helpers; it is imported here when a fixture runs, as it imports this module)

@pytest.fixture
def server() -> Iterator[Callable[..., Any]]:
    """Start Batch API servers (``server(**BatchConfig fields)``, :class:`kit.BatchServer`) in threads of the
    test; each is stopped after it."""
    from kit import BATCH_KEY, BatchServer
    from liveroom.sim.batch_jobs import BatchConfig
    from liveroom.sim.config import SimConfig

    started: list[BatchServer] = []

    def start(**kw: Any) -> BatchServer:
        started.append(BatchServer(BatchConfig(sim=SimConfig(api_key=BATCH_KEY), **kw)))
        return started[-1]

    yield start
    for s in started:
        s.stop()


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The environment of an in-process bin/batch: :data:`kit.BATCH_KEY`, no base URL or model of the user's."""
    from kit import BATCH_KEY

    monkeypatch.setenv("OPENAI_API_KEY", BATCH_KEY)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    monkeypatch.delenv("LIVEROOM_MODEL", raising=False)


@pytest.fixture
def inputs(tmp_path: Path) -> tuple[Path, Path]:
    """(pitches, goods) of :data:`kit.BATCH_PITCHES` pitches."""
    from kit import BATCH_PITCHES, make_inputs

    return make_inputs(tmp_path, BATCH_PITCHES)


# ----------------------------------------------------------------- bin/serve's tests: a model, servers

@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny model with the persona features, trained on synthetic pitches (:func:`kit.train_tiny_model`)."""
    from kit import train_tiny_model

    return train_tiny_model(tmp_path_factory.mktemp("syn"), tmp_path_factory.mktemp("model"))


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[Callable[..., Any]]:
    """start(kind, *flags, key=...) runs bin/serve or bin/sim-server (:func:`kit.start_server`) for the test;
    all are stopped (and must exit 0) after."""
    from kit import Listening, start_server

    started: list[Listening] = []

    def start(kind: str, *flags: str, key: str | None = None) -> Listening:
        started.append(start_server(kind, flags, tmp_path / f"{kind}-{len(started)}.log", key))
        return started[-1]

    yield start
    for s in started:
        assert s.stop() == 0, s.stderr()


@pytest.fixture(scope="module")
def plain(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, Any]]:
    """(simulator, service) shared by the tests that only read counts before and after."""
    from kit import SERVE_KEY, serve_flags, start_server

    d = tmp_path_factory.mktemp("plain")
    sim = start_server("sim-server", (), d / "sim.log", None)
    serve = start_server("serve", serve_flags(sim, model_dir, d / "cache"), d / "serve.log", SERVE_KEY)
    yield sim, serve
    assert serve.stop() == 0 and sim.stop() == 0, serve.stderr()


# ----------------------------------------------------------------- tests in parallel processes (`make test`)

def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under ``pytest -n N --dist loadgroup`` (pytest-xdist), the tests that share a module-scoped
    fixture (a trained model, a running service) go to one process, which builds it once; every
    other test goes to whichever process is free."""
    if not config.pluginmanager.hasplugin("xdist"):
        return
    for item in items:
        info = getattr(item, "_fixtureinfo", None)
        defs = info.name2fixturedefs.values() if info is not None else ()
        if any(d[-1].scope in ("module", "class", "package") for d in defs if d):
            item.add_marker(pytest.mark.xdist_group(item.module.__name__ if item.module else item.nodeid))


# ----------------------------------------------------------------- no process left behind

#: every process the tests start inherits this mark in its environment, so that one that lost
#: its parent (a shell's background job after the shell exited) is still known as the tests'
RUN_MARK = "LIVEROOM_TEST_RUN"
os.environ[RUN_MARK] = uuid.uuid4().hex
#: how long a process that is on its way out may take to be gone
EXIT_GRACE_S = 5.0


def _read(path: str) -> bytes:
    """A /proc file's bytes, read with os calls: this runs twice per test over every process."""
    fd = os.open(path, os.O_RDONLY)
    try:
        chunks = [os.read(fd, 1 << 16)]
        while chunks[-1]:
            chunks.append(os.read(fd, 1 << 16))
        return b"".join(chunks)
    finally:
        os.close(fd)


def _stat(pid: str) -> tuple[int, str, int]:
    """(parent pid, state letter, start time in clock ticks after boot) of a process."""
    stat = _read(f"/proc/{pid}/stat")
    fields = stat[stat.rindex(b")") + 2:].split()  # the command name may hold spaces and parentheses
    return int(fields[1]), fields[0].decode(), int(fields[19])


#: when this process started: no process started earlier can be one the tests started
_SESSION_START = _stat(str(os.getpid()))[2]


def _proc_table() -> dict[int, tuple[int, str]]:
    """pid -> (parent pid, state letter) of every process started since this one (threads not listed)."""
    table = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            ppid, state, start = _stat(name)
        except OSError:  # gone meanwhile
            continue
        if start >= _SESSION_START:
            table[int(name)] = (ppid, state)
    return table


def _carries_mark(pid: int) -> bool:
    try:
        env = _read(f"/proc/{pid}/environ")
    except OSError:  # gone, or not ours to read
        return False
    return f"{RUN_MARK}={os.environ[RUN_MARK]}".encode() in env.split(b"\0")


def started_processes() -> set[int]:
    """The live processes the tests started: descendants of this one, or orphans carrying the run's mark.

    Zombies (dead, only not yet reaped) do not count; nor does a process older than this one,
    which can be neither.
    """
    me, table = os.getpid(), _proc_table()
    ours: set[int] = set()
    for pid, (_, state) in table.items():
        if pid == me or state in ("Z", "X"):
            continue
        chain, p = set(), pid
        while p in table and p not in chain and p != me:  # up to this process, or to one older than it
            chain.add(p)
            p = table[p][0]
        if p == me or _carries_mark(pid):
            ours.add(pid)
    return ours


def _left_after(before: set[int]) -> dict[int, str]:
    """The processes started since ``before`` still alive after the grace; pid -> command line."""
    deadline = time.monotonic() + EXIT_GRACE_S
    while (left := started_processes() - before) and time.monotonic() < deadline:
        time.sleep(0.05)
    out = {}
    for pid in left:
        try:
            out[pid] = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
    return out


def _fail_if_left(before: set[int], when: str) -> None:
    left = _left_after(before)
    for pid in left:  # so that one leak fails one test, not every test after it
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    if left:
        pytest.fail(f"{when} left {len(left)} process(es) running: "
                    + "; ".join(f"pid {pid}: {cmd[:200]}" for pid, cmd in sorted(left.items())), pytrace=False)


@pytest.fixture(autouse=True, scope="session")
def no_process_left_by_the_session() -> Iterator[None]:
    """After the last test, no process a test or a fixture started is alive."""
    before = started_processes()
    yield
    _fail_if_left(before, "the test session (a module- or session-scoped fixture)")


@pytest.fixture(autouse=True)
def no_process_left(no_process_left_by_the_session: None) -> Iterator[None]:
    """The test fails when a process it started is still alive after it (and its fixtures) ended.

    Being autouse and function-scoped, this is set up after the module- and session-scoped
    fixtures (whose servers may outlive one test) and before the test's own fixtures, and torn
    down after them; so what it sees left was started by the test or by a function-scoped fixture.
    """
    before = started_processes()
    yield
    _fail_if_left(before, "this test")
