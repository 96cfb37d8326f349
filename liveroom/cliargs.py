"""Command-line arguments every command declares the same way.

Every command's parser comes from :func:`command_parser`, so each answers
``--help`` and ``--version`` (the package's version, kept in
``liveroom.__version__`` and nowhere else).

Numbers are checked by argparse itself, through ``type=`` functions, so a bad
value gets argparse's usual one line naming the flag and exit status 2::

    p.add_argument("--concurrency", type=positive_int, default=64)
    # score: error: argument --concurrency: must be a whole number of at least 1, got '0'

and the endpoint and key are found in one order everywhere: ``--base-url``,
then ``$OPENAI_BASE_URL``, then the default; the key from ``$OPENAI_API_KEY``
only (never a flag, so it stays out of shell history and ``ps``).
"""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from . import __version__
from .async_client.providers import DEFAULT_BASE_URL

N = TypeVar("N", int, float)

BASE_URL_ENV = "OPENAI_BASE_URL"
API_KEY_ENV = "OPENAI_API_KEY"


def command_parser(prog: str, **kwargs: Any) -> argparse.ArgumentParser:
    """The parser of command ``prog``: argparse's, with ``--version`` beside ``--help``."""
    p = argparse.ArgumentParser(prog=prog, **kwargs)
    version = f"liveroom {__version__}" if prog == "liveroom" else f"{prog} (liveroom {__version__})"
    p.add_argument("--version", action="version", version=version, help="print the version and exit")
    return p


# ----------------------------------------------------------------- numbers

def _bounds(lo: float | None, hi: float | None, lo_open: bool, hi_open: bool) -> str:
    if lo is not None and hi is not None:
        return f" in {'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"
    if lo is not None:
        return f" above {lo:g}" if lo_open else f" of at least {lo:g}"
    if hi is not None:
        return f" below {hi:g}" if hi_open else f" of at most {hi:g}"
    return ""


def number(kind: type[N], lo: float | None = None, hi: float | None = None, *, lo_open: bool = False,
           hi_open: bool = False, name: str | None = None) -> Callable[[str], N]:
    """An argparse ``type=`` that reads a ``kind`` (int or float) between ``lo`` and ``hi``.

    Bounds are inclusive unless ``*_open``; NaN is never a number here.
    """
    want = ("a whole number" if kind is int else "a number") + _bounds(lo, hi, lo_open, hi_open)

    def convert(text: str) -> N:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {want}, got {text!r}") from None
        if (math.isnan(value) or (lo is not None and (value <= lo if lo_open else value < lo))
                or (hi is not None and (value >= hi if hi_open else value > hi))):
            raise argparse.ArgumentTypeError(f"must be {want}, got {text!r}")
        return value

    convert.__name__ = name or f"{kind.__name__}{_bounds(lo, hi, lo_open, hi_open).replace(' ', '_')}"
    return convert


positive_int = number(int, 1, name="positive_int")
non_negative_int = number(int, 0, name="non_negative_int")
positive_float = number(float, 0, lo_open=True, name="positive_float")
non_negative_float = number(float, 0, name="non_negative_float")
probability = number(float, 0, 1, name="probability")
port_number = number(int, 0, 65535, name="port")  # 0: the system picks a free one


# ----------------------------------------------------------------- endpoint and key

def add_base_url_argument(p: argparse.ArgumentParser, default_text: str | None = None, **more: Any) -> None:
    """``--base-url``; ``default_text`` overrides what the help says the default is; ``more``: argparse's."""
    p.add_argument("--base-url", default=None,
                   help=f"API base URL (default: {default_text or f'${BASE_URL_ENV} or {DEFAULT_BASE_URL}'})", **more)


def resolve_base_url(arg: str | None, fallback: str = DEFAULT_BASE_URL) -> str:
    """``--base-url`` when given, else ``$OPENAI_BASE_URL``, else ``fallback``."""
    return arg or os.environ.get(BASE_URL_ENV) or fallback


def api_key() -> str | None:
    """The API key from ``$OPENAI_API_KEY``; None when unset or empty (a local server needs none)."""
    return os.environ.get(API_KEY_ENV) or None


@dataclass(frozen=True)
class Endpoint:
    """Where requests go and the key they carry (left out of ``repr``)."""

    base_url: str
    api_key: str | None = field(default=None, repr=False)


def resolve_endpoint(arg: str | None, fallback: str = DEFAULT_BASE_URL) -> Endpoint:
    """The endpoint a command talks to: :func:`resolve_base_url` and :func:`api_key` together."""
    return Endpoint(resolve_base_url(arg, fallback), api_key())
