"""Who may spend the key: the rules every request to bin/serve passes first. Pure, no I/O.

==============================  =====================================================  ======
rule                            refused with                                           status
==============================  =====================================================  ======
``Host`` is the address served  a name the server does not answer for (DNS rebinding)   421
or one named by ``--allowed-host``
``Origin``, where sent, is the  a page of another site calling the API                  403
page's own (same host and port)
a POST body is JSON             ``text/plain``, a form: what a browser sends another    415
                                site without asking first (CORS "simple" requests)
``Authorization: Bearer TOKEN`` no or another token, under ``--token-env``              401
new pitches per client          more than ``--pitches-per-minute`` in 60 s              429
==============================  =====================================================  ======

``/healthz`` answers every ``Host`` (probes of a load balancer send its own);
the page's files (``/``, ``/page/*``) need no token (they hold none) and the
page asks for it when the API says 401. 421 "Misdirected Request" (RFC 9110
section 15.5.20) says what is wrong: this server does not serve that name.
"""

from __future__ import annotations

import hmac
import ipaddress
import math
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
WINDOW = 60.0  # seconds of the per-client pitch limit
#: the paths that answer any Host, and those that need no token
ANY_HOST = frozenset({"/healthz"})
OPEN_PATHS = frozenset({"/", "/healthz"})


class Refused(Exception):
    """A request the rules refuse: ``status``, a message, and headers for the reply."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers or {}


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` serves this machine only."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def host_name(header: str) -> str:
    """The name in a ``Host`` header or an origin's netloc, without its port: ``[::1]:80`` -> ``::1``."""
    h = header.strip().lower()
    if h.startswith("["):
        return h[1:h.find("]")] if "]" in h else h
    return (h.rsplit(":", 1)[0] if h.count(":") == 1 else h).rstrip(".")


def served_names(bind: str, allowed: Iterable[str]) -> frozenset[str]:
    """The ``Host`` names answered: this machine's, the bound address unless a wildcard, and ``allowed``."""
    names = set(LOOPBACK_NAMES) | {host_name(a) for a in allowed}
    if bind not in ("", "0.0.0.0", "::"):
        names.add(host_name(bind if ":" not in bind else f"[{bind}]"))
    return frozenset(names)


@dataclass(frozen=True)
class Rules:
    """What bin/serve lets through (see the module's table)."""

    hosts: frozenset[str]
    token: str | None = field(default=None, repr=False)

    def check(self, method: str, path: str, headers: dict[str, str]) -> None:
        """Raise :class:`Refused` for the first rule ``headers`` break (keys lower-case)."""
        host = headers.get("host", "")
        if path not in ANY_HOST and host_name(host) not in self.hosts:
            raise Refused(421, f"this server does not serve host {host[:60]!r}; start it with "
                               "--allowed-host NAME to serve that name")
        api = path.startswith("/v1/") or path == "/metrics"
        origin = headers.get("origin")
        if api and origin is not None and urlsplit(origin).netloc.lower() != host.lower():
            raise Refused(403, f"requests from origin {origin[:60]!r} are refused: only the page served "
                               "here may call the API from a browser")
        if method == "POST":
            mime = headers.get("content-type", "").split(";", 1)[0].strip().lower()
            if mime != "application/json":
                raise Refused(415, f"a POST body must be Content-Type: application/json, got {mime[:60]!r}",
                              {"Accept-Post": "application/json"})
        if self.token is not None and path not in OPEN_PATHS and not path.startswith("/page/"):
            given = headers.get("authorization", "")
            scheme, _, value = given.partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(value.strip().encode(), self.token.encode()):
                raise Refused(401, "this server needs 'Authorization: Bearer TOKEN' (the token of --token-env)",
                              {"WWW-Authenticate": 'Bearer realm="liveroom"'})


class PitchBudget:
    """At most ``per_minute`` new pitches per client in any 60 s; cached pitches cost nothing."""

    def __init__(self, per_minute: int) -> None:
        self.per_minute = per_minute
        self._spent: dict[str, deque[float]] = {}

    def take(self, client: str, n: int, now: float) -> None:
        """Count ``n`` new pitches of ``client`` at ``now``, or raise a 429 :class:`Refused` with Retry-After."""
        if n == 0 or self.per_minute == 0:
            return
        spent = self._spent.setdefault(client, deque())
        while spent and spent[0] <= now - WINDOW:
            spent.popleft()
        if len(spent) + n > self.per_minute:
            if n > self.per_minute:
                wait = WINDOW
            else:  # the time until enough of the window's pitches have left it
                wait = spent[len(spent) + n - self.per_minute - 1] + WINDOW - now
            raise Refused(429, f"{n} new pitch(es) would pass this client's limit of {self.per_minute} new "
                               f"pitches a minute (cached pitches are free)",
                          {"Retry-After": str(max(1, math.ceil(wait)))})
        spent.extend([now] * n)
        if len(self._spent) > 10_000:  # forget clients whose window has emptied
            for key in [k for k, q in self._spent.items() if not q or q[-1] <= now - WINDOW]:
                del self._spent[key]
