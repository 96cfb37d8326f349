"""The record: what the run directory keeps of one finished job, and its one serialisation.

A record is one JSON line::

    {"id": ..., "status": ..., <the job's meta fields>, "scores": ..., "reply": ...,
     "usage": {...}, "attempts": n, "reasks": n, "latency_ms": ms, "error": ..., "t": unix time,
     "model": the model the server said it served}

``id`` and ``status`` always lead, in that order, with no space: that is what
lets a resumed run find its done ids by reading only each line's head
(:data:`OK_LINE`), so the order and the pattern are decided here, side by side,
and nowhere else (:func:`field_bytes` finds any other field). Only ``"status": "ok"`` counts as done, and only on a line that is whole
(:func:`line_is_whole`). ``model`` came last, later: a line without it reads
as ``model`` None. ``endpoint`` (the name of the endpoint that answered, never its address or
key) follows it only in a run over named endpoints; a line without it reads as None.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

OK, INVALID, ERROR = "ok", "invalid", "error"

#: the keys every line starts with, in this order
LEAD: tuple[str, ...] = ("id", "status")
#: the keys after the meta fields, in this order
TAIL: tuple[str, ...] = ("scores", "reply", "usage", "attempts", "reasks", "latency_ms", "error", "t", "model")
#: written after the tail only when set: the name of the endpoint that answered, in a run over several
NAMED = "endpoint"
FIELDS = frozenset(LEAD + TAIL + (NAMED,))

#: how every line starts (orjson writes no space; a quote inside a string is always escaped)
HEAD = b'{"id":"'

# The head of an ok line as :func:`dumps` writes it (orjson: no spaces, ``id`` then ``status``).
# The literal prefix lets the regex engine skip ahead fast (``^`` under re.M tries every byte),
# and the id is matched as runs of plain bytes between escapes, not byte by byte.
_OK_HEAD = rb'\{"id":"([^"\\]*(?:\\.[^"\\]*)*)","status":"ok"'
#: an ok line's head found after the newline that ends the line before it; group 1 is the raw id
OK_LINE = re.compile(rb"\n" + _OK_HEAD)
#: the same at the very start of a file (no newline before the first line)
OK_FIRST = re.compile(_OK_HEAD)


KEEP_CHARS = 65536  # at most this much of a reply is kept in a record


def cut(text: str | None, limit: int = KEEP_CHARS) -> str | None:
    """``text`` as a record keeps it: at most ``limit`` characters, the cut said."""
    if text is None or len(text) <= limit:
        return text
    return text[:limit] + f" [... {len(text) - limit} more characters not kept]"


class RecordError(ValueError):
    """A line that is not a record; ``str(err)`` says why."""


def _now() -> float:
    return round(time.time(), 3)


@dataclass(slots=True)
class Record:
    """One finished job. The defaults fit a record made from a single answer (batch import)."""

    id: str
    status: str                             # OK, INVALID or ERROR
    meta: dict[str, Any] = field(default_factory=dict)  # the job's own fields, kept between status and scores
    scores: Any = None
    reply: str | None = None                # the last reply's text
    usage: dict[str, int] = field(default_factory=dict)
    attempts: int = 1                       # HTTP attempts
    reasks: int = 0
    latency_ms: float | None = None
    error: str | None = None
    t: float = field(default_factory=_now)  # when it finished, unix seconds
    model: str | None = None                # the model the server said it served
    endpoint: str | None = None             # the name of the endpoint that answered (a pool's)

    def __post_init__(self) -> None:
        if not FIELDS.isdisjoint(self.meta):
            raise ValueError(f"meta fields {sorted(FIELDS & set(self.meta))} would shadow record fields")

    @property
    def ok(self) -> bool:
        return self.status == OK

    def to_dict(self) -> dict[str, Any]:
        """The flat mapping a line holds, keys in line order."""
        return {"id": self.id, "status": self.status, **self.meta, "scores": self.scores, "reply": self.reply,
                "usage": self.usage, "attempts": self.attempts, "reasks": self.reasks,
                "latency_ms": self.latency_ms, "error": self.error, "t": self.t, "model": self.model,
                **({NAMED: self.endpoint} if self.endpoint is not None else {})}

    @classmethod
    def from_dict(cls, obj: Mapping[str, Any]) -> Record:
        """A record from a flat mapping; keys that are not record fields are its meta."""
        rid, status = obj.get("id"), obj.get("status")
        if not isinstance(rid, str) or not isinstance(status, str):
            raise RecordError("a record needs a string 'id' and 'status'")
        model, endpoint = obj.get("model"), obj.get(NAMED)
        return cls(rid, status, {k: v for k, v in obj.items() if k not in FIELDS},
                   obj.get("scores"), obj.get("reply"), obj.get("usage") or {}, obj.get("attempts", 1),
                   obj.get("reasks", 0), obj.get("latency_ms"), obj.get("error"), obj.get("t", 0.0),
                   model if isinstance(model, str) else None, endpoint if isinstance(endpoint, str) else None)


def dumps(record: Record | Mapping[str, Any]) -> bytes:
    """The line of ``record``, newline included; a mapping is normalised through :class:`Record` first."""
    if not isinstance(record, Record):
        record = Record.from_dict(record)
    return orjson.dumps(record.to_dict()) + b"\n"


def loads(line: bytes | str) -> Record:
    """The record of one line; :class:`RecordError` when it is damaged or is no record."""
    try:
        obj = orjson.loads(line)
    except orjson.JSONDecodeError as e:
        raise RecordError(f"not a JSON record ({e})") from None
    if not isinstance(obj, dict):
        raise RecordError("not a JSON object")
    return Record.from_dict(obj)


def is_whole(line: bytes) -> bool:
    """Whether ``line`` is one whole record and nothing else: what a damaged line
    (a record cut short, another written after it) is not."""
    try:
        loads(line)
    except (RecordError, ValueError, TypeError):
        return False
    return line.endswith(b"\n")


def field_bytes(key: str, prefix: str = "") -> bytes:
    """The bytes that open field ``key`` holding a string that starts with ``prefix``, as :func:`dumps`
    writes them. A quote inside a string is escaped, so only a field (of the record, or of an object
    in it) holds them: a search for them finds the lines to read whole."""
    return orjson.dumps({key: prefix})[1:-2]


def decode_id(raw: bytes) -> str:
    """An id as :data:`OK_LINE` captured it (JSON-escaped bytes) -> the id."""
    return str(orjson.loads(b'"%s"' % raw)) if b"\\" in raw else raw.decode()
