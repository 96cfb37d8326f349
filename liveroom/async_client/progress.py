"""Progress on stderr: a tqdm bar on a terminal, a plain line every few seconds otherwise.

Both show the live concurrency limit (``limit 16/64``: 16 slots now, 64 the
ceiling; ``fixed 64`` under ``--fixed-concurrency``). While the endpoint is
unreachable the line says so (``endpoint unreachable for 2m10s (last error:
...)``). A run over several endpoints adds each one's live limit, rate, 429s and
state (``endpoints: a limit 8/8 39.8 req/s 429s 2 ok, b ... retired``).
:meth:`Progress.refresh`, called on a timer, keeps it coming when no
record does.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from typing import TextIO

from tqdm import tqdm

from .contract import Stats
from .limits import duration
from .record import Record


def _eta(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    s = int(seconds)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


def status_line(stats: Stats) -> str:
    """One line of counts and rates, for logs and the final summary."""
    elapsed = max(time.monotonic() - stats.started, 1e-9)
    rate = stats.done / elapsed
    tokens = (stats.prompt_tokens + stats.completion_tokens) / elapsed
    eta = (stats.total - stats.done) / rate if rate > 0 else float("inf")
    return (f"{stats.done}/{stats.total} {rate:.1f} req/s {tokens:.0f} tok/s "
            f"retries {stats.retries} 429s {stats.throttled} invalid {stats.invalid} "
            f"failed {stats.failed}{limit_note(stats)} ETA {_eta(eta)}") + outage_note(stats) + endpoints_note(stats)


def limit_note(stats: Stats) -> str:
    """`` limit 16/64`` (the live concurrency limit), or nothing when there is none."""
    return f" {stats.limit.describe()}" if stats.limit is not None else ""


def outage_note(stats: Stats) -> str:
    """``; endpoint unreachable for 2m10s (last error: ...)`` while it is, else nothing."""
    o = stats.outage
    if o is None or o.since is None:
        return ""
    return f"; endpoint unreachable for {duration(o.seconds)} (last error: {o.last_error[:200]})"


def endpoints_note(stats: Stats) -> str:
    """``; endpoints: a limit 8/8 39.8 req/s 429s 2 ok, ...`` in a run over named endpoints, else nothing."""
    return f"; {stats.endpoints()}" if stats.endpoints is not None else ""


class Progress:
    """Reports a run's progress as records come in; the counts are read from ``stats_of()``.

    ``extra()``, when given, is the caller's text added to each line (``spent 1.23 CNY``): what the
    engine does not know of stays out of it.
    """

    def __init__(self, stats_of: Callable[[], Stats], file: TextIO | None = None, every: float = 10.0,
                 bar: bool | None = None, extra: Callable[[], str] | None = None) -> None:
        self._stats_of = stats_of  # read at each refresh
        self._extra_of = extra
        file = file or sys.stderr  # looked up now: stderr may have been replaced since import
        self._file = file
        self._every = every
        self._last = time.monotonic()
        self._bar: tqdm | None = None
        self._use_bar = file.isatty() if bar is None else bar

    def start(self, total: int) -> None:
        if self._use_bar:
            self._bar = tqdm(total=total, unit="req", file=self._file, dynamic_ncols=True,
                             mininterval=0.5, smoothing=0.05)

    def update(self, record: Record) -> None:
        if self._bar is not None:
            self._bar.update(1)
        self.refresh()

    def refresh(self) -> None:
        """Show the counts when it is time to (called per record and on a timer)."""
        now = time.monotonic()
        if self._bar is not None:
            if now - self._last > 0.5:
                s = self._stats_of()
                tokens = (s.prompt_tokens + s.completion_tokens) / max(now - s.started, 1e-9)
                self._bar.set_postfix_str(f"{tokens:.0f} tok/s retries={s.retries} 429={s.throttled} "
                                          f"invalid={s.invalid} failed={s.failed}{limit_note(s)}{outage_note(s)}{endpoints_note(s)}"
                                          f"{self._extra()}", refresh=True)
                self._last = now
        elif now - self._last > self._every:
            print(f"progress: {status_line(self._stats_of())}{self._extra()}", file=self._file, flush=True)
            self._last = now

    def _extra(self) -> str:
        """``; <the caller's text>``, or nothing."""
        text = self._extra_of() if self._extra_of is not None else ""
        return f"; {text}" if text else ""

    def write(self, text: str) -> None:
        """A line of its own (a warning), above the bar when there is one."""
        if self._bar is not None:
            self._bar.write(text, file=self._file)
        else:
            print(text, file=self._file, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
