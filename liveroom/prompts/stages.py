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

Everything stage-specific lives in its :class:`Stage` of :data:`STAGES`: the
wording, the user message and reply schema built from it, the parser, the
features it fills and the version. Each stage's ``version`` is derived from
its wording and schema, so it changes whenever a prompt changes; a checkpoint
made with other prompts is refused.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Callable, Container, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from statistics import fmean
from typing import Any

import pandas as pd

from ..data.inputs import Item
from ..data.moment import describe_moment
from ..data.personas import Persona
from .replies import ReplyError, as_score, extract_json, pick

TEXT_LIMIT = 1024  # transcript characters shown to the model

SYSTEM = (
    "你正在扮演一位中国的电商直播观众，请完全代入下面的身份回答问题。\n"
    "身份：{name}，年龄{age}，生活在{city}，消费水平{consumption}{traits}。\n"
    "你正拿着手机，准备打开一个购物直播间。\n"
    "{moment}"
)

ENTRY = (
    "你刷到了一个直播间，标题是：【{title}】\n"
    "请结合你此刻的日程安排、空闲时间、兴趣爱好和消费预算，判断你现在进入这个直播间的意愿和可能性。"
    "请忽略主播的知名度。\n"
    "用1到5的整数打分：1 = 完全不会进入，2 = 不太会，3 = 可能会也可能不会，4 = 比较可能，5 = 一定会进入。\n"
    '只输出一个JSON对象，格式为 {{"want_to_enter": 分数, "reason": "一句话理由"}}。\n'
    "示例：\n"
    '{{"want_to_enter": 2, "reason": "现在要上班，没空看直播"}}\n'
    '{{"want_to_enter": 4, "reason": "正好有空，也对这类商品感兴趣"}}'
)

BUY = (
    "假设你已经进入了直播间【{title}】。橱窗里有这些商品：\n"
    "{items}\n"
    "请根据你的需求、喜好和消费能力，为每一件商品的购买意愿打分：1 = 完全不想买，3 = 一般，5 = 非常想买。\n"
    '只输出一个JSON对象，格式为 {{"items": [{{"idx": 编号, "want_to_buy": 分数, "reason": "一句话理由"}}, ...]}}，'
    "每件商品一项，共{n}项。\n"
    "示例：\n"
    '{{"items": [{{"idx": 1, "want_to_buy": 4, "reason": "价格合适，正好需要"}}, {{"idx": 2, "want_to_buy": 1, "reason": "太贵了"}}]}}\n'
    '{{"items": [{{"idx": 1, "want_to_buy": 2, "reason": "用不上"}}, {{"idx": 2, "want_to_buy": 3, "reason": "可以考虑"}}]}}'
)
ITEM_LINE = "#{i} 【{name}】 单价【{price}】元"

READ = (
    "假设你已经进入直播间，主播正在讲解商品【{prod}】。下面是主播讲解的语音转写，可能有识别错误，请理解大意：\n"
    "「{text}」\n"
    "这段讲解会怎样改变你购买这件商品的意愿？用1到5的整数打分："
    "1 = 强烈负面（更不想买了），2 = 略有负面，3 = 没有影响，4 = 略有正面，5 = 强烈正面（更想买了）。\n"
    '只输出一个JSON对象，格式为 {{"impact": 分数, "reason": "一句话理由"}}。\n'
    "示例：\n"
    '{{"impact": 4, "reason": "讲得很实在，优惠也大"}}\n'
    '{{"impact": 3, "reason": "没讲出什么新东西"}}\n'
    '{{"impact": 2, "reason": "感觉在夸大其词"}}'
)
NO_TEXT = "（没有转写内容）"

REASK = "你的回答无法使用：{reason}。请只输出符合要求的JSON，不要输出其他内容。"

_SCORE = {"type": "integer", "enum": [1, 2, 3, 4, 5]}


@dataclass(frozen=True)
class Pitch:
    """What the prompts show of one pitch."""

    index: int
    start: dt.datetime
    title: str
    prod: str
    text: str
    items: tuple[Item, ...] = ()


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


def system_message(persona: Persona, when: dt.datetime) -> str:
    """Who the model plays, and when: shared by every stage."""
    return SYSTEM.format(
        name=persona.name, age=persona.age, city=persona.city, consumption=persona.consumption,
        traits=f"，{persona.traits}" if persona.traits else "", moment=describe_moment(when),
    )


def _obj(props: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "properties": props, "required": list(props), "additionalProperties": False}


# --------------------------------------------------------------------------- entry

def entry_template() -> str:
    return ENTRY


def entry_user(p: Pitch) -> str:
    return ENTRY.format(title=p.title)


def entry_schema(p: Pitch) -> dict[str, Any]:
    return _obj({"want_to_enter": _SCORE, "reason": {"type": "string"}})


def parse_entry(text: str, n_items: int = 0) -> dict[str, Any]:
    obj = _one_object(extract_json(text))
    return {"entry": as_score(pick(obj, ("want_to_enter", "want", "score", "enter")), "want_to_enter")}


# --------------------------------------------------------------------------- buy

def buy_template() -> str:
    return BUY + ITEM_LINE


def buy_user(p: Pitch) -> str:
    lines = "\n".join(
        ITEM_LINE.format(i=i, name=it.name, price=format_price(it.price)) for i, it in enumerate(p.items, 1)
    )
    return BUY.format(title=p.title, items=lines, n=len(p.items))


def buy_schema(p: Pitch) -> dict[str, Any]:
    n = len(p.items)
    item = _obj({"idx": {"type": "integer", "enum": list(range(1, n + 1))}, "want_to_buy": _SCORE,
                 "reason": {"type": "string"}})
    return _obj({"items": {"type": "array", "items": item, "minItems": n, "maxItems": n}})


