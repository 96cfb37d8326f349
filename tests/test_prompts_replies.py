"""Parsing the replies real models give: JSON in prose, fences, Python literals, key variants."""

from __future__ import annotations

import pytest

from liveroom.prompts.replies import ReplyError, as_score, extract_json, pick
from liveroom.prompts.stages import parse_buy, parse_entry, parse_read

# --------------------------------------------------------------------------- finding the JSON

ENTRY_4 = {"want_to_enter": 4, "reason": "正好有空"}


@pytest.mark.parametrize("text", [
    '{"want_to_enter": 4, "reason": "正好有空"}',
    '  \n{"want_to_enter": 4, "reason": "正好有空"}\n\n',
    '```json\n{"want_to_enter": 4, "reason": "正好有空"}\n```',
    '```\n{"want_to_enter": 4, "reason": "正好有空"}\n```',
    '好的，我的回答如下：\n```json\n{"want_to_enter": 4, "reason": "正好有空"}\n```\n希望对你有帮助！',
    '我的评分是 {"want_to_enter": 4, "reason": "正好有空"}',
    '{"want_to_enter": 4, "reason": "正好有空"} 以上就是我的判断。',
    '思考一下……\n{"want_to_enter": 4, "reason": "正好有空"}\n（仅供参考）',
    "{'want_to_enter': 4, 'reason': '正好有空'}",
    "回答：{'want_to_enter': 4, 'reason': '正好有空'}。",
])
def test_extracts_the_object(text):
    assert extract_json(text) == ENTRY_4


def test_bare_list():
    assert extract_json('[{"idx": 1, "want_to_buy": 3}]') == [{"idx": 1, "want_to_buy": 3}]
    assert extract_json('评分：\n[{"idx": 1, "want_to_buy": 3}]\n完毕') == [{"idx": 1, "want_to_buy": 3}]


def test_python_literals_true_false_none():
    assert extract_json("{'ok': True, 'no': False, 'nothing': None}") == {"ok": True, "no": False, "nothing": None}


@pytest.mark.parametrize("text, reason", [
    ('看法：{"reason": "价格}有点{高", "want_to_enter": 2}', "价格}有点{高"),
    ('{"reason": "他说\\"别买}\\"", "want_to_enter": 2} 结束', '他说"别买}"'),
    ("{'reason': '括号 ] 和 } 都在', 'want_to_enter': 2}", "括号 ] 和 } 都在"),
    ('{"reason": "it\'s [ok", "want_to_enter": 2}', "it's [ok"),
])
def test_braces_inside_strings_do_not_confuse_extraction(text, reason):
    assert extract_json(text) == {"reason": reason, "want_to_enter": 2}


def test_skips_bracketed_prose_before_the_json():
    assert extract_json('格式应为 {want_to_enter}，[注] 我的答案：{"want_to_enter": 5}') == {"want_to_enter": 5}


def test_first_value_wins():
    assert extract_json('{"impact": 2} 或者 {"impact": 4}') == {"impact": 2}


@pytest.mark.parametrize("text, reason", [
    ("", "empty"),
    ("   \n\t ", "empty"),
    ("我觉得还不错，会进去看看。", "no JSON"),
    ("4", "no JSON"),
    ('"只是一个字符串"', "no JSON"),
    ('{"want_to_enter": 4', "no JSON"),   # cut off
])
def test_rejects_with_short_reason(text, reason):
    with pytest.raises(ReplyError) as e:
        extract_json(text)
    assert reason in str(e.value)
    assert "\n" not in str(e.value) and len(str(e.value)) < 100


def test_code_in_a_python_literal_is_not_executed(tmp_path):
    marker = tmp_path / "ran"
    payload = f"__import__('pathlib').Path({str(marker)!r}).touch()"
    for text in (
        f"{{'want_to_enter': {payload}}}",
        f"{{'reason': 'x', 'want_to_enter': 3, 'x': {payload}}}",
        f"[{payload}]",
        f"```python\n{{'want_to_enter': {payload}}}\n```",
    ):
        with pytest.raises(ReplyError):
            extract_json(text)
        with pytest.raises(ReplyError):
            parse_entry(text)
    assert not marker.exists()


