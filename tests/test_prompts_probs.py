"""Scores with their probabilities from token streams shaped as OpenAI, llama.cpp and vLLM send them."""

from __future__ import annotations

import math
from typing import Any

import pytest

from liveroom.prompts.answers import parse_buy, parse_entry, parse_read
from liveroom.prompts.probs import digit_of, distribution, find_scores, score_probabilities


def lp(p: float) -> float:
    return math.log(p)


def tok(token: str, alts: dict[str, float] | None = None, **extra: Any) -> dict[str, Any]:
    """One place of a stream: the chosen token (near-certain unless ``alts`` gives its alternatives)."""
    alts = alts or {token: 0.9999}
    chosen = alts.get(token, 1e-4)
    return {"token": token, "logprob": lp(chosen), "bytes": list(token.encode()), **extra,
            "top_logprobs": [{"token": t, "logprob": lp(p), "bytes": list(t.encode())} for t, p in alts.items()]}


def stream(*places: dict[str, Any] | str) -> dict[str, Any]:
    return {"content": [p if isinstance(p, dict) else tok(p) for p in places]}


def text_of(s: dict[str, Any]) -> str:
    return "".join(e["token"] for e in s["content"])


def test_openai_entry_digit_own_token_chosen_not_listed_first():
    # gpt-4o-mini style: compact JSON, the digit its own token, CJK split into byte tokens
    digit = tok("4", {"4": 0.6, "3": 0.3, "5": 0.05, "2": 0.01})
    s = stream('{"', "want", "_to", "_enter", '":', digit, ',"', "reason", '":"',
               {"token": "\\xe6\\xad", "logprob": -0.01, "bytes": [230, 173], "top_logprobs": []}, '"}')
    got = score_probabilities("entry", '{"want_to_enter":4,"reason":"x"}', s, {"entry": 4})
    assert got is not None
    mass = 0.6 + 0.3 + 0.05 + 0.01
    assert got["entry_mass"] == pytest.approx(mass)
    assert got["entry_probs"] == pytest.approx([0.0, 0.01 / mass, 0.3 / mass, 0.6 / mass, 0.05 / mass])
    assert got["entry_expected"] == pytest.approx((0.01 * 2 + 0.3 * 3 + 0.6 * 4 + 0.05 * 5) / mass)


def test_llamacpp_fence_before_the_object_and_digits_outside_1_to_5_ignored():
    # llama-server: probabilities before the grammar, so 0 and 6-9 appear; a fence the content lacks
    digit = tok("1", {"1": 0.5, "0": 0.2, "2": 0.2, "9": 0.05, "6": 0.05}, id=16)
    s = stream("```", "json", "\n", "{\n", " ", ' "', "impact", '":', " ", digit, ",\n", ' "', "reason", '":', ' "',
               "ok", '"\n', "}")
    got = score_probabilities("read", '{"impact": 1, "reason": "ok"}', s, {"read": 1})
    assert got is not None
    assert got["read_mass"] == pytest.approx(0.7)
    assert got["read_probs"] == pytest.approx([0.5 / 0.7, 0.2 / 0.7, 0, 0, 0])
    assert got["read_expected"] == pytest.approx((0.5 + 0.4) / 0.7)


def test_vllm_glued_space_and_quote_tokens_and_a_string_value():
    # a tokenizer that glues the space (or a quote) to the digit; the same digit twice adds up
    digit = tok(' "3', {' "3': 0.5, ' "4': 0.3, " 3": 0.1, ' "x': 0.1})
    s = stream('{"', "want_to_enter", '":', digit, '",', ' "reason": "', "y", '"}')
    found = find_scores(s, "want_to_enter", 1)
    assert found is not None and found[0][0] == 3
    assert found[0][1].probs == pytest.approx([0, 0, 0.6 / 0.9, 0.3 / 0.9, 0])
    assert found[0][1].mass == pytest.approx(0.9)


