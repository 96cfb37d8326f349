"""The cost flags of bin/score and bin/batch prepare (``--dry-run``, the prices, ``--budget``), declared once,
and the :class:`~.prices.PriceChoice` they make."""

from __future__ import annotations

import argparse

from ..cliargs import non_negative_float, number
from .prices import DEFAULT_BATCH_DISCOUNT, DEFAULT_CURRENCY, PriceChoice


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
                       help="send a request only while the run's cost (usage.json, every earlier run counted) plus "
                            "the worst case of the requests in flight stays within AMOUNT, else wait for those "
                            "to finish; stop when one does not fit with none in flight; needs the prices; the "
                            "stop exits 130, as an interrupt does, and a rerun with a higher --budget goes on")
    if batch:
        g.add_argument("--batch-discount", type=number(float, 0, 1, name="share"), default=None,
                       help="the batch price as a share of the prices (default: the price file's, else "
                            f"{DEFAULT_BATCH_DISCOUNT})")


def price_choice(args: argparse.Namespace) -> PriceChoice:
    """The prices the parsed flags name (``--batch-discount`` is bin/batch prepare's only)."""
    return PriceChoice(args.price_input, args.price_output, args.price_file, args.currency,
                       getattr(args, "batch_discount", None))
