"""Reading a scoring prompt back: which stage, which persona, what moment.

The simulator sees only the chat messages, exactly as :mod:`liveroom.prompts.stages`
builds them, in any prompt set of :data:`~liveroom.prompts.wording.WORDINGS`.
:func:`read_prompt` recovers what the heuristic needs:

* the **stage** from the first user message: the head of one set's entry,
  buy or read template (longest first), else the buy item lines
  ``#i 【name】 单价【p】元`` or a transcript inside 「」, named as the stage
  registry :data:`~liveroom.prompts.stages.PROMPT_SETS` names the stage
  asking that template;
* the **persona** from the system message's ``身份：<name>，年龄`` (a name
  outside :data:`DEFAULT_PERSONAS` gives a key the heuristic does not know,
  i.e. its neutral profile);
* the **hour** and whether **today** is a workday from the moment sentence
  (``今天是工作日…`` or ``调休上班日…``; the sentence about tomorrow is not
  read, and before 06:00 the wording ``天亮后的今天是…`` is understood); every
  set words the moment this way (:mod:`liveroom.data.moment`).

A re-ask conversation is read from its *first* user message, so it is
answered like the original question. The patterns are derived from the
templates in :mod:`liveroom.prompts.wording`, so a reworded prompt is followed as long
as it keeps its placeholders. Anything unrecognisable raises
:class:`PromptError` (the server answers 400).
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from functools import lru_cache
from string import Formatter
from typing import Any, Sequence

from ..data.pitch import Item, Pitch
from ..prompts.stages import PROMPT_SETS
from ..prompts.wording import DEFAULT_PROMPTS, WORDINGS

NAME_TO_KEY: dict[str, str] = {p.name: p.key for w in WORDINGS.values() for p in w.personas}
UNKNOWN_PREFIX = "unknown:"  # key prefix of personas the heuristic does not know


class PromptError(ValueError):
    """A request the simulator cannot read; ``str(err)`` says why."""


@dataclass(frozen=True)
class Prompt:
    stage: str                       # ENTRY_STAGE, BUY_STAGE or READ_STAGE
    persona: str                     # persona key (unknown names: "unknown:<name>")
    hour: int | None = None          # hour of the moment, None when not stated
    workday: bool = False            # today is a workday (incl. a swapped working day)
    prices: tuple[float, ...] = ()   # buy: item prices in line order
    idx: tuple[int, ...] = ()        # buy: item numbers as shown (#i)
    text: str = ""                   # read: the transcript


def _parts(template: str) -> list[str]:
    """A template's literal texts around its placeholders, braces un-doubled."""
    parts = [""]
    for literal, name, _spec, _conv in Formatter().parse(template):
        parts[-1] += literal
        if name is not None:
            parts.append("")
    return parts


_PROBE = Pitch(0, dt.datetime(2024, 1, 1), "t", "p", "x", (Item(1, "n", 1.0),))


@dataclass(frozen=True)
class _Asked:
    """How one stage of one prompt set reads: the head of its user message, and
    for read the text around the transcript."""

    stage: str  # the registry's stage name
    head: str
    open: str = ""  # read: between {prod} and {text}, ends with 「
    tail: str = ""  # read: after {text}, starts with 」


def _asked(name: str, kind: str, template: str) -> _Asked:
    """The registry's name of the one stage of set ``name`` whose message starts with the template's head."""
    parts = _parts(template)
    names = [s.name for s in PROMPT_SETS[name].values() if s.user(_PROBE).startswith(parts[0])]
    if len(names) != 1:
        raise LookupError(f"{len(names)} stages of prompt set {name} ask a prompt starting {parts[0]!r}, not one")
    return _Asked(names[0], parts[0], *(parts[1:3] if kind == "read" else ()))


#: every set's three stages, longest head first so that no head hides another
ASKED: tuple[_Asked, ...] = tuple(sorted(
    (_asked(w.name, kind, template) for w in WORDINGS.values()
     for kind, template in (("entry", w.entry), ("buy", w.buy), ("read", w.read))),
    key=lambda a: -len(a.head),
))
ENTRY_STAGE, BUY_STAGE, READ_STAGE = (_asked(DEFAULT_PROMPTS, k, getattr(WORDINGS[DEFAULT_PROMPTS], k)).stage
                                      for k in ("entry", "buy", "read"))
_KNOWN = (ENTRY_STAGE, BUY_STAGE, READ_STAGE)
_ITEM_LINES = tuple(dict.fromkeys(w.item_line for w in WORDINGS.values()))
_NO_TEXT = tuple(dict.fromkeys(w.no_text for w in WORDINGS.values()))

