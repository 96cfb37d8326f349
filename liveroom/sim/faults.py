"""Fault injection: which request fails how, and what a failure looks like on the wire.

A request's fault and latency jitter are drawn from a hash of the seed, the
conversation and how many times that conversation was seen, so a run is
reproducible and a retry gets a fresh draw. The HTTP faults answer as
OpenAI does (429 with ``Retry-After`` and ``retry-after-ms``, quota, 500,
503); ``reset`` drops the connection with a TCP RST.
"""

from __future__ import annotations

import hashlib
import math
import socket
import struct
from collections import deque
from typing import Any

from aiohttp import web

from .completion import error_object

RPM_WINDOW = 60.0  # seconds of the --rpm-limit sliding window

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


def http_fault(fault: str, retry_after: float) -> Refusal | None:
    """The reply of an HTTP fault (``429``, ``quota``, ``500``, ``503``); None for the others."""
    if fault == "429":
        headers = {"Retry-After": seconds(retry_after), "retry-after-ms": str(int(round(retry_after * 1000)))}
        msg = f"Rate limit reached for requests (simulated). Please try again in {seconds(retry_after)}s."
        return 429, error_object(msg, "requests", "rate_limit_exceeded"), headers
    if fault == "quota":
        msg = "You exceeded your current quota, please check your plan and billing details. (simulated)"
        return 429, error_object(msg, "insufficient_quota", "insufficient_quota"), None
    if fault == "500":
        msg = "The server had an error while processing your request. (simulated)"
        return 500, error_object(msg, "server_error"), None
    if fault == "503":
        msg = "The server is overloaded or not ready yet. (simulated)"
        return 503, error_object(msg, "server_error", "service_unavailable"), None
    return None


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


class RpmWindow:
    """``--rpm-limit``: at most ``limit`` requests in any sliding 60-second window."""

    def __init__(self, limit: int):
        self.limit = limit
        self.times: deque[float] = deque()

    def refuse(self, now: float) -> Refusal | None:
        """The 429 for a request at ``now`` (monotonic seconds) beyond the limit, else None (and it counts)."""
        win = self.times
        while win and win[0] <= now - RPM_WINDOW:
            win.popleft()
        if len(win) >= self.limit:
            wait = win[0] + RPM_WINDOW - now
            headers = {"Retry-After": str(max(1, math.ceil(wait))),
                       "retry-after-ms": str(max(1, math.ceil(wait * 1000)))}
            msg = f"Rate limit reached: {self.limit} requests per minute. Please try again in {wait:.1f}s."
            return 429, error_object(msg, "requests", "rate_limit_exceeded"), headers
        win.append(now)
        return None
