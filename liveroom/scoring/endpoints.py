"""The endpoints a run sends to: ``--endpoints FILE``, a repeated ``--base-url``, or the one of today.

``--endpoints FILE`` is TOML, one table per endpoint::

    [[endpoint]]
    name = "gpu-a"                        # goes into each record it answers
    base_url = "http://10.0.0.5:8000/v1"
    key_env = "GPU_A_KEY"                 # the variable that holds its key; no key_env: no key
    provider = "vllm"                     # optional: whose error codes are read first
    max_concurrency = 32                  # optional: its live limit's ceiling (default --concurrency)
    rpm = 600                             # optional: its own limits (default --rpm / --tpm)
    tpm = 1000000
    weight = 2                            # optional: its share when several have room (default 1)
    price_input = 0.8                     # optional, together: its own prices per million tokens,
    price_output = 2.0                    # in the run's currency (default the run's prices)

``weight`` is how :mod:`~liveroom.async_client.pool` chooses among endpoints with room. An
endpoint's prices charge the answers it gives, for the spent cost and ``--budget``; every
other answer is charged the run's prices (``--price-input``/``--price-output``, ``--price-file``).

Keys are never in the file: a ``key`` or ``api_key`` field is refused. A repeated
``--base-url`` is the short form: every URL with ``$OPENAI_API_KEY``, named by its host.
Anything wrong is one line naming the endpoint and the field.
"""

from __future__ import annotations

import contextlib
import os
import sys
from dataclasses import dataclass, field, replace
from typing import Any

from ..async_client.chat import ChatClient
from ..async_client.concurrency import ConcurrencyLimit
from ..async_client.contract import EngineConfig
from ..async_client.limits import Limits, Outage
from ..async_client.pool import Endpoint
from ..async_client.providers import CHAT_PROVIDERS, Provider, resolve_provider
from ..async_client.transport import endpoint_host, target
from ..errors import InputError
from .prices import Prices

FIELDS = ("name", "base_url", "key_env", "provider", "max_concurrency", "rpm", "tpm", "weight", "price_input",
          "price_output")
SECRETS = ("key", "api_key")


@dataclass(frozen=True)
class EndpointSpec:
    """One endpoint as declared; ``name`` "" for the lone endpoint of ``--base-url`` (records unchanged)."""

    name: str
    base_url: str
    api_key: str | None = field(default=None, repr=False)
    provider: Provider | None = None
    max_concurrency: int | None = None  # None: --concurrency
    rpm: float | None = None
    tpm: float | None = None
    weight: float = 1.0
    prices: tuple[float, float] | None = None  # its own (input, output) per million tokens

    def require_key(self) -> None:
        """Refuse a remote endpoint without a key, naming it (a URL that cannot be used: one line too)."""
        try:
            target(self.base_url, self.api_key).require_key()
        except InputError as e:
            raise InputError(f"endpoint {self.name}: {e}" if self.name else str(e)) from None


async def open_endpoint(clients: contextlib.AsyncExitStack, spec: EndpointSpec, timeout: float,
                        config: EngineConfig) -> Endpoint:
    """``spec`` ready to send to: its client (closed with ``clients``), live limit, rate limits and outage."""
    ceiling = spec.max_concurrency or config.concurrency
    client = await clients.enter_async_context(ChatClient(spec.base_url, spec.api_key, timeout, ceiling,
                                                          spec.provider))
    return Endpoint(spec.name, client, Limits(spec.rpm, spec.tpm), ConcurrencyLimit(ceiling, config.adaptive),
                    Outage(config.probe_every), spec.weight)


def _number(name: str, key: str, value: Any, kind: type, least: float | None = None) -> Any:
    """``value`` as ``kind``: above 0, or at least ``least`` when given; None stays None."""
    if value is None:
        return None
    what = "whole number" if kind is int else "number"
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind is int and not isinstance(value, int)) \
            or not (value > 0 if least is None else value >= least):
        raise InputError(f"--endpoints: endpoint {name!r}: {key} must be "
                         + (f"a positive {what}" if least is None else f"a {what} of at least {least:g}")
                         + f", not {value!r}")
    return kind(value)


def _prices(name: str, table: dict[str, Any]) -> tuple[float, float] | None:
    given = [table.get(k) for k in ("price_input", "price_output")]
    if given.count(None) == 1:
        raise InputError(f"--endpoints: endpoint {name!r}: price_input and price_output go together "
                         "(both per million tokens)")
    if given[0] is None:
        return None
    return _number(name, "price_input", given[0], float, 0.0), _number(name, "price_output", given[1], float, 0.0)


