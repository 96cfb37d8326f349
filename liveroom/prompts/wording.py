"""What each prompt set says to the model, as data.

A :class:`Wording` is one full set of templates: the system message, the three
user messages, the showcase line, the empty-transcript text, the moment
sentence and the personas' words. Two sets exist:

``method`` (the default)
    follows the method's protocol point by point (docs/PROTOCOL.md): example
    replies at the scale's ends, only the ends labelled, the streamer assumed
    credible and popular, the moment as bare calendar facts, buy without the
    room title and entered "even if", the personas worded as the method's table.
``legacy``
    the project's first wording, kept word for word so that runs made with it
    resume and score the same.

Placeholders: ``{title}`` (entry), ``{items}`` and ``{n}`` (buy; a template may
leave out ``{title}``), ``{prod}`` and ``{text}`` (read); item lines take
``{i}``, ``{name}``, ``{price}``. The simulator reads the messages back from
these templates, so they keep one placeholder-free head each.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass

from ..data.moment import describe_moment, plain_moment
from ..data.personas import DEFAULT_PERSONAS, LEGACY_PERSONAS, Persona


@dataclass(frozen=True)
class Wording:
    """One prompt set: every text the model is shown, and the personas as it words them."""

    name: str
    system: str
    entry: str
    buy: str
    item_line: str
    read: str
    no_text: str
    moment: Callable[[dt.datetime], str]
    personas: tuple[Persona, ...]


SYSTEM = (
    "你正在扮演一位中国的电商直播观众，请完全代入下面的身份回答问题。\n"
    "身份：{name}，年龄{age}，生活在{city}，消费水平{consumption}{traits}。\n"
    "你正拿着手机，准备打开一个购物直播间。\n"
    "{moment}"
)
ITEM_LINE = "#{i} 【{name}】 单价【{price}】元"
NO_TEXT = "（没有转写内容）"

METHOD = Wording(
    name="method",
    system=SYSTEM,
    entry=(
        "你在手机上刷到了一个直播间，标题是：【{title}】\n"
        "请假设这个直播间的主播真实可信、人气很高，但这一点不作为你是否进入的依据。\n"
        "请结合你此刻的日程安排、空闲时间、兴趣爱好和消费预算，判断你现在进入这个直播间的意愿和可能性，"
        "用1到5的整数打分（1 = 完全不会进入，5 = 一定会进入）。\n"
        '只输出一个JSON对象，格式为 {{"want_to_enter": 分数, "reason": "一句话理由"}}。\n'
        "示例：\n"
        '{{"want_to_enter": 1, "reason": "正在上班，抽不出时间看直播"}}\n'
        '{{"want_to_enter": 5, "reason": "刚好有空，这类东西我一直想买"}}'
    ),
    buy=(
        "假设你已经进入了这个直播间，即使你觉得自己其实不会想进入。橱窗里有这些商品：\n"
        "{items}\n"
        "请根据你的需求、喜好和消费能力，为每一件商品的购买意愿打分，"
        "用1到5的整数（1 = 完全不想买，5 = 非常想买）。\n"
        '只输出一个JSON对象，格式为 {{"items": [{{"idx": 编号, "want_to_buy": 分数, "reason": "一句话理由"}}, ...]}}，'
        "每件商品一项，共{n}项。\n"
        "示例：\n"
        '{{"items": [{{"idx": 1, "want_to_buy": 5, "reason": "正缺这个，价格也能接受"}}, '
        '{{"idx": 2, "want_to_buy": 3, "reason": "有点兴趣，再看看"}}, '
        '{{"idx": 3, "want_to_buy": 1, "reason": "超出我的预算"}}]}}'
    ),
    item_line=ITEM_LINE,
    read=(
        "假设你正在这个直播间里，主播在讲解商品【{prod}】。下面是讲解的语音转写，可能有识别错误，请读懂大意：\n"
        "「{text}」\n"
        "听完这段讲解，你购买这件商品的意愿会怎样变化？用1到5的整数打分"
        "（1 = 强烈负面，3 = 没有变化，5 = 强烈正面）。\n"
        '只输出一个JSON对象，格式为 {{"impact": 分数, "reason": "一句话理由"}}。\n'
        "示例：\n"
        '{{"impact": 5, "reason": "讲得实在，优惠力度也大"}}\n'
        '{{"impact": 3, "reason": "没听到什么新信息"}}\n'
        '{{"impact": 2, "reason": "有点夸大其词，不太信"}}'
    ),
    no_text=NO_TEXT,
    moment=plain_moment,
    personas=DEFAULT_PERSONAS,
)

LEGACY = Wording(
    name="legacy",
    system=SYSTEM,
    entry=(
        "你刷到了一个直播间，标题是：【{title}】\n"
        "请结合你此刻的日程安排、空闲时间、兴趣爱好和消费预算，判断你现在进入这个直播间的意愿和可能性。"
        "请忽略主播的知名度。\n"
        "用1到5的整数打分：1 = 完全不会进入，2 = 不太会，3 = 可能会也可能不会，4 = 比较可能，5 = 一定会进入。\n"
        '只输出一个JSON对象，格式为 {{"want_to_enter": 分数, "reason": "一句话理由"}}。\n'
        "示例：\n"
        '{{"want_to_enter": 2, "reason": "现在要上班，没空看直播"}}\n'
        '{{"want_to_enter": 4, "reason": "正好有空，也对这类商品感兴趣"}}'
    ),
    buy=(
        "假设你已经进入了直播间【{title}】。橱窗里有这些商品：\n"
        "{items}\n"
        "请根据你的需求、喜好和消费能力，为每一件商品的购买意愿打分：1 = 完全不想买，3 = 一般，5 = 非常想买。\n"
        '只输出一个JSON对象，格式为 {{"items": [{{"idx": 编号, "want_to_buy": 分数, "reason": "一句话理由"}}, ...]}}，'
        "每件商品一项，共{n}项。\n"
        "示例：\n"
        '{{"items": [{{"idx": 1, "want_to_buy": 4, "reason": "价格合适，正好需要"}}, {{"idx": 2, "want_to_buy": 1, "reason": "太贵了"}}]}}\n'
        '{{"items": [{{"idx": 1, "want_to_buy": 2, "reason": "用不上"}}, {{"idx": 2, "want_to_buy": 3, "reason": "可以考虑"}}]}}'
    ),
    item_line=ITEM_LINE,
    read=(
        "假设你已经进入直播间，主播正在讲解商品【{prod}】。下面是主播讲解的语音转写，可能有识别错误，请理解大意：\n"
        "「{text}」\n"
        "这段讲解会怎样改变你购买这件商品的意愿？用1到5的整数打分："
        "1 = 强烈负面（更不想买了），2 = 略有负面，3 = 没有影响，4 = 略有正面，5 = 强烈正面（更想买了）。\n"
        '只输出一个JSON对象，格式为 {{"impact": 分数, "reason": "一句话理由"}}。\n'
        "示例：\n"
        '{{"impact": 4, "reason": "讲得很实在，优惠也大"}}\n'
        '{{"impact": 3, "reason": "没讲出什么新东西"}}\n'
        '{{"impact": 2, "reason": "感觉在夸大其词"}}'
    ),
    no_text=NO_TEXT,
    moment=describe_moment,
    personas=LEGACY_PERSONAS,
)

#: every prompt set by name
WORDINGS: dict[str, Wording] = {w.name: w for w in (METHOD, LEGACY)}
#: the set a new run is asked with
DEFAULT_PROMPTS = METHOD.name
#: the set of a run manifest without a ``prompts`` entry: runs made before there were sets
UNNAMED_PROMPTS = LEGACY.name
