"""The three questions asked of every persona, as pure functions.

For each stage: the chat messages for one (pitch, persona), the JSON Schema of
the reply (for servers that support ``response_format: json_schema``) and the
parser that turns reply text into scores or a :class:`ReplyError`.

=========  ==========================  ==================================
stage      reply                       features
=========  ==========================  ==================================
``entry``  ``{"want_to_enter": 1..5}``  ``entry``
``buy``    ``{"items": [{"idx", "want_to_buy"}...]}``  ``state`` (mean), ``action`` (first item)
``read``   ``{"impact": 1..5}``         ``read``
=========  ==========================  ==================================

Everything stage-specific lives in its :class:`Stage`: the wording (of its
prompt set, :mod:`liveroom.prompts.wording`), the user message and reply
schema built from it, the parser (:mod:`liveroom.prompts.answers`), the
features it fills and the version. :data:`PROMPT_SETS` holds the three stages
of every prompt set, :data:`STAGES` those of the default set. Each stage's
``version`` is derived from its wording and schema, so it changes whenever a
prompt changes, and differs between sets; a checkpoint made with other prompts
is refused.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Callable, Container, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any

from ..data.personas import Persona
from ..data.pitch import START_FORMAT, TEXT_LIMITS, Item, Pitch
from .answers import buy_schema, entry_schema, parse_buy, parse_entry, parse_read, read_schema
from .wording import DEFAULT_PROMPTS, WORDINGS, Wording

if TYPE_CHECKING:  # pandas is imported where used: bin/sim-server words questions without it
    import pandas as pd

__all__ = [
    "DEFAULT_PROMPTS", "PROMPT_SETS", "REASK", "STAGES", "TEXT_LIMIT", "Pitch", "Request", "Stage",
    "build_request", "format_price", "iter_pitches", "iter_requests", "parse_buy", "parse_entry",
    "parse_read", "reask_messages", "request_id", "stages_of", "system_message",
]

TEXT_LIMIT = TEXT_LIMITS["text"]  # transcript characters shown to the model (the pitch rules cut it there)

REASK = "你的回答无法使用：{reason}。请只输出符合要求的JSON，不要输出其他内容。"


@dataclass(frozen=True)
class Request:
    """One question to the model; ``id`` is stable across input reordering."""

    id: str
    stage: str
    index: int
    persona: str
    messages: list[dict[str, str]]
    schema: dict[str, Any]
    n_items: int = 0


def request_id(stage: str, index: int, persona: str) -> str:
    """The one spelling of a question's id: ``stage:index:persona``."""
    return f"{stage}:{index}:{persona}"


def format_price(price: float) -> str:
    """A price as a shopper reads it: ``12.5``, ``199``."""
    return f"{price:.2f}".rstrip("0").rstrip(".")


def system_message(persona: Persona, when: dt.datetime, wording: Wording = WORDINGS[DEFAULT_PROMPTS]) -> str:
    """Who the model plays, and when: shared by every stage of a prompt set."""
    return wording.system.format(
        name=persona.name, age=persona.age, city=persona.city, consumption=persona.consumption,
        traits=f"，{persona.traits}" if persona.traits else "", moment=wording.moment(when),
    )


def entry_user(w: Wording, p: Pitch) -> str:
    """The room title and the question whether to enter."""
    return w.entry.format(title=p.title)


def buy_user(w: Wording, p: Pitch) -> str:
    """The showcase, one numbered line per item (a set may leave the title out)."""
    lines = "\n".join(
        w.item_line.format(i=i, name=it.name, price=format_price(it.price)) for i, it in enumerate(p.items, 1)
    )
    return w.buy.format(title=p.title, items=lines, n=len(p.items))


def read_user(w: Wording, p: Pitch) -> str:
    """The item explained and the transcript's first :data:`TEXT_LIMIT` characters."""
    return w.read.format(prod=p.prod, text=p.text[:TEXT_LIMIT] or w.no_text)


# --------------------------------------------------------------------------- registry

#: what a stage's version is computed over besides its templates
_PROBE = Pitch(0, dt.datetime(2024, 1, 1), "", "", "", (Item(1, "", 1.0), Item(2, "", 2.0)))
_PROBE_MOMENTS = tuple(dt.datetime(*t) for t in (
    (2024, 2, 4, 3, 0),     # early morning of a swapped working Sunday
    (2024, 3, 9, 12, 0),    # weekend noon
    (2024, 3, 12, 10, 0),   # workday morning
    (2024, 9, 30, 21, 30),  # evening before a named holiday
))


