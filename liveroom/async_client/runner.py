"""Running a command's event loop: bin/score's, bin/serve's and the simulators'."""

from __future__ import annotations

import asyncio
import gc
from typing import Any, Coroutine

# With hundreds of requests in flight, a few thousand young objects (coroutines,
# futures, headers) are alive at any moment, and the default threshold of 700
# made the collector walk all of them every few requests: 3-4 ms per collection,
# about 30 us of CPU per request at concurrency 256. Nothing in the loop makes
# much cyclic garbage, so collecting 50x less often costs no memory to speak of.
GC_THRESHOLD0 = 35_000


def run_loop(coro: Coroutine[Any, Any, Any]) -> Any:
    """``asyncio.run`` on uvloop where it is installed, with the garbage
    collector tuned for a long loop: what is loaded before it (inputs) is
    frozen out of collections, and young collections are rarer."""
    thresholds = gc.get_threshold()
    gc.freeze()
    gc.set_threshold(max(thresholds[0], GC_THRESHOLD0), *thresholds[1:])
    try:
        try:
            import uvloop
        except ImportError:
            return asyncio.run(coro)
        return uvloop.run(coro)
    finally:
        gc.set_threshold(*thresholds)
        gc.unfreeze()
