"""The bill while bin/score runs: ``usage.json`` kept current, the money spent on the progress line, ``--budget``.

:class:`Meter` holds the run directory's :class:`~.usage.UsageTotals` (loaded,
then caught up with the records written since they were saved, by a run that
was killed) and saves them atomically every few seconds and at the end, each
time caught up with the files. Between saves, the records the engine writes
are counted as they come in a second tally, dropped when the next catch-up
reads them from the files: no record is counted twice, none is missed (one
writer), and no file is read per record. With a budget it is also the
engine's :class:`~liveroom.async_client.engine.Admission`: a job is sent only
while the cost spent (every run of the directory, batch imports at their
price) plus the worst case of every job in flight, this one included, stays
within the budget. A job that does not fit waits for a job in flight to be
released (its record counted: the money it did not use is room again) and is
asked again; the run stops when one does not fit with nothing in flight. So
the spent cost never passes the budget while no request costs more than its
worst case, and where it stops the budget less the spent is under the worst
case of the job refused: one job's worst case, whatever the concurrency.

The worst case of a job (:class:`WorstCase`) is every ask it may take: the
first and ``--max-reasks`` re-asks, each billed its prompt and its whole
``max_tokens`` (a re-ask's: ``--reask-max-tokens``). The prompt is counted as
one token per character of the messages (the ``--tpm`` estimate; the
tokenizers of the Chinese models bill fewer), a re-ask's as the prompt before
it plus twice the reply before it (the bad reply it quotes, and a reason that
may quote part of it) plus :data:`REASK_WORDS`. Retries after a 429, a 5xx or
a lost connection send the same request again without adding to it: an
answer that failed reports no usage and is billed nothing, so they count
nowhere, as in the records. When a record shows more prompt tokens per
character, or more completion tokens than ``max_tokens``, than the rule
assumes, later worst cases are raised by that ratio.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..async_client.engine import Job
from ..async_client.record import Record
from ..errors import InputError
from .plan import prompt_estimate
from .prices import Prices
from .usage import UsageTotals, usage_of

#: tokens a re-ask adds besides the reply it quotes: its request to answer again and the reason's words
REASK_WORDS = 256
SAVE_EVERY = 2.0  # seconds between saves of usage.json while records come
#: the engine's stop reason when the budget refuses a job
BUDGET_REACHED = "budget reached"


def money(value: float) -> str:
    """``49.87``; a small amount keeps four decimals (``0.0123``)."""
    return f"{value:,.2f}" if value >= 1 else f"{value:.4f}"


def max_tokens_of(payload: dict[str, Any]) -> int:
    """The completion tokens a request may be billed at most, as its body says (0 when it says nothing)."""
    value = payload.get("max_completion_tokens", payload.get("max_tokens"))
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


@dataclass
class WorstCase:
    """The most a job may cost: its first ask and ``reasks`` re-asks, each at its ``max_tokens``."""

    prices: Prices
    reasks: int
    reask_max_tokens: int | None = None
    prompt_ratio: float = 1.0  # prompt tokens per character: 1, or the most a record showed
    reply_ratio: float = 1.0   # completion tokens per max_tokens: 1, or the most a record showed

    def __call__(self, job: Job) -> float:
        prompt, out = prompt_estimate(job) * self.prompt_ratio, max_tokens_of(job.payload)
        total = 0.0
        for _ in range(self.reasks + 1):
            billed = out * self.reply_ratio
            total += self.prices.cost(prompt, billed)
            prompt += 2 * billed + REASK_WORDS * self.prompt_ratio
            out = self.reask_max_tokens or out
        return total

    def learn(self, job: Job, record: Record) -> None:
        """Raise the ratios when a first ask used more than the rule assumes."""
        if record.reasks or not record.usage:
            return  # a re-asked record sums several asks; a failed one used nothing known
        chars, out = prompt_estimate(job), max_tokens_of(job.payload)
        if chars:
            self.prompt_ratio = max(self.prompt_ratio, usage_of(record, "prompt_tokens") / chars)
        if out:
            self.reply_ratio = max(self.reply_ratio, usage_of(record, "completion_tokens") / out)


class Meter:
    """The run's usage as records come; with ``budget``, the gate that keeps the cost within it."""

    def __init__(self, run_dir: str | Path, groups: Iterable[str], prices: Prices | None,
                 budget: float | None = None, worst: WorstCase | None = None,
                 endpoint_prices: dict[str, Prices] | None = None) -> None:
        if budget is not None and worst is None:
            raise ValueError("a budget needs a worst case")
        self.run_dir, self.groups, self.budget, self.worst = Path(run_dir), list(groups), budget, worst
        self.prices, self.endpoint_prices = prices, dict(endpoint_prices or {})  # an endpoint's own: its answers
        self.totals = self._fresh(prices)
        self.recent = self._fresh(prices)  # records written since the totals last caught up
        self.held: dict[str, float] = {}  # job id -> its worst case, while in flight
        self.reached = False
        self._settled = asyncio.Event()  # set (and replaced) by each release: the waiting jobs try again
        self._saved = time.monotonic()

    def open(self) -> None:
        """Read ``usage.json`` and count what was written after it (by a run killed before it saved);
        only when there is something to send, so a rerun with nothing to do reads no record."""
        self.totals = UsageTotals.load(self.run_dir) or UsageTotals()
        self.totals.prices = self.prices or self.totals.prices  # a run without prices keeps the earlier ones
        self.totals.endpoint_prices.update(self.endpoint_prices)  # and the earlier endpoints' own
        self.endpoint_prices = self.totals.endpoint_prices
        self.totals.catch_up(self.run_dir, self.groups)
        if self.budget is not None and self.totals.cost() is None:  # endpoints' own prices only, earlier
            raise InputError(f"--budget: {self.run_dir} holds answers of endpoints without prices of their "
                             "own; give --price-input and --price-output (or --price-file) for them")
        self.recent = self._fresh(self.totals.prices)
        self._saved = time.monotonic()

    def _fresh(self, prices: Prices | None) -> UsageTotals:
        return UsageTotals(prices=prices, endpoint_prices=self.endpoint_prices)

    @property
    def spent(self) -> float | None:
        """The cost of every record of the run directory; None without prices."""
        cost, recent = self.totals.cost(), self.recent.cost()
        return None if cost is None or recent is None else cost + recent

    def counted(self, record: Record) -> None:
        """After each record written (in its file now): counted, and ``usage.json`` saved when due."""
        self.recent.add(record)
        if time.monotonic() - self._saved >= SAVE_EVERY:
            self.save()

    def save(self) -> None:
        """``usage.json`` as the totals stand, caught up with the files (atomically, with the bytes they cover)."""
        self.totals.catch_up(self.run_dir, self.groups)  # reads the records of ``recent`` again: drop that
        self.recent = self._fresh(self.totals.prices)
        self.totals.save(self.run_dir)
        self._saved = time.monotonic()

    def text(self) -> str:
        """For the progress line: ``spent 1.23 CNY`` (``of 50.00`` with a budget); nothing without prices."""
        spent, currency = self.spent, self.totals.currency
        if spent is None or currency is None:
            return ""
        return f"spent {money(spent)}" + (f" of {money(self.budget)}" if self.budget is not None else "") \
            + f" {currency}"

    # -- the engine's Admission --------------------------------------------------------
    def reserve(self, job: Job) -> str | asyncio.Event | None:
        """Let ``job`` go while the spent cost and the worst cases in flight, its own too, stay within
        the budget; when they would not, wait (the Event) for a job in flight to be released, or,
        with none in flight, stop the run."""
        if self.budget is None or self.worst is None:
            return None
        worst = self.worst(job)
        if not self.reached and (self.spent or 0.0) + sum(self.held.values()) + worst <= self.budget:
            self.held[job.id] = worst
            return None
        if self.reached or not self.held:  # nothing in flight will leave more room
            self.reached = True  # no later job goes, however small
            return BUDGET_REACHED
        return self._settled

    def release(self, job: Job, record: Record) -> None:
        """``job``'s record is counted (by :meth:`counted`): its worst case is no longer held, and the
        jobs waiting for room are asked again."""
        self.held.pop(job.id, None)
        if self.worst is not None:
            self.worst.learn(job, record)
        self._settled.set()
        self._settled = asyncio.Event()