def _one(table: Any, index: int, default_provider: str | None) -> EndpointSpec:
    if not isinstance(table, dict):
        raise InputError(f"--endpoints: endpoint #{index} is not a table")
    name = table.get("name")
    if not isinstance(name, str) or not name.strip():
        raise InputError(f"--endpoints: endpoint #{index} needs a name (a string)")
    for key in SECRETS:
        if key in table:
            raise InputError(f"--endpoints: endpoint {name!r}: field {key!r}: keys are never written in the file; "
                             "put the variable that holds it in key_env")
    unknown = sorted(set(table) - set(FIELDS))
    if unknown:
        raise InputError(f"--endpoints: endpoint {name!r}: unknown field {unknown[0]!r} (known: {', '.join(FIELDS)})")
    base_url = table.get("base_url")
    if not isinstance(base_url, str) or not base_url.strip():
        raise InputError(f"--endpoints: endpoint {name!r}: base_url is missing")
    key_env, secret = table.get("key_env"), None
    if key_env is not None:
        if not isinstance(key_env, str) or not key_env:
            raise InputError(f"--endpoints: endpoint {name!r}: key_env must name an environment variable")
        secret = os.environ.get(key_env) or None
        if secret is None:
            raise InputError(f"--endpoints: endpoint {name!r}: key_env {key_env}: the variable is not set")
    provider = table.get("provider", default_provider)
    if provider is not None and provider not in CHAT_PROVIDERS:
        raise InputError(f"--endpoints: endpoint {name!r}: provider {provider!r} is not one of "
                         f"{', '.join(CHAT_PROVIDERS)}")
    return EndpointSpec(name, base_url, secret, resolve_provider(provider, base_url, CHAT_PROVIDERS),
                        _number(name, "max_concurrency", table.get("max_concurrency"), int),
                        _number(name, "rpm", table.get("rpm"), float), _number(name, "tpm", table.get("tpm"), float),
                        _number(name, "weight", table.get("weight"), float) or 1.0, _prices(name, table))


def own_prices(specs: tuple[EndpointSpec, ...], run: Prices | None, currency: str | None) -> dict[str, Prices]:
    """Endpoint name -> the prices it names, in the run's currency (``currency``, else the run prices')."""
    base = run or Prices(0.0, 0.0)
    return {s.name: replace(base, input=s.prices[0], output=s.prices[1], currency=currency or base.currency,
                            source=f"--endpoints: {s.name}") for s in specs if s.prices is not None}


def read_endpoints(path: str, default_provider: str | None = None) -> tuple[EndpointSpec, ...]:
    """The endpoints ``path`` declares; :class:`InputError` naming the endpoint and field at fault."""
    if sys.version_info >= (3, 11):
        import tomllib as toml
    else:  # Python 3.10: the tomli package, when it is installed
        try:
            import tomli as toml
        except ModuleNotFoundError:
            raise InputError("--endpoints: reading TOML needs Python 3.11 or the tomli package") from None
    try:
        with open(path, "rb") as f:
            doc = toml.loads(f.read().decode("utf-8"))
    except OSError as e:
        raise InputError(f"--endpoints {path}: {e.strerror or e}") from None
    except (ValueError, UnicodeDecodeError) as e:  # TOMLDecodeError is a ValueError
        raise InputError(f"--endpoints {path}: not TOML ({e})") from None
    tables = doc.get("endpoint")
    if not isinstance(tables, list) or not tables:
        raise InputError(f"--endpoints {path}: no [[endpoint]] table")
    specs = tuple(_one(t, i + 1, default_provider) for i, t in enumerate(tables))
    names = [s.name for s in specs]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise InputError(f"--endpoints {path}: endpoint {twice[0]!r} is named twice")
    return specs


def from_base_urls(urls: list[str], api_key: str | None, default_provider: str | None) -> tuple[EndpointSpec, ...]:
    """A repeated ``--base-url``: each with ``$OPENAI_API_KEY``, named by its host (and port, path)."""
    names = [endpoint_host(u).split("://", 1)[-1] for u in urls]
    if len(set(names)) < len(names):
        names = [f"{i + 1}:{n}" for i, n in enumerate(names)]
    return tuple(EndpointSpec(n, u, api_key, resolve_provider(default_provider, u, CHAT_PROVIDERS))
                 for n, u in zip(names, urls))
