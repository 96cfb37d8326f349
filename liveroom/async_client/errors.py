"""Every way one call can end besides a usable reply, in one tree.

::

    CallError
    ├── Retryable        worth another try (408, 409, 429, 5xx, timeouts, dropped connections)
    │   └── GarbledBody  a 200 whose body is not a chat completion
    ├── Rejected         the server refused this request only (other 4xx)
    │   └── Filtered     the provider's content filter refused it (reason ``content_filter``)
    ├── Fatal            the run cannot go on (401, 403, no quota, arrears); one line, exit status 2
    │   └── Unreachable  the endpoint never answered: DNS, refused, TLS
    └── UnusableReply    the task cannot use the reply's text; the engine asks again
        └── NoContent    every token went to reasoning: an empty reply

    RunFailed            not a call's outcome: something broke (a bug, a callback); the run stopped

A :class:`Retryable` with ``connection`` set never reached the server (DNS,
refused, TLS, connect timeout): the engine counts those apart, as an endpoint
that is down, not as this request's failure. Its ``signal`` says what a 429
told the concurrency limiter: ``cap`` (too many in flight), ``rate`` (a rate
or load limit, or a 429 without a known code), None (nothing).

The engine decides what to do from the class alone; the task raises
:class:`UnusableReply` (or a subclass of it) with a short reason that is sent
back to the model.
"""

from __future__ import annotations

from typing import Literal

from ..errors import LiveroomError
from .window import Window

Signal = Literal["cap", "rate"]

#: how the error of a request refused by a content filter starts (the record's reason)
CONTENT_FILTER = "content_filter"


class CallError(Exception):
    """Base of what one call can end in besides a reply."""


class Retryable(CallError):
    """Worth another try, after ``retry_after`` seconds when the server said so."""

    def __init__(self, reason: str, retry_after: float | None = None, status: int | None = None,
                 connection: bool = False, signal: Signal | None = None, window: Window | None = None) -> None:
        super().__init__(reason)
        self.retry_after = retry_after
        self.status = status
        self.connection = connection  # no connection was made: the endpoint, not the request
        self.signal = signal          # what a 429 says to the concurrency limiter
        self.window = window          # the x-ratelimit-* headers of the answer, when it had them


class GarbledBody(Retryable):
    """A 200 answer whose body is not a chat completion; ``detail`` names what is wrong."""

    def __init__(self, reason: str, detail: str, status: int | None = 200) -> None:
        super().__init__(reason, status=status)
        self.detail = detail


class Rejected(CallError):
    """The server refused this request (4xx other than the retryable ones)."""


class Filtered(Rejected):
    """The provider's content filter refused this request; ``str(err)`` starts with ``content_filter:``."""


class Fatal(CallError, LiveroomError):
    """The run cannot go on: bad key, no permission, quota used up."""


class Unreachable(Fatal):
    """No request ever reached the endpoint: the first attempts all failed to connect."""


class RunFailed(LiveroomError):
    """An unexpected error (a bug, a failing callback, a broken disk) stopped the run; one line."""


class UnusableReply(CallError, ValueError):
    """A reply the task cannot use; ``str(err)`` is a short reason fit for a re-ask."""


class NoContent(UnusableReply):
    """An empty reply whose tokens all went to reasoning (``content: null``, ``finish_reason: "length"``)."""

    def __init__(self) -> None:
        super().__init__("the reply was empty: every token went to reasoning (finish_reason length); "
                         "answer with the JSON only")