def test_buy_reply_in_another_order_maps_each_item_and_skips_the_idx_digit():
    # the item number's digit comes first in each item: the score's token is the one after its key
    s3 = tok("3", {"3": 0.7, "2": 0.3})
    s5 = tok("5", {"5": 0.8, "4": 0.2})
    s = stream('{"', "items", '":[', '{"', "idx", '":', tok("2", {"2": 0.5, "3": 0.5}), ',"', "want_to_buy", '":', s5,
               "}", ',{"', "idx", '":', "1", ',"', "want", "_to", "_buy", '":', s3, "}]}")
    text = text_of(s)
    scores = parse_buy(text, 2)
    assert scores["scores"] == [3, 5]
    got = score_probabilities("buy", text, s, scores, 2)
    assert got is not None
    assert got["items_expected"] == pytest.approx([2.7, 4.8])
    assert got["items_probs"][1] == pytest.approx([0, 0, 0, 0.2, 0.8])
    assert got["state_expected"] == pytest.approx(3.75)
    assert got["state_probs"] == pytest.approx([0, 0.15, 0.35, 0.1, 0.4])
    assert got["action_expected"] == pytest.approx(2.7) and got["action_probs"] == pytest.approx([0, 0.3, 0.7, 0, 0])
    assert got["items_mass"] == pytest.approx([1.0, 1.0]) and got["state_mass"] == pytest.approx(1.0)


def test_a_draft_in_a_think_block_is_not_taken_for_the_answer():
    draft = tok("1", {"1": 1.0})
    answer = tok("4", {"4": 0.75, "5": 0.25})
    s = stream("<think>", '{"want_to_enter":', draft, "}", "</think>", '{"want_to_enter":', answer, "}")
    text = text_of(s)
    assert parse_entry(text)["entry"] == 4
    got = score_probabilities("entry", text, s, {"entry": 4})
    assert got is not None and got["entry_expected"] == pytest.approx(4.25)


@pytest.mark.parametrize("logprobs", [None, {}, {"content": None}, {"content": []}, "junk", {"refusal": None}])
def test_no_logprobs_gives_nothing(logprobs):
    assert score_probabilities("read", '{"impact": 3}', logprobs, {"read": 3}) is None


def test_a_token_that_does_not_match_the_parsed_score_or_another_key_gives_nothing():
    s = stream('{"impact":', tok("3"), "}")
    assert score_probabilities("read", '{"impact": 3}', s, {"read": 4}) is None  # the reply said 3
    s = stream('{"score":', tok("3"), "}")
    assert parse_read(text_of(s))["read"] == 3
    assert score_probabilities("read", text_of(s), s, {"read": 3}) is None  # scored under another key
    s = stream('{"impact":', tok("3", {"3": 0.0 + 1e-300, "x": 0.99}), "}")
    assert score_probabilities("read", '{"impact": 3}', s, {"read": 3}) is not None  # its own token counts
    s = stream('{"impact":', {"token": "3", "logprob": "bad", "top_logprobs": [{"token": "a", "logprob": -0.1}]}, "}")
    assert score_probabilities("read", '{"impact": 3}', s, {"read": 3}) is None


def test_a_buy_reply_missing_a_score_token_gives_nothing():
    s = stream('{"items":[{"idx":1,"want_to_buy":', tok("3"), '},{"idx":2,"score":', tok("4"), "}]}")
    text = text_of(s)
    assert parse_buy(text, 2)["scores"] == [3, 4]
    assert score_probabilities("buy", text, s, parse_buy(text, 2), 2) is None


@pytest.mark.parametrize("token, digit", [("4", 4), (" 4", 4), ('"4', 4), (":4", 4), ("4,", 4), ("0", 0),
                                          ("44", None), ("a", None), ("", None), (" ", None)])
def test_digit_of(token, digit):
    assert digit_of(token) == digit


def test_distribution_without_digits_is_none():
    assert distribution([("a", -0.1), ("6", -1.0)]) is None
    assert distribution([("2", float("-inf")), ("3", 0.0)]).probs == (0, 0, 1.0, 0, 0)