@dataclass(frozen=True)
class Stage:
    """One question: its wording, messages, reply schema and parser, and the features it fills."""

    name: str
    user: Callable[[Pitch], str]               # the user message for a pitch
    schema: Callable[[Pitch], dict[str, Any]]  # the reply's JSON Schema for a pitch
    parse: Callable[[str, int], dict[str, Any]]  # reply text, item count -> scores; raises ReplyError
    features: tuple[str, ...]                  # the feature matrices its scores fill (collect)
    template: Callable[[], str]                # its user-message wording, read when the version is made
    wording: Wording                           # its prompt set: system message, moment, personas
    needs_showcase: bool = False
    version: str = field(init=False)

    def __post_init__(self) -> None:
        # the system message, re-ask, schema and moment wording are part of what the model is shown too
        w = self.wording
        schema = json.dumps(self.schema(_PROBE), sort_keys=True, ensure_ascii=False)
        moments = "".join(w.moment(when) for when in _PROBE_MOMENTS)
        digest = hashlib.sha256((w.system + self.template() + REASK + schema + moments).encode()).hexdigest()[:8]
        object.__setattr__(self, "version", f"{self.name}-{digest}")


def stages_of(w: Wording) -> dict[str, Stage]:
    """The three stages as prompt set ``w`` asks them; the parsers and schemas are the same in every set."""
    return {s.name: s for s in (
        Stage("entry", partial(entry_user, w), entry_schema, parse_entry, ("entry",), lambda: w.entry, w),
        Stage("buy", partial(buy_user, w), buy_schema, parse_buy, ("state", "action"),
              lambda: w.buy + w.item_line, w, needs_showcase=True),
        Stage("read", partial(read_user, w), read_schema, parse_read, ("read",), lambda: w.read + w.no_text, w),
    )}


#: the stages of every prompt set, by set name
PROMPT_SETS: dict[str, dict[str, Stage]] = {name: stages_of(w) for name, w in WORDINGS.items()}
#: the stages of the default set (their parsers and features are every set's)
STAGES: dict[str, Stage] = PROMPT_SETS[DEFAULT_PROMPTS]



def build_request(stage: Stage, pitch: Pitch, persona: Persona) -> Request:
    """The one request for (stage, pitch, persona); :func:`iter_requests` builds them all."""
    return next(iter_requests([pitch], [stage], [persona]))


def reask_messages(messages: Sequence[Mapping[str, str]], reply: str, reason: str) -> list[dict[str, str]]:
    """The conversation extended with the bad reply and a request to answer again."""
    return [*map(dict, messages), {"role": "assistant", "content": reply},
            {"role": "user", "content": REASK.format(reason=reason)}]


def iter_pitches(df: pd.DataFrame, showcase: Mapping[str, list[Item]] | None = None) -> Iterator[Pitch]:
    """Pitches of a loaded pitches frame, in file order, lazily."""
    import pandas as pd

    starts = pd.to_datetime(df["start"], format=START_FORMAT)
    for index, start, s, title, prod, text in zip(
        df["index"], starts, df["start"], df["title"], df["prod"], df["text"]
    ):
        items = tuple(showcase.get(s, ())) if showcase is not None else ()
        yield Pitch(int(index), start.to_pydatetime(), title, prod, text, items)


def iter_requests(
    pitches: Iterable[Pitch],
    stages: Sequence[Stage],
    personas: Sequence[Persona],
    done: Mapping[str, Container[str]] | None = None,
) -> Iterator[Request]:
    """Every request not yet in ``done[stage]``, pitch by pitch, built only when pulled.

    The parts that personas share (user message, schema) and that stages share
    (system message) are built once per pitch.
    """
    done = done or {}
    for pitch in pitches:
        systems: dict[tuple[int, str], str] = {}
        for stage in stages:
            skip = done.get(stage.name, ())
            head = request_id(stage.name, pitch.index, "")  # then + persona key: no call per persona
            todo = [(rid, p) for p in personas if (rid := head + p.key) not in skip]
            if not todo:
                continue
            user, schema = stage.user(pitch), stage.schema(pitch)
            n_items = len(pitch.items) if stage.needs_showcase else 0
            for rid, persona in todo:
                key = (id(stage.wording), persona.key)
                system = systems.get(key)
                if system is None:
                    system = systems[key] = system_message(persona, pitch.start, stage.wording)
                messages = [{"role": "system", "content": system}, {"role": "user", "content": user}]
                yield Request(rid, stage.name, pitch.index, persona.key, messages, schema, n_items)