_ITEMS = tuple(re.compile(
    "^" + re.escape(line)
    .replace(re.escape("{i}"), r"(\d+)")
    .replace(re.escape("{name}"), r"(.*)")
    .replace(re.escape("{price}"), r"([^\n]+?)") + "$",
    re.M,
) for line in _ITEM_LINES)
_NAME = re.compile(r"身份：(.*?)，年龄")
_CLOCK = re.compile(r"现在是\d{4}年\d{1,2}月\d{1,2}日 \S+ (\d{1,2}):\d{2}")
_TODAY = re.compile(r"今天是([^。]*)")
_WORKDAY_KINDS = ("工作日", "调休上班日")


def content_text(content: Any) -> str:
    """A message's text: a string, or the text parts of a content-part list."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = [p.get("text") for p in content if isinstance(p, dict) and p.get("type", "text") == "text"]
        texts = [t for t in parts if isinstance(t, str)]
        if len(texts) == len(parts):
            return "".join(texts)
    raise PromptError("message 'content' must be a string or a list of text parts")


@lru_cache(maxsize=16384)
def read_system(system: str) -> tuple[str, int | None, bool]:
    """(persona key, hour or None, today is a workday) from the system message."""
    m = _NAME.search(system)
    name = m.group(1).strip() if m else ""
    key = NAME_TO_KEY.get(name, UNKNOWN_PREFIX + name)
    m = _CLOCK.search(system)
    hour = int(m.group(1)) if m else None
    if hour is not None and not 0 <= hour <= 23:
        hour = None
    m = _TODAY.search(system)  # the first 今天是 is today's (also in 天亮后的今天是)
    workday = m is not None and m.group(1).startswith(_WORKDAY_KINDS)
    return key, hour, workday


def _item_lines(user: str) -> list[tuple[str, str, str]]:
    """(number, name, price) of each item line, in the first item-line wording that has any."""
    return next((found for pattern in _ITEMS if (found := pattern.findall(user))), [])


def _prices(user: str) -> tuple[tuple[int, ...], tuple[float, ...]]:
    idx, prices = [], []
    for i, _name, price in _item_lines(user):
        try:
            prices.append(float(price))
        except ValueError:
            raise PromptError(f"item #{i}: price {price!r} is not a number") from None
        idx.append(int(i))
    return tuple(idx), tuple(prices)


def _transcript(user: str, asked: _Asked | None) -> str | None:
    """The transcript between the read template's texts, else between the outer 「」."""
    start = user.find(asked.open) if asked is not None else -1
    if asked is not None and start >= 0:
        start += len(asked.open)
        end = len(user) - len(asked.tail) if user.endswith(asked.tail) else user.rfind("」")
        if end >= start:
            text = user[start:end]
            return "" if text in _NO_TEXT else text
    start, end = user.find("「"), user.rfind("」")
    return user[start + 1:end] if 0 <= start < end else None


def read_stage(user: str) -> tuple[str, tuple[int, ...], tuple[float, ...], str]:
    """(stage, item numbers, prices, transcript) from the first user message."""
    asked = next((a for a in ASKED if user.startswith(a.head)), None)
    stage = asked.stage if asked is not None else None
    if stage == READ_STAGE:
        text = _transcript(user, asked)
        if text is None:
            raise PromptError(f"{READ_STAGE} prompt without a 「transcript」")
        return READ_STAGE, (), (), text
    if stage == ENTRY_STAGE:
        return ENTRY_STAGE, (), (), ""
    if stage == BUY_STAGE or _item_lines(user):
        idx, prices = _prices(user)
        if not prices:
            raise PromptError(f"{BUY_STAGE} prompt without item lines '#i 【name】 单价【p】元'")
        return BUY_STAGE, idx, prices, ""
    text = _transcript(user, None)
    if text is not None:
        return READ_STAGE, (), (), text
    raise PromptError(f"the user message is none of the {', '.join(_KNOWN[:-1])} or {_KNOWN[-1]} prompts")


def read_prompt(messages: Sequence[Any]) -> Prompt:
    """What the heuristic needs from a chat conversation (see the module doc)."""
    system = user = None
    for m in messages:
        if not isinstance(m, dict):
            raise PromptError("each message must be an object with 'role' and 'content'")
        role = m.get("role")
        if role in ("system", "developer") and system is None:
            system = content_text(m.get("content"))
        elif role == "user" and user is None:
            user = content_text(m.get("content"))
    if user is None:
        raise PromptError("no user message")
    stage, idx, prices, text = read_stage(user)
    key, hour, workday = read_system(system or "")
    if stage == ENTRY_STAGE and hour is None:
        raise PromptError(f"{ENTRY_STAGE} prompt without the moment ('现在是YYYY年M月D日 星期X HH:MM') "
                          "in the system message")
    return Prompt(stage, key, hour, workday, prices, idx, text)
