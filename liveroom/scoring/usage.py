"""What a run has used: ``RUN_DIR/usage.json``, and its totals summed again from the records.

The totals (requests ok and failed, prompt and completion tokens, cost) are
kept in ``usage.json``, written atomically, and can always be recomputed from
the records, which hold each request's ``usage`` summed over its re-asks. A
record imported from a Batch API output has no latency (nothing was timed),
which is how its tokens are billed at the batch price. A record answered by an
endpoint of the pool that names its own prices (:mod:`.endpoints`) is billed at
those: its tokens are kept per endpoint name beside the totals, and the prices
of each such endpoint in ``usage.json``, so a run resumed on other endpoints
still prices the earlier answers as they were. bin/score keeps
``usage.json`` current while it runs and stops at ``--budget``
(:mod:`.budget`); bin/batch updates it after each import; bin/collect and
bin/report read it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import orjson

from ..async_client.files import atomic_write
from ..async_client.record import Record
from ..async_client.run_dir import RunDir
from ..errors import InputError
from .prices import DEFAULT_BATCH_DISCOUNT, DEFAULT_CURRENCY, Prices, price_value

USAGE = "usage.json"
#: UsageTotals' fields that are not counts read from usage.json as they are
KEPT = ("prices", "counted", "by_endpoint", "endpoint_prices")
#: the fields of usage.json other tools may rely on (cost and prices null when no prices were given)
FIELDS = ("requests_ok", "requests_failed", "prompt_tokens", "completion_tokens", "cost", "currency",
          "price_input_per_mtok", "price_output_per_mtok")


def usage_of(rec: Record, key: str) -> int:
    """A token count of a record's usage; 0 when absent."""
    value = rec.usage.get(key, 0)
    return value if type(value) is int else 0


