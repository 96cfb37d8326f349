"""Fault injection: which request fails how, and what a failure looks like on the wire.

A request's fault and latency jitter are drawn from a hash of the seed, the
conversation and how many times that conversation was seen, so a run is
reproducible and a retry gets a fresh draw. The HTTP faults answer as the
``--profile`` provider does (:mod:`liveroom.sim.profiles`); the injected 429
carries ``Retry-After`` and ``retry-after-ms`` whatever the profile (Zhipu and
DashScope document no retry header, PROVIDERS.md section 3: they are sent so
that a client's use of them can be tested; the ``--max-inflight`` cap answer
carries none). ``reset`` drops the connection with a TCP RST.
"""

from __future__ import annotations

import hashlib
import math
import socket
import struct
from collections import deque
from typing import Any

from aiohttp import web

from .profiles import Profile

RPM_WINDOW = 60.0  # seconds of the --rpm-limit / --tpm-limit sliding window
HTTP_FAULTS = frozenset(("429", "quota", "500", "503", "content_filter"))

#: what a request holds as its fault: (status, error body, headers) of the HTTP ones
Refusal = tuple[int, dict[str, Any], dict[str, str] | None]


def draw(probabilities: tuple[tuple[str, float], ...], jitter: bool, seed_bytes: bytes, digest: bytes,
         attempt: int) -> tuple[str | None, float]:
    """(the fault or None, a uniform [0, 1) number for the jitter) of one request.

    The kinds are exclusive: the first whose cumulative probability exceeds
    the draw wins.
    """
    if not probabilities and not jitter:
        return None, 0.0
    h = hashlib.blake2b(digest + seed_bytes + attempt.to_bytes(4, "little"), digest_size=16).digest()
    u_fault = int.from_bytes(h[:8], "little") / 2.0**64
    u_jitter = int.from_bytes(h[8:], "little") / 2.0**64
    acc = 0.0
    for kind, p in probabilities:
        acc += p
        if u_fault < acc:
            return kind, u_jitter
    return None, u_jitter


def seconds(s: float) -> str:
    """A number of seconds as ``Retry-After`` writes it (``2``, ``0.25``)."""
    return str(int(s)) if float(s).is_integer() else f"{s:g}"


def retry_headers(retry_after: float, retry_after_ms: float | None = None) -> dict[str, str]:
    """``Retry-After`` (seconds) and ``retry-after-ms`` (PROVIDERS.md section 3: the OpenAI SDK
    reads the second first); ``retry_after_ms`` None: the same wait in milliseconds."""
    ms = retry_after * 1000 if retry_after_ms is None else retry_after_ms
    return {"Retry-After": seconds(retry_after), "retry-after-ms": str(int(round(ms)))}


def http_fault(fault: str, profile: Profile, serial: int, retry: dict[str, str]) -> Refusal | None:
    """The reply of an HTTP fault (``429``, ``quota``, ``500``, ``503``, ``content_filter``) as
    ``profile`` answers it; None for the others (and for a content filter answered with a 200).
    ``retry``: the headers of the injected 429."""
    if fault not in HTTP_FAULTS:
        return None
    answer = profile.render(fault, serial, retry=retry["Retry-After"])
    if answer is None:
        return None
    return answer[0], answer[1], (retry if fault == "429" else None)


def duration(s: float) -> str:
    """Seconds as OpenAI's ``x-ratelimit-reset-*`` headers write them (``20ms``, ``1s``, ``1.5s``,
    ``6m0s``, ``1h0m0s``; PROVIDERS.md section 3), rounded up to the millisecond."""
    ms = math.ceil(s * 1000 - 1e-6) if s > 0 else 0
    if ms == 0:
        return "0s"
    if ms < 1000:
        return f"{ms}ms"
    h, rest = divmod(ms, 3_600_000)
    m, rest = divmod(rest, 60_000)
    secs = f"{rest / 1000:.3f}".rstrip("0").rstrip(".")
    return (f"{h}h" if h else "") + (f"{m}m" if h or m else "") + f"{secs}s"


def reset(request: web.Request) -> None:
    """Drop the request's connection with a TCP RST, as a crashed server would."""
    transport = request.transport
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        try:  # linger 0: the close sends RST
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
    transport.abort()


class Window:
    """``--rpm-limit`` / ``--tpm-limit``: at most ``limit`` (requests, tokens) in any sliding 60-s window."""

    def __init__(self, limit: int):
        self.limit = limit
        self.items: deque[tuple[float, int]] = deque()  # (monotonic time, amount)
        self.used = 0

    def _expire(self, now: float) -> None:
        items = self.items
        while items and items[0][0] <= now - RPM_WINDOW:
            self.used -= items.popleft()[1]

    def take(self, now: float, amount: int = 1) -> float | None:
        """None and ``amount`` counted if it fits in the window at ``now``; else the seconds until it
        would fit (60 when it never does: more than the limit on its own)."""
        self._expire(now)
        if self.used + amount <= self.limit:
            self.items.append((now, amount))
            self.used += amount
            return None
        need = self.used + amount - self.limit
        if amount <= self.limit:
            for t, n in self.items:
                need -= n
                if need <= 0:
                    return max(0.001, t + RPM_WINDOW - now)
        return RPM_WINDOW

    def add(self, now: float, amount: int) -> None:
        """Count ``amount`` more at ``now`` without a check (the tokens of an answer)."""
        self.items.append((now, amount))
        self.used += amount

    def headers(self, now: float, unit: str) -> dict[str, str]:
        """OpenAI's ``x-ratelimit-*-{unit}`` headers (PROVIDERS.md section 3); the reset is the time
        until the oldest amount in the window leaves it (when the remaining count next rises)."""
        self._expire(now)
        reset = self.items[0][0] + RPM_WINDOW - now if self.items else 0.0
        return {f"x-ratelimit-limit-{unit}": str(self.limit),
                f"x-ratelimit-remaining-{unit}": str(max(0, self.limit - self.used)),
                f"x-ratelimit-reset-{unit}": duration(reset)}


def window_retry(wait: float) -> dict[str, str]:
    """The retry headers of a window's 429: whole seconds rounded up, and milliseconds."""
    return {"Retry-After": str(max(1, math.ceil(wait))), "retry-after-ms": str(max(1, math.ceil(wait * 1000)))}
