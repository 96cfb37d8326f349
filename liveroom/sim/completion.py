"""The simulated completion of a prompt, for the chat and the batch server alike.

One place decides what the simulator answers (the heuristic's scores as the
stage's JSON, with a reason whose wording depends on the conversation and the
seed), how many tokens a request and its answer count, and what a
``chat.completion`` and an error object look like, so that a batch line is
answered exactly as the same request in direct mode.

Tokens are estimated as characters // 2 + 1, counting a message content that
is not a string (a list of content parts, a missing content) as its JSON text.

Reasoning replies (PROVIDERS.md section 5): ``think`` opens the content with
a ``<think>...</think>`` block holding a JSON-looking draft (as GLM-Z1 and
vLLM or llama.cpp without a reasoning parser send it), then the real JSON;
``null_content`` is a model that spent ``max_tokens`` thinking: ``content``
null, ``reasoning_content`` set, ``finish_reason: "length"``.
``content_filter`` (OpenAI's way, a 200) has ``content`` null and
``finish_reason: "content_filter"``.

Token probabilities (:mod:`.logprobs`): a request that asks ``logprobs: true``
gets each score drawn at its temperature and the reply's tokens with their
probabilities; a request that does not ask them is answered exactly as before,
with the heuristic's mode (what the synthetic data's scores equal).
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import orjson

from .heuristic import buy_scores, entry_score, read_score
from .logprobs import draw, latents, rng_for, token_logprobs
from .prompt import BUY_STAGE, ENTRY_STAGE, READ_STAGE, Prompt

CONTENT_FAULTS = ("nonjson", "fenced", "out_of_range", "wrong_key")
REPLY_FAULTS = ("think", "null_content", "content_filter")  # the reply's shape, not its JSON

THINKING = "用户让我按这个身份打分。先写个草稿：{draft}\n不对，再看看时间、价格和讲解……好，给出最终答案。"

ENTRY_REASONS = {
    1: ("现在这个时间不方便，不会进去", "没空也没兴趣，直接划走"),
    2: ("时间不太合适，不太想进", "兴趣不大，大概会划走"),
    3: ("有点空，可能进去看一眼", "说不准，看心情"),
    4: ("正好有空，也挺感兴趣", "这个时间适合逛逛直播"),
    5: ("正是空闲时间，一定进去看看", "很感兴趣，马上进去"),
}
BUY_REASONS = {
    1: ("太贵了，超出预算", "价格远超我的承受范围"),
    2: ("有点贵，不太舍得", "价格偏高，再看看"),
    3: ("价格还行，可以考虑", "一般，需要时再买"),
    4: ("价格合适，正好需要", "在预算之内，挺想买"),
    5: ("很便宜，非常想买", "价格实惠，马上下单"),
}
READ_REASONS = {
    1: ("感觉在夸大其词，更不想买了", "讲解让人反感"),
    2: ("有些说法不太可信", "讲得有点虚"),
    3: ("没讲出什么新东西", "对购买意愿没什么影响"),
    4: ("讲得挺实在，有点心动", "优惠说得清楚，更想买了"),
    5: ("优惠力度很大，非常心动", "讲解很有说服力，马上想买"),
}
PROSE = (
    "我觉得这个直播间还可以，可能会看一看，不过也说不准。",
    "抱歉，作为这个身份我很难给出明确的判断，要看当时的心情和安排。",
    "这个问题挺有意思的。总体来说我比较犹豫，需要再想想。",
)


def _reason(table: Mapping[int, tuple[str, ...]], score: int, pick: int) -> str:
    options = table[min(5, max(1, score))]
    return options[pick % len(options)]


# each stage's reply object: (prompt, wording pick, a score to put instead or None)
def _entry(prompt: Prompt, pick: int, bad: int | None) -> dict[str, Any]:
    s = entry_score(prompt.persona, prompt.hour or 0, prompt.workday)
    return {"want_to_enter": bad or s, "reason": _reason(ENTRY_REASONS, s, pick)}


def _buy(prompt: Prompt, pick: int, bad: int | None) -> dict[str, Any]:
    scores = buy_scores(prompt.persona, list(prompt.prices))
    items = [{"idx": i, "want_to_buy": s, "reason": _reason(BUY_REASONS, s, pick + n)}
             for n, (i, s) in enumerate(zip(prompt.idx, scores))]
    if bad:
        items[0]["want_to_buy"] = bad
    return {"items": items}


def _read(prompt: Prompt, pick: int, bad: int | None) -> dict[str, Any]:
    s = read_score(prompt.persona, prompt.text)
    return {"impact": bad or s, "reason": _reason(READ_REASONS, s, pick)}


ReplyObject = Callable[[Prompt, int, int | None], dict[str, Any]]
REPLIES: dict[str, ReplyObject] = {ENTRY_STAGE: _entry, BUY_STAGE: _buy, READ_STAGE: _read}
#: the score key of each stage and its misspelling for the ``wrong_key`` fault
WRONG_KEYS = {ENTRY_STAGE: ("want_to_enter", "wantToEnter"), BUY_STAGE: ("want_to_buy", "score_x"),
              READ_STAGE: ("impact", "impact_score")}


def _put(obj: dict[str, Any], stage: str, scores: Sequence[int]) -> None:
    """Put ``scores`` (buy: each item's, showcase order) in a reply object instead of the mode."""
    if stage == BUY_STAGE:
        for item, s in zip(obj["items"], scores):
            item["want_to_buy"] = s
    else:
        obj[WRONG_KEYS[stage][0]] = scores[0]


def answer(prompt: Prompt, pick: int = 0, fault: str | None = None, drawn: Sequence[int] | None = None) -> str:
    """The reply content for a prompt: the heuristic's scores as the stage's JSON.

    ``pick`` chooses among reason wordings; ``fault`` is one of
    :data:`CONTENT_FAULTS` or None; ``drawn`` are scores to give instead of the mode.
    """
    if fault == "nonjson":
        return PROSE[pick % len(PROSE)]
    obj = REPLIES[prompt.stage](prompt, pick, 7 if fault == "out_of_range" else None)
    if drawn is not None:
        _put(obj, prompt.stage, drawn)
    if fault == "wrong_key":
        right, wrong = WRONG_KEYS[prompt.stage]

        def rename(d: dict[str, Any]) -> dict[str, Any]:
            return {(wrong if k == right else k): v for k, v in d.items()}

        obj = {"items": [rename(it) for it in obj["items"]]} if "items" in obj else rename(obj)
    text = orjson.dumps(obj).decode()
    if fault == "fenced":
        return f"好的，下面是我的回答：\n```json\n{text}\n```\n以上就是我的打分。"
    return text


def conversation_digest(messages: Sequence[dict[str, Any]]) -> bytes:
    """8 bytes naming a conversation: what duplicates, fault draws and wording go by."""
    convo = orjson.dumps([(m.get("role"), m.get("content")) for m in messages])
    return hashlib.blake2b(convo, digest_size=8).digest()


def tokens(text_chars: int) -> int:
    """The simulator's token estimate for so many characters."""
    return text_chars // 2 + 1


def prompt_tokens(messages: Sequence[dict[str, Any]]) -> int:
    """The estimate for a request's messages (non-string contents as their JSON)."""
    chars = 0
    for m in messages:
        c = m.get("content")
        chars += len(c) if isinstance(c, str) else len(orjson.dumps(c))
    return tokens(chars)


@dataclass(frozen=True)
class Completion:
    """A simulated answer and its token counts."""

    content: str | None
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str = "stop"
    reasoning: str | None = None  # sent as message.reasoning_content
    logprobs: dict[str, Any] | None = None  # sent as choices[0].logprobs (asked with logprobs: true)


def thinking(prompt: Prompt, pick: int) -> str:
    """A model's reasoning: prose around a JSON-looking draft of the stage's reply (every score 1)."""
    return THINKING.format(draft=orjson.dumps(REPLIES[prompt.stage](prompt, pick + 1, 1)).decode())


def complete(prompt: Prompt, messages: Sequence[dict[str, Any]], digest: bytes, seed: int,
             fault: str | None = None, max_tokens: int | None = None, top_logprobs: int | None = None,
             temperature: float = 1.0) -> Completion:
    """The answer to a readable conversation (``digest``: its :func:`conversation_digest`);
    ``max_tokens``: the request's, what a ``null_content`` reply reports as used; ``top_logprobs``:
    the request asked ``logprobs`` with so many alternatives (None: it did not), its scores then drawn
    at ``temperature`` (:mod:`.logprobs`)."""
    pick = int.from_bytes(digest[:4], "little") + seed
    if fault in REPLY_FAULTS:
        c = _reply_fault(prompt, messages, pick, fault, max_tokens)
        if top_logprobs is None or c.content is None:
            return c
        return Completion(c.content, c.prompt_tokens, c.completion_tokens, c.finish_reason, c.reasoning,
                          token_logprobs(c.content, None, top_logprobs))
    if top_logprobs is None:
        content = answer(prompt, pick, fault)
        return Completion(content, prompt_tokens(messages), tokens(len(content)))
    lat = latents(prompt) if fault is None else None
    rng = rng_for(seed, digest)
    content = answer(prompt, pick, fault, [draw(x, temperature, rng) for x in lat] if lat is not None else None)
    return Completion(content, prompt_tokens(messages), tokens(len(content)),
                      logprobs=token_logprobs(content, lat, top_logprobs))


def logprobs_asked(body: dict[str, Any]) -> tuple[int | None, float]:
    """(``top_logprobs``, ``temperature``) of a request body: the first None unless it asks
    ``logprobs: true`` (``top_logprobs`` missing: 0, the sampled token's alone); the temperature 1 unless
    it gives a number >= 0."""
    t = body.get("temperature")
    temperature = float(t) if isinstance(t, (int, float)) and not isinstance(t, bool) and t >= 0 else 1.0
    if body.get("logprobs") is not True:
        return None, temperature
    k = body.get("top_logprobs")
    return (k if isinstance(k, int) and not isinstance(k, bool) and k >= 0 else 0), temperature


def _reply_fault(prompt: Prompt, messages: Sequence[dict[str, Any]], pick: int, fault: str | None,
                 max_tokens: int | None) -> Completion:
    if fault == "think":
        content = f"<think>\n{thinking(prompt, pick)}\n</think>\n\n{answer(prompt, pick)}"
        return Completion(content, prompt_tokens(messages), tokens(len(content)))
    if fault == "null_content":
        reasoning = thinking(prompt, pick)
        used = max_tokens if max_tokens and max_tokens > 0 else tokens(len(reasoning))
        return Completion(None, prompt_tokens(messages), used, "length", reasoning)
    return Completion(None, prompt_tokens(messages), 0, "content_filter")


def completion_body(completion_id: str, model: str, c: Completion) -> dict[str, Any]:
    """The ``chat.completion`` object carrying ``c``."""
    message: dict[str, Any] = {"role": "assistant", "content": c.content, "refusal": None}
    usage: dict[str, Any] = {"prompt_tokens": c.prompt_tokens, "completion_tokens": c.completion_tokens,
                             "total_tokens": c.prompt_tokens + c.completion_tokens}
    if c.reasoning is not None:
        message["reasoning_content"] = c.reasoning
        usage["completion_tokens_details"] = {"reasoning_tokens": c.completion_tokens}
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "system_fingerprint": "liveroom-sim",
        "choices": [{"index": 0, "message": message, "logprobs": c.logprobs, "finish_reason": c.finish_reason}],
        "usage": usage,
    }


def max_tokens_of(body: dict[str, Any]) -> int | None:
    """The request's ``max_completion_tokens`` or ``max_tokens``, if a positive integer."""
    n = body.get("max_completion_tokens", body.get("max_tokens"))
    return n if isinstance(n, int) and not isinstance(n, bool) and n > 0 else None


def model_of(body: dict[str, Any], default: str) -> str:
    """The model a request names, else the server's."""
    model = body.get("model")
    return model if isinstance(model, str) and model else default


def error_object(message: str, type_: str, code: str | None = None, param: str | None = None) -> dict[str, Any]:
    """An OpenAI-style error body."""
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}