@dataclass
class UsageTotals:
    """What a run has used, summed over its records; the file ``usage.json``.

    ``batch_*`` are the part of the tokens billed at the batch price;
    ``counted`` the bytes of each checkpoint file they cover, so that
    :meth:`catch_up` adds exactly the records written after them (those of a
    run killed before it saved).
    """

    requests_ok: int = 0
    requests_failed: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    batch_prompt_tokens: int = 0
    batch_completion_tokens: int = 0
    prices: Prices | None = field(default=None, compare=False)
    counted: dict[str, int] = field(default_factory=dict, compare=False)
    #: endpoint name -> [prompt, completion] tokens of the records it answered (not batch ones)
    by_endpoint: dict[str, list[int]] = field(default_factory=dict, compare=False)
    #: endpoint name -> its own prices, which bill the tokens of ``by_endpoint`` instead of ``prices``
    endpoint_prices: dict[str, Prices] = field(default_factory=dict, compare=False)

    def add(self, record: Record, batch: bool | None = None) -> None:
        """Count one record; ``batch`` None: a record without latency came from a batch.

        For records not (yet) in the run's files: those in the files are
        counted by :meth:`catch_up`, which reads only what is new (mixing the
        two would count a record twice).
        """
        if record.ok:
            self.requests_ok += 1
        else:
            self.requests_failed += 1
        prompt, completion = usage_of(record, "prompt_tokens"), usage_of(record, "completion_tokens")
        self.prompt_tokens += prompt
        self.completion_tokens += completion
        if record.latency_ms is None if batch is None else batch:
            self.batch_prompt_tokens += prompt
            self.batch_completion_tokens += completion
        elif record.endpoint is not None:
            tokens = self.by_endpoint.setdefault(record.endpoint, [0, 0])
            tokens[0] += prompt
            tokens[1] += completion

    def cost(self, prices: Prices | None = None) -> float | None:
        """The money these tokens cost: an endpoint's own at its prices, the rest at ``prices`` (else
        the totals' own); None when some tokens have no price (or no price is known at all)."""
        prices = prices or self.prices
        own = {name: t for name, t in self.by_endpoint.items() if name in self.endpoint_prices}
        money = sum(self.endpoint_prices[name].cost(p, c) for name, (p, c) in own.items())
        rest = (self.prompt_tokens - self.batch_prompt_tokens - sum(p for p, _ in own.values()),
                self.completion_tokens - self.batch_completion_tokens - sum(c for _, c in own.values()))
        if prices is None:
            unpriced = any(rest) or self.batch_prompt_tokens or self.batch_completion_tokens
            return None if unpriced or not self.endpoint_prices else money
        return money + prices.cost(*rest) + prices.cost(self.batch_prompt_tokens, self.batch_completion_tokens,
                                                        batch=True)

    @property
    def currency(self) -> str | None:
        """The prices' label: the run's, else (every answer at an endpoint's own) the default."""
        return self.prices.currency if self.prices else DEFAULT_CURRENCY if self.endpoint_prices else None

    def to_json(self) -> dict[str, Any]:
        p = self.prices
        cost = self.cost()
        return {"requests_ok": self.requests_ok, "requests_failed": self.requests_failed,
                "prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
                "cost": None if cost is None else round(cost, 6), "currency": self.currency,
                "price_input_per_mtok": p.input if p else None, "price_output_per_mtok": p.output if p else None,
                "batch_prompt_tokens": self.batch_prompt_tokens,
                "batch_completion_tokens": self.batch_completion_tokens,
                "batch_discount": p.batch_discount if p else None, "counted_bytes": dict(self.counted),
                "endpoint_tokens": {name: {"prompt_tokens": t[0], "completion_tokens": t[1]}
                                    for name, t in sorted(self.by_endpoint.items())},
                "endpoint_prices": {name: {"input": ep.input, "output": ep.output}
                                    for name, ep in sorted(self.endpoint_prices.items())}}

    @classmethod
    def from_json(cls, obj: Any, where: str = USAGE) -> UsageTotals:
        if not isinstance(obj, dict):
            raise InputError(f"{where}: not a usage table")
        counts = {}
        for f in fields(cls):
            if f.name not in KEPT:
                v = obj.get(f.name, 0)
                if type(v) is not int or v < 0:
                    raise InputError(f"{where}: {f.name!r} must be a whole number of at least 0, got {v!r}")
                counts[f.name] = v
        prices = None
        if obj.get("price_input_per_mtok") is not None:
            discount = obj.get("batch_discount")
            prices = Prices(price_value(obj, "price_input_per_mtok", where), price_value(obj, "price_output_per_mtok", where),
                            str(obj.get("currency") or DEFAULT_CURRENCY),
                            DEFAULT_BATCH_DISCOUNT if discount is None else price_value(obj, "batch_discount", where),
                            where)
        counted = obj.get("counted_bytes") or {}
        if not isinstance(counted, dict) or not all(type(v) is int and v >= 0 for v in counted.values()):
            raise InputError(f"{where}: 'counted_bytes' must map file names to byte counts")
        return cls(**counts, prices=prices, counted=counted, by_endpoint=_endpoint_tokens(obj, where),
                   endpoint_prices=_endpoint_prices(obj, where, prices))

    @classmethod
    def load(cls, run_dir: str | Path) -> UsageTotals | None:
        """The totals kept in ``run_dir``; None when it has none yet."""
        raw = read_usage(run_dir)
        return None if raw is None else cls.from_json(raw, str(Path(run_dir) / USAGE))

    def catch_up(self, run_dir: str | Path, groups: Iterable[str]) -> None:
        """Add the records of ``groups`` written after the bytes these totals cover; when a file is
        shorter than that (its torn last line dropped), count everything again from the records."""
        records, groups = RunDir(run_dir), list(groups)
        if any(records.size(g) < self.counted.get(g, 0) for g in groups):
            fresh = recompute(run_dir, groups)
            for name in (fl.name for fl in fields(self)):
                if name not in ("prices", "endpoint_prices"):
                    setattr(self, name, getattr(fresh, name))
            return
        for group in groups:
            if not records.path(group).exists():
                continue
            end = self.counted.get(group, 0)
            for rec, end in records.records_after(group, end):
                self.add(rec)
            self.counted[group] = end

    def save(self, run_dir: str | Path) -> None:
        """Into ``run_dir/usage.json``, whole or not at all."""
        atomic_write(Path(run_dir) / USAGE, orjson.dumps(self.to_json(), option=orjson.OPT_INDENT_2))