def test_os_system_string_rejected():
    with pytest.raises(ReplyError):
        parse_entry("{'want_to_enter': __import__('os').system('x')}")


# --------------------------------------------------------------------------- scores

@pytest.mark.parametrize("value, expected", [(4, 4), (1, 1), (5, 5), (4.0, 4), ("4", 4), (" 3 ", 3), ("2.0", 2)])
def test_as_score_accepts(value, expected):
    got = as_score(value, "impact")
    assert got == expected and type(got) is int


@pytest.mark.parametrize("value", [0, 6, -1, 3.5, "high", "", "4分", True, False, None, [4], {"v": 4},
                                   float("nan"), float("inf"), "inf", "1e400", 10**30])
def test_as_score_rejects_naming_the_key(value):
    with pytest.raises(ReplyError) as e:
        as_score(value, "impact")
    assert "'impact'" in str(e.value) and "1..5" in str(e.value)


def test_pick_first_present_key_and_names_the_main_key():
    assert pick({"want": 2, "score": 5}, ("want_to_buy", "want", "score")) == 2
    with pytest.raises(ReplyError) as e:
        pick({"rating_x": 2}, ("want_to_buy", "want"))
    assert str(e.value) == "missing key 'want_to_buy'"


# --------------------------------------------------------------------------- entry and read

@pytest.mark.parametrize("text", [
    '{"want_to_enter": 4, "reason": "有空"}',
    '{"want_to_enter": "4", "reason": "有空"}',
    '{"want_to_enter": 4.0}',
    '[{"want_to_enter": 4}]',
    '{"want": 4, "reason": "有空"}',
    "```json\n{'want_to_enter': 4}\n```",
])
def test_parse_entry(text):
    assert parse_entry(text) == {"entry": 4}


@pytest.mark.parametrize("text", ['{"impact": 2, "reason": "夸大其词"}', '{"impact": "2"}', "影响：{'impact': 2.0}"])
def test_parse_read(text):
    assert parse_read(text) == {"read": 2}


@pytest.mark.parametrize("parse, text, reason", [
    (parse_entry, '{"reason": "没说分数"}', "missing key 'want_to_enter'"),
    (parse_read, '{"reason": "没说分数"}', "missing key 'impact'"),
    (parse_entry, '{"want_to_enter": 0}', "'want_to_enter' must be an integer 1..5"),
    (parse_entry, '{"want_to_enter": 6}', "'want_to_enter' must be an integer 1..5"),
    (parse_entry, '{"want_to_enter": 3.5}', "'want_to_enter' must be an integer 1..5"),
    (parse_entry, '{"want_to_enter": "high"}', "'want_to_enter' must be an integer 1..5"),
    (parse_entry, '{"want_to_enter": true}', "'want_to_enter' must be an integer 1..5"),
    (parse_read, '{"impact": 0}', "'impact' must be an integer 1..5"),
    (parse_read, '{"impact": null}', "'impact' must be an integer 1..5"),
    (parse_entry, "", "empty reply"),
    (parse_entry, "会进去看看", "no JSON"),
    (parse_entry, '[{"want_to_enter": 4}, {"want_to_enter": 2}]', "one JSON object"),
    (parse_read, "[3]", "one JSON object"),
])
def test_entry_and_read_reject_with_reason(parse, text, reason):
    with pytest.raises(ReplyError) as e:
        parse(text)
    assert reason in str(e.value)


# --------------------------------------------------------------------------- buy

def items(*scores, key="want_to_buy", start=1, idx=lambda i: i):
    return [{"idx": idx(i), key: s, "reason": "理由"} for i, s in enumerate(scores, start)]


def test_buy_state_is_mean_and_action_is_first_item():
    import json
    got = parse_buy(json.dumps({"items": items(5, 2, 3, 4)}), 4)
    assert got["scores"] == [5, 2, 3, 4]
    assert got["state"] == pytest.approx(3.5)
    assert got["action"] == 5


