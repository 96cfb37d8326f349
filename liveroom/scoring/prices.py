"""Prices: the user's, per million tokens, for a model; none is built in (they change).

``--price-input``/``--price-output``, or a ``--price-file`` of model -> prices
(JSON or TOML, e.g. ``data/prices.example.json``); the two prices win over the
file. A batch request pays ``batch_discount`` of them.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import orjson

from ..errors import InputError

MTOK = 1_000_000
DEFAULT_CURRENCY = "CNY"
DEFAULT_BATCH_DISCOUNT = 0.5


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


def highest(prices: list[Prices]) -> Prices:
    """The most any of ``prices`` asks per token, each of input and output (a budget's worst case over
    endpoints with their own prices); the first's currency and batch discount."""
    return replace(prices[0], input=max(p.input for p in prices), output=max(p.output for p in prices))


def price_value(entry: dict[str, Any], key: str, where: str) -> float:
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
    return Prices(price_value(entry, "input", where), price_value(entry, "output", where),
                  str(entry.get("currency", obj.get("currency", DEFAULT_CURRENCY))),
                  price_value({"batch_discount": discount}, "batch_discount", where), f"{Path(path).name}: {name}")


@dataclass(frozen=True)
class PriceChoice:
    """What the user gave: two prices per million tokens, a price file, a currency label, a batch discount."""

    input: float | None = None
    output: float | None = None
    file: str | None = None
    currency: str | None = None
    batch_discount: float | None = None


def resolve_prices(given: PriceChoice, model: str) -> Prices | None:
    """The prices ``given`` for ``model``; None when none are given. The two prices win over the file."""
    if (given.input is None) != (given.output is None):
        raise InputError("--price-input and --price-output go together (both per million tokens)")
    if given.input is not None and given.output is not None:
        if given.file:
            read_price_file(given.file)  # still checked
        base = Prices(given.input, given.output)
    elif given.file:
        base = file_prices(given.file, model)
    else:
        return None
    return replace(base, currency=given.currency or base.currency,
                   batch_discount=base.batch_discount if given.batch_discount is None else given.batch_discount)