def _endpoint_tokens(obj: dict[str, Any], where: str) -> dict[str, list[int]]:
    raw = obj.get("endpoint_tokens") or {}
    pairs: dict[str, list[Any]] = {
        name: [t.get("prompt_tokens"), t.get("completion_tokens")] if isinstance(t, dict) else [None]
        for name, t in (raw.items() if isinstance(raw, dict) else [("", None)])}
    if not all(type(v) is int and v >= 0 for pair in pairs.values() for v in pair):
        raise InputError(f"{where}: 'endpoint_tokens' must map endpoint names to their prompt_tokens "
                         "and completion_tokens")
    return pairs


def _endpoint_prices(obj: dict[str, Any], where: str, run: Prices | None) -> dict[str, Prices]:
    raw = obj.get("endpoint_prices") or {}
    if not isinstance(raw, dict) or not all(isinstance(e, dict) for e in raw.values()):
        raise InputError(f"{where}: 'endpoint_prices' must map endpoint names to their input and output prices")
    base = run or Prices(0.0, 0.0)
    return {name: replace(base, input=price_value(e, "input", f"{where}: endpoint_prices.{name}"),
                          output=price_value(e, "output", f"{where}: endpoint_prices.{name}"), source=where)
            for name, e in raw.items()}


def update_usage(run_dir: str | Path, groups: Any, prices: Prices | None = None) -> UsageTotals:
    """``usage.json`` brought up to date with the records of ``groups`` and saved (after a batch import);
    ``prices`` replace the ones it holds, else those stay."""
    totals = UsageTotals.load(run_dir) or UsageTotals()
    totals.prices = prices or totals.prices
    totals.catch_up(run_dir, groups)
    totals.save(run_dir)
    return totals


def read_usage(run_dir: str | Path) -> Any:
    """``usage.json`` as it is; None when absent."""
    path = Path(run_dir) / USAGE
    try:
        return orjson.loads(path.read_bytes())
    except FileNotFoundError:
        return None
    except orjson.JSONDecodeError as e:
        raise InputError(f"{path}: unreadable ({e})") from None


def recompute(run_dir: str | Path, groups: Any) -> UsageTotals:
    """The totals of every record of ``groups`` (checkpoint file names) in ``run_dir``."""
    totals = UsageTotals()
    totals.catch_up(run_dir, groups)
    return totals


def check_usage(run_dir: str | Path, groups: Any) -> dict[str, Any]:
    """The totals summed over the records (priced as ``usage.json`` says) and where ``usage.json`` differs."""
    raw = read_usage(run_dir)
    counted = recompute(run_dir, groups)
    if raw is not None:
        kept = UsageTotals.from_json(raw, str(Path(run_dir) / USAGE))
        counted.prices, counted.endpoint_prices = kept.prices, kept.endpoint_prices
    out = counted.to_json()
    differs = []
    for k, mine in out.items() if raw is not None else ():
        if k == "counted_bytes" or (k not in FIELDS and k not in raw):
            continue  # bookkeeping, or an extra of ours that another writer may leave out
        theirs = raw.get(k)
        same = (mine == theirs if not isinstance(mine, float) or not isinstance(theirs, (int, float))
                else abs(mine - theirs) <= 1e-6 * max(1.0, abs(mine)))
        if not same:
            differs.append(f"{k} {theirs} in {USAGE}, {mine} in the records")
    return {**out, "usage_json": "absent" if raw is None else ("differs" if differs else "agrees"),
            "differences": differs}


def usage_lines(u: dict[str, Any]) -> list[str]:
    """The words of :func:`check_usage`, one line each."""
    cost = "" if u["cost"] is None else f", cost {u['cost']:.2f} {u['currency']}"
    lines = [f"usage: {u['requests_ok']} request(s) ok, {u['requests_failed']} failed; {u['prompt_tokens']:,} "
             f"prompt + {u['completion_tokens']:,} completion tokens{cost} (summed over the records)"]
    if u["usage_json"] == "differs":
        lines.append(f"usage: {USAGE} differs from the records: " + "; ".join(u["differences"]))
    return lines