def test_buy_orders_by_idx_not_by_position():
    text = '[{"idx": 3, "want_to_buy": 1}, {"idx": 1, "want_to_buy": 5}, {"idx": 2, "want_to_buy": 3}]'
    got = parse_buy(text, 3)
    assert got["scores"] == [5, 3, 1]
    assert got["action"] == 5
    assert got["state"] == pytest.approx(3.0)


@pytest.mark.parametrize("text", [
    '{"items": [{"idx": 1, "want_to_buy": 4}, {"idx": 2, "want_to_buy": 2}]}',
    '[{"idx": 1, "want_to_buy": 4}, {"idx": 2, "want_to_buy": 2}]',
    '[{"idx": 1, "want": 4}, {"idx": 2, "want": 2}]',
    '{"scores": [{"idx": 1, "want_to_buy": 4}, {"idx": 2, "want_to_buy": 2}]}',
    '{"商品评分": [{"idx": 1, "want_to_buy": 4}, {"idx": 2, "want_to_buy": 2}], "总结": "还行"}',
    '[{"idx": "#1", "want_to_buy": "4"}, {"idx": "#2", "want_to_buy": 2.0}]',
    '[{"idx": "1", "want_to_buy": 4}, {"idx": " 2 ", "want_to_buy": 2}]',
    '[{"idx": 0, "want_to_buy": 4}, {"idx": 1, "want_to_buy": 2}]',            # numbered from 0
    '[{"want_to_buy": 4, "reason": "好"}, {"want_to_buy": 2, "reason": "贵"}]',  # no idx: by position
    "```json\n{'items': [{'idx': 1, 'want_to_buy': 4}, {'idx': 2, 'want_to_buy': 2}]}\n```",
    '好的：\n```json\n[{"idx": 1, "want_to_buy": 4, "reason": "便宜}"}, {"idx": 2, "want_to_buy": 2}]\n```\n谢谢',
])
def test_buy_reply_shapes(text):
    assert parse_buy(text, 2) == {"scores": [4, 2], "state": 3.0, "action": 4}


def test_buy_single_item_as_bare_object():
    assert parse_buy('{"idx": 1, "want_to_buy": 3, "reason": "一般"}', 1)["scores"] == [3]


def test_buy_ignores_extra_items_beyond_the_showcase():
    text = '[{"idx": 1, "want_to_buy": 4}, {"idx": 2, "want_to_buy": 2}, {"idx": 7, "want_to_buy": 1}]'
    assert parse_buy(text, 2)["scores"] == [4, 2]


def test_buy_missing_item_names_it():
    text = '{"items": [{"idx": 1, "want_to_buy": 4}, {"idx": 3, "want_to_buy": 2}]}'
    with pytest.raises(ReplyError) as e:
        parse_buy(text, 3)
    assert "#2" in str(e.value) and "#1" not in str(e.value) and "#3" not in str(e.value)


def test_buy_too_few_positional_items_names_the_rest():
    with pytest.raises(ReplyError) as e:
        parse_buy('[{"want_to_buy": 4}]', 3)
    assert "#2" in str(e.value) and "#3" in str(e.value)


@pytest.mark.parametrize("score", ["0", "6", "3.5", '"high"', "true", "null"])
def test_buy_bad_score_names_the_key(score):
    text = '[{"idx": 1, "want_to_buy": 4}, {"idx": 2, "want_to_buy": %s}]' % score
    with pytest.raises(ReplyError) as e:
        parse_buy(text, 2)
    assert "'want_to_buy'" in str(e.value)


@pytest.mark.parametrize("text, reason", [
    ('[{"idx": 1, "reason": "没打分"}, {"idx": 2, "want_to_buy": 2}]', "missing key 'want_to_buy'"),
    ('[{"idx": "第一件", "want_to_buy": 4}]', "'idx'"),
    ('{"a": [1], "b": [2]}', "list of items"),
    ('{"items": []}', "item objects"),
    ('{"items": [4, 2]}', "item objects"),
    ("", "empty reply"),
    ("都挺好的", "no JSON"),
])
def test_buy_rejects(text, reason):
    with pytest.raises(ReplyError) as e:
        parse_buy(text, 2)
    assert reason in str(e.value)
