"""What a run costs: prices, the usage totals of a run directory, and the dry run.

Prices are the user's (``--price-input``/``--price-output`` per million
tokens, or a ``--price-file`` of model -> prices): they change, so none is
built in. The totals of a run (requests ok and failed, prompt and completion
tokens, cost) are kept in ``RUN_DIR/usage.json``, written atomically, and can
always be recomputed from the records, which hold each request's ``usage``
summed over its re-asks. A record imported from a Batch API output has no
latency (nothing was timed), which is how its tokens are billed at the batch
price. bin/score keeps ``usage.json`` current while it runs and stops at
``--budget`` (:mod:`.budget`); bin/batch updates it after each import.

The dry run (``bin/score --dry-run``, ``bin/batch prepare --dry-run``) checks
every input as the real command does, then counts, per stage, the requests
still to send and estimates their tokens and cost, reading the run directory
and writing nothing (not even the manifest or the directory).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from ..async_client.checkpoint import Checkpoint, atomic_write, check_manifest
from ..async_client.record import Record, RecordError, loads
from ..cliargs import non_negative_float, number
from ..errors import InputError
from .estimate import estimate, notes, table, usage_of
from .plan import Plan

if TYPE_CHECKING:
    from .batch.prepare import ShardLimits

USAGE = "usage.json"
MTOK = 1_000_000
DEFAULT_CURRENCY = "CNY"
DEFAULT_BATCH_DISCOUNT = 0.5
#: the fields of usage.json other tools may rely on (cost and prices null when no prices were given)
FIELDS = ("requests_ok", "requests_failed", "prompt_tokens", "completion_tokens", "cost", "currency",
          "price_input_per_mtok", "price_output_per_mtok")


# ----------------------------------------------------------------- prices

@dataclass(frozen=True)
class Prices:
    """Per million tokens, in ``currency`` (a label); batch requests pay ``batch_discount`` of them."""

    input: float
    output: float
    currency: str = DEFAULT_CURRENCY
    batch_discount: float = DEFAULT_BATCH_DISCOUNT
    source: str = "--price-input/--price-output"

    def cost(self, prompt_tokens: float, completion_tokens: float, batch: bool = False) -> float:
        """The price of so many tokens."""
        money = (prompt_tokens * self.input + completion_tokens * self.output) / MTOK
        return money * self.batch_discount if batch else money


def worst_case(tokens_prompt_est: float, max_tokens: int, prices: Prices, batch: bool = False) -> float:
    """The most one request can cost: its estimated prompt and ``max_tokens`` of reply (for a budget)."""
    return prices.cost(tokens_prompt_est, max_tokens, batch)


def _price(entry: dict[str, Any], key: str, where: str) -> float:
    value = entry.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
        raise InputError(f"{where}: {key!r} must be a number of at least 0, got {value!r}")
    return float(value)


def read_price_file(path: str | Path) -> dict[str, Any]:
    """A price file as data: JSON, or TOML (Python 3.11's tomllib, else the tomli package)."""
    path = Path(path)
    data = path.read_bytes()
    try:
        if path.suffix.lower() == ".toml":
            if sys.version_info >= (3, 11):
                import tomllib as toml
            else:  # Python 3.10: the tomli package, when it is installed
                try:
                    import tomli as toml
                except ModuleNotFoundError:
                    raise InputError(f"{path}: reading TOML needs Python 3.11 or the tomli package; "
                                     "write the prices as JSON") from None
            obj: Any = toml.loads(data.decode("utf-8"))
        else:
            obj = orjson.loads(data)
    except (ValueError, UnicodeDecodeError) as e:  # JSONDecodeError and TOMLDecodeError are ValueErrors
        raise InputError(f"{path}: unreadable price file ({e})") from None
    if not isinstance(obj, dict) or not isinstance(obj.get("models"), dict):
        raise InputError(f"{path}: a price file holds a 'models' table of model -> {{input, output}}")
    return obj


def file_prices(path: str | Path, model: str) -> Prices:
    """The prices ``path`` gives for ``model`` (the name as sent, else the same name in other case)."""
    obj = read_price_file(path)
    models: dict[str, Any] = obj["models"]
    name = model if model in models else next((m for m in models if m.lower() == model.lower()), None)
    if name is None:
        raise InputError(f"{path}: no prices for model {model!r} (it has {', '.join(models) or 'none'}); "
                         "add them, or give --price-input and --price-output")
    entry, where = models[name], f"{path}: models.{name}"
    if not isinstance(entry, dict):
        raise InputError(f"{where}: must be a table with 'input' and 'output'")
    discount = entry.get("batch_discount", obj.get("batch_discount", DEFAULT_BATCH_DISCOUNT))
    return Prices(_price(entry, "input", where), _price(entry, "output", where),
                  str(entry.get("currency", obj.get("currency", DEFAULT_CURRENCY))),
                  _price({"batch_discount": discount}, "batch_discount", where), f"{Path(path).name}: {name}")


def resolve_prices(args: argparse.Namespace, model: str) -> Prices | None:
    """The prices the flags give for ``model``; None when none are given. The two price flags win over the file."""
    given = args.price_input is not None
    if given != (args.price_output is not None):
        raise InputError("--price-input and --price-output go together (both per million tokens)")
    if given:
        if args.price_file:
            read_price_file(args.price_file)  # still checked
        base = Prices(args.price_input, args.price_output)
    elif args.price_file:
        base = file_prices(args.price_file, model)
    else:
        return None
    discount = getattr(args, "batch_discount", None)  # a flag of bin/batch prepare only
    return replace(base, currency=args.currency or base.currency,
                   batch_discount=base.batch_discount if discount is None else discount)


def add_cost_arguments(p: argparse.ArgumentParser, batch: bool = False) -> None:
    """``--dry-run`` and the price flags; ``batch`` adds ``--batch-discount``."""
    g = p.add_argument_group("cost")
    g.add_argument("--dry-run", action="store_true",
                   help="check every input, then print per stage the requests still to send, their estimated "
                        "tokens and cost; send nothing, write nothing")
    g.add_argument("--price-input", type=non_negative_float, metavar="X", help="price per million prompt tokens")
    g.add_argument("--price-output", type=non_negative_float, metavar="Y",
                   help="price per million completion tokens")
    g.add_argument("--currency", default=None, help=f"label of the prices (default: the price file's, else "
                                                    f"{DEFAULT_CURRENCY})")
    g.add_argument("--price-file", metavar="FILE",
                   help="JSON or TOML of model -> prices (e.g. data/prices.example.json); the two flags above win")
    if not batch:
        g.add_argument("--budget", type=non_negative_float, metavar="AMOUNT",
                       help="stop sending before the run's cost (usage.json, every earlier run counted) plus the "
                            "worst case of the requests in flight would pass AMOUNT; needs the prices; the stop "
                            "exits 130, as an interrupt does, and a rerun with a higher --budget goes on")
    if batch:
        g.add_argument("--batch-discount", type=number(float, 0, 1, name="share"), default=None,
                       help="the batch price as a share of the prices (default: the price file's, else "
                            f"{DEFAULT_BATCH_DISCOUNT})")


# ----------------------------------------------------------------- usage totals

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

    def cost(self, prices: Prices | None = None) -> float | None:
        """The money these tokens cost at ``prices`` (else the totals' own); None without prices."""
        prices = prices or self.prices
        if prices is None:
            return None
        return (prices.cost(self.prompt_tokens - self.batch_prompt_tokens,
                            self.completion_tokens - self.batch_completion_tokens)
                + prices.cost(self.batch_prompt_tokens, self.batch_completion_tokens, batch=True))

    def to_json(self) -> dict[str, Any]:
        p = self.prices
        cost = self.cost()
        return {"requests_ok": self.requests_ok, "requests_failed": self.requests_failed,
                "prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
                "cost": None if cost is None else round(cost, 6), "currency": p.currency if p else None,
                "price_input_per_mtok": p.input if p else None, "price_output_per_mtok": p.output if p else None,
                "batch_prompt_tokens": self.batch_prompt_tokens,
                "batch_completion_tokens": self.batch_completion_tokens,
                "batch_discount": p.batch_discount if p else None, "counted_bytes": dict(self.counted)}

    @classmethod
    def from_json(cls, obj: Any, where: str = USAGE) -> UsageTotals:
        if not isinstance(obj, dict):
            raise InputError(f"{where}: not a usage table")
        counts = {}
        for f in fields(cls):
            if f.name not in ("prices", "counted"):
                v = obj.get(f.name, 0)
                if type(v) is not int or v < 0:
                    raise InputError(f"{where}: {f.name!r} must be a whole number of at least 0, got {v!r}")
                counts[f.name] = v
        prices = None
        if obj.get("price_input_per_mtok") is not None:
            discount = obj.get("batch_discount")
            prices = Prices(_price(obj, "price_input_per_mtok", where), _price(obj, "price_output_per_mtok", where),
                            str(obj.get("currency") or DEFAULT_CURRENCY),
                            DEFAULT_BATCH_DISCOUNT if discount is None else _price(obj, "batch_discount", where),
                            where)
        counted = obj.get("counted_bytes") or {}
        if not isinstance(counted, dict) or not all(type(v) is int and v >= 0 for v in counted.values()):
            raise InputError(f"{where}: 'counted_bytes' must map file names to byte counts")
        return cls(**counts, prices=prices, counted=counted)

    @classmethod
    def load(cls, run_dir: str | Path) -> UsageTotals | None:
        """The totals kept in ``run_dir``; None when it has none yet."""
        raw = _read_usage(run_dir)
        return None if raw is None else cls.from_json(raw, str(Path(run_dir) / USAGE))

    def catch_up(self, run_dir: str | Path, groups: Any) -> None:
        """Add the records of ``groups`` written after the bytes these totals cover; when a file is
        shorter than that (its torn last line dropped), count everything again from the records."""
        checkpoint = Checkpoint(run_dir)
        paths = {g: checkpoint.path(g) for g in groups}
        if any((p.stat().st_size if p.exists() else 0) < self.counted.get(g, 0) for g, p in paths.items()):
            fresh = recompute(run_dir, groups)
            for name in (fl.name for fl in fields(self)):
                if name != "prices":
                    setattr(self, name, getattr(fresh, name))
            return
        for group, path in paths.items():
            start = self.counted.get(group, 0)
            if not path.exists():
                continue
            with open(path, "rb") as stream:
                stream.seek(start)
                for line in stream:
                    if not line.endswith(b"\n"):
                        break  # a torn tail is no record
                    start += len(line)
                    try:
                        self.add(loads(line))
                    except RecordError:
                        continue  # a damaged line is no record
            self.counted[group] = start

    def save(self, run_dir: str | Path) -> None:
        """Into ``run_dir/usage.json``, whole or not at all."""
        atomic_write(Path(run_dir) / USAGE, orjson.dumps(self.to_json(), option=orjson.OPT_INDENT_2))


def update_usage(run_dir: str | Path, groups: Any, prices: Prices | None = None) -> UsageTotals:
    """``usage.json`` brought up to date with the records of ``groups`` and saved (after a batch import);
    ``prices`` replace the ones it holds, else those stay."""
    totals = UsageTotals.load(run_dir) or UsageTotals()
    totals.prices = prices or totals.prices
    totals.catch_up(run_dir, groups)
    totals.save(run_dir)
    return totals


def _read_usage(run_dir: str | Path) -> Any:
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
    raw = _read_usage(run_dir)
    counted = recompute(run_dir, groups)
    counted.prices = UsageTotals.from_json(raw, str(Path(run_dir) / USAGE)).prices if raw is not None else None
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


# ----------------------------------------------------------------- the dry run

def dry_run(args: argparse.Namespace, plan: Plan, batch: ShardLimits | None = None) -> int:
    """``--dry-run``, called with the plan bin/score (or, with its file limits, bin/batch prepare) made
    from every input it checked: print what the run would send and cost; nothing sent, nothing written."""
    run_dir = Path(args.run)
    check_manifest(run_dir, plan.manifest)  # a run made by another command is refused, as the real run refuses it
    prices = resolve_prices(args, plan.params.model)
    est = estimate(args, plan, run_dir, batch)
    held = f"{est.done:,} of its {est.planned:,} requests done" if est.done else "nothing done yet"
    lines = [f"{'batch prepare' if batch else 'score'} --dry-run: nothing sent, nothing written; "
             f"model {plan.params.model}; {run_dir}: {held}", ""]
    lines += table(est, plan.params.max_tokens, prices, batch is not None) + [""]
    lines += notes(est, plan.params.max_tokens, prices, batch is not None)
    print("\n".join(lines))
    return 0