_LIST_KEYS = ("items", "scores", "results", "goods", "products", "data")
_IDX_KEYS = ("idx", "id", "index", "item", "#")
_BUY_KEYS = ("want_to_buy", "want", "score", "rating")


def _item_list(value: Any) -> list[Any]:
    if isinstance(value, list):
        return value
    for k in _LIST_KEYS:
        if isinstance(value.get(k), list):
            return value[k]
    lists = [v for v in value.values() if isinstance(v, list)]
    if len(lists) == 1:
        return lists[0]
    if any(k in value for k in _BUY_KEYS):
        return [value]
    raise ReplyError("expected a list of items with 'want_to_buy' scores")


def _as_idx(value: Any) -> int:
    try:
        return int(str(value).strip().lstrip("#"))
    except ValueError:
        raise ReplyError(f"'idx' must be an item number, got {value!r}") from None


def parse_buy(text: str, n_items: int) -> dict[str, Any]:
    entries = _item_list(extract_json(text))
    if not entries or not all(isinstance(e, dict) for e in entries):
        raise ReplyError("expected a list of item objects")
    if all(not any(k in e for k in _IDX_KEYS) for e in entries):
        pairs = [(i, e) for i, e in enumerate(entries, 1)]  # numbered by position
    else:
        pairs = [(_as_idx(pick(e, _IDX_KEYS)), e) for e in entries]
        if {i for i, _ in pairs} >= set(range(n_items)) and n_items not in {i for i, _ in pairs}:
            pairs = [(i + 1, e) for i, e in pairs]  # numbered from 0
    scores: dict[int, int] = {}
    for i, e in pairs:
        if 1 <= i <= n_items and i not in scores:
            scores[i] = as_score(pick(e, _BUY_KEYS), "want_to_buy")
    missing = [i for i in range(1, n_items + 1) if i not in scores]
    if missing:
        raise ReplyError(f"item(s) {', '.join(f'#{i}' for i in missing)} not scored")
    ordered = [scores[i] for i in range(1, n_items + 1)]
    return {"scores": ordered, "state": fmean(ordered), "action": ordered[0]}


# --------------------------------------------------------------------------- read

def read_template() -> str:
    return READ + NO_TEXT


def read_user(p: Pitch) -> str:
    return READ.format(prod=p.prod, text=p.text[:TEXT_LIMIT] or NO_TEXT)


def read_schema(p: Pitch) -> dict[str, Any]:
    return _obj({"impact": _SCORE, "reason": {"type": "string"}})


def parse_read(text: str, n_items: int = 0) -> dict[str, Any]:
    obj = _one_object(extract_json(text))
    return {"read": as_score(pick(obj, ("impact", "score", "want")), "impact")}


def _one_object(value: Any) -> dict[str, Any]:
    if isinstance(value, list) and len(value) == 1:
        value = value[0]
    if not isinstance(value, dict):
        raise ReplyError("expected one JSON object")
    return value


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
    template: Callable[[], str]                # its wording, read when the version is made
    needs_showcase: bool = False
    version: str = field(init=False)

    def __post_init__(self) -> None:
        template = self.template()
        # the schema and the moment wording are part of what the model is shown too
        schema = json.dumps(self.schema(_PROBE), sort_keys=True, ensure_ascii=False)
        moments = "".join(describe_moment(when) for when in _PROBE_MOMENTS)
        digest = hashlib.sha256((SYSTEM + template + REASK + schema + moments).encode()).hexdigest()[:8]
        object.__setattr__(self, "version", f"{self.name}-{digest}")


STAGES: dict[str, Stage] = {
    s.name: s
    for s in (
        Stage("entry", entry_user, entry_schema, parse_entry, ("entry",), entry_template),
        Stage("buy", buy_user, buy_schema, parse_buy, ("state", "action"), buy_template, needs_showcase=True),
        Stage("read", read_user, read_schema, parse_read, ("read",), read_template),
    )
}


def build_request(stage: Stage, pitch: Pitch, persona: Persona) -> Request:
    """The one request for (stage, pitch, persona); :func:`iter_requests` builds them all."""
    return next(iter_requests([pitch], [stage], [persona]))


def reask_messages(messages: Sequence[Mapping[str, str]], reply: str, reason: str) -> list[dict[str, str]]:
    """The conversation extended with the bad reply and a request to answer again."""
    return [*map(dict, messages), {"role": "assistant", "content": reply},
            {"role": "user", "content": REASK.format(reason=reason)}]


def iter_pitches(df: pd.DataFrame, showcase: Mapping[str, list[Item]] | None = None) -> Iterator[Pitch]:
    """Pitches of a loaded pitches frame, in file order, lazily."""
    starts = pd.to_datetime(df["start"], format="%Y-%m-%d %H:%M")
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
        systems: dict[str, str] = {}
        for stage in stages:
            skip = done.get(stage.name, ())
            head = request_id(stage.name, pitch.index, "")  # then + persona key: no call per persona
            todo = [(rid, p) for p in personas if (rid := head + p.key) not in skip]
            if not todo:
                continue
            user, schema = stage.user(pitch), stage.schema(pitch)
            n_items = len(pitch.items) if stage.needs_showcase else 0
            for rid, persona in todo:
                system = systems.get(persona.key)
                if system is None:
                    system = systems[persona.key] = system_message(persona, pitch.start)
                messages = [{"role": "system", "content": system}, {"role": "user", "content": user}]
                yield Request(rid, stage.name, pitch.index, persona.key, messages, schema, n_items)
