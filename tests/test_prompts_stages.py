"""The three questions: message builders, reply schemas, versions and request ids, in every prompt set."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json

import pytest

from conftest import sample_rows, sample_showcase, write_goods, write_pitches
from liveroom.data.inputs import Item, load_pitches, load_showcase
from liveroom.data.personas import DEFAULT_PERSONAS, Persona
from liveroom.prompts import answers, stages
from liveroom.prompts.replies import ReplyError
from liveroom.prompts.stages import (
    PROMPT_SETS,
    STAGES,
    Pitch,
    build_request,
    format_price,
    iter_pitches,
    iter_requests,
    reask_messages,
    request_id,
    stages_of,
    system_message,
)
from liveroom.prompts.wording import DEFAULT_PROMPTS, LEGACY, METHOD, WORDINGS, Wording

MOTHER = next(p for p in DEFAULT_PERSONAS if p.key == "exquisite_mother")
PLAIN = Persona("worker", "夜班保安", "40至50岁", "二线城市", "中低")  # no traits

WHEN = dt.datetime(2024, 9, 30, 21, 30)
PITCH = Pitch(
    index=7, start=WHEN, title="国庆囤货专场，全场包邮", prod="电动牙刷",
    text="宝子们这款牙刷，三档模式,\n续航一个月", items=(
        Item(0, "电动牙刷", 199.0), Item(5, "替换刷头四支装", 59.9), Item(2, "旅行收纳盒", 12.5),
        Item(9, "漱口杯", 1000.0),
    ),
)


def messages(stage: str, pitch: Pitch = PITCH, persona: Persona = MOTHER,
             prompts: str = DEFAULT_PROMPTS) -> tuple[str, str]:
    req = build_request(PROMPT_SETS[prompts][stage], pitch, persona)
    assert [m["role"] for m in req.messages] == ["system", "user"]
    return req.messages[0]["content"], req.messages[1]["content"]


# --------------------------------------------------------------------------- messages

def test_the_prompt_sets():
    assert list(PROMPT_SETS) == list(WORDINGS) == ["method", "legacy"]
    assert DEFAULT_PROMPTS == "method" and STAGES is PROMPT_SETS["method"]
    for name, st in PROMPT_SETS.items():
        assert list(st) == ["entry", "buy", "read"]
        assert all(s.wording is WORDINGS[name] for s in st.values())


@pytest.mark.parametrize("prompts", list(PROMPT_SETS))
@pytest.mark.parametrize("stage", list(STAGES))
def test_system_message_has_persona_and_moment(stage, prompts):
    system, _ = messages(stage, prompts=prompts)
    for attr in (MOTHER.name, MOTHER.age, MOTHER.city, MOTHER.consumption, MOTHER.traits):
        assert attr in system, attr
    assert WORDINGS[prompts].moment(WHEN) in system
    assert "国庆节" in system  # 21:30 on the eve: tomorrow is described
    assert system == system_message(MOTHER, WHEN, WORDINGS[prompts])


def test_system_message_without_traits_has_no_dangling_comma():
    system = system_message(PLAIN, WHEN)
    assert PLAIN.name in system and PLAIN.consumption in system
    assert "，。" not in system and "，，" not in system


def test_system_message_differs_by_persona_and_moment():
    assert system_message(MOTHER, WHEN) != system_message(PLAIN, WHEN)
    assert system_message(MOTHER, WHEN) != system_message(MOTHER, WHEN.replace(hour=10))


@pytest.mark.parametrize("prompts", list(PROMPT_SETS))
def test_entry_message_shows_title_only(prompts):
    _, user = messages("entry", prompts=prompts)
    assert PITCH.title in user
    assert PITCH.prod not in user and "三档模式" not in user and "单价" not in user
    assert "want_to_enter" in user


@pytest.mark.parametrize("prompts", list(PROMPT_SETS))
def test_buy_message_lists_the_showcase(prompts):
    _, user = messages("buy", prompts=prompts)
    assert (PITCH.title in user) == (prompts == "legacy")  # the method's buy does not show the title
    lines = [ln for ln in user.splitlines() if ln.startswith("#")]
    assert lines == [
        "#1 【电动牙刷】 单价【199】元",
        "#2 【替换刷头四支装】 单价【59.9】元",
        "#3 【旅行收纳盒】 单价【12.5】元",
        "#4 【漱口杯】 单价【1000】元",
    ]
    assert "want_to_buy" in user and "4" in user


@pytest.mark.parametrize("price, shown", [
    (199.0, "199"), (1000.0, "1000"), (15700.0, "15700"), (59.9, "59.9"), (12.5, "12.5"),
    (99.99, "99.99"), (0.5, "0.5"), (100.10, "100.1"), (20, "20"),
])
def test_format_price_without_trailing_zero(price, shown):
    assert format_price(price) == shown


@pytest.mark.parametrize("prompts", list(PROMPT_SETS))
def test_read_message_shows_prod_and_transcript(prompts):
    _, user = messages("read", prompts=prompts)
    assert PITCH.prod in user
    assert PITCH.text in user  # newline and comma kept
    assert "impact" in user
    assert PITCH.title not in user


@pytest.mark.parametrize("prompts", list(PROMPT_SETS))
def test_read_transcript_cut_to_1024_characters(prompts):
    text = "甲" * 1000 + "乙" * 24 + "丙" * 500
    _, user = messages("read", dataclasses.replace(PITCH, text=text), prompts=prompts)
    assert "甲" * 1000 + "乙" * 24 in user
    assert "丙" not in user
    assert stages.TEXT_LIMIT == 1024


def test_read_short_transcript_not_padded():
    _, user = messages("read", dataclasses.replace(PITCH, text="就一句话"))
    assert "就一句话" in user


@pytest.mark.parametrize("prompts", list(PROMPT_SETS))
def test_read_empty_transcript(prompts):
    _, user = messages("read", dataclasses.replace(PITCH, text=""), prompts=prompts)
    assert WORDINGS[prompts].no_text in user
    assert "「」" not in user


# --------------------------------------------------------------------------- schemas

def example_reply(schema: dict):
    """The smallest value that a JSON Schema of this project's kind accepts."""
    if "enum" in schema:
        return schema["enum"][-1]
    t = schema["type"]
    if t == "object":
        return {k: example_reply(schema["properties"][k]) for k in schema["required"]}
    if t == "array":
        n = schema.get("minItems", 1)
        item = schema["items"]
        out = []
        for i in range(n):
            v = example_reply(item)
            if isinstance(v, dict) and "idx" in v:
                v["idx"] = item["properties"]["idx"]["enum"][i]
            out.append(v)
        return out
    return {"string": "理由", "integer": 3, "number": 3.0, "boolean": False}[t]


def check_schema_shape(schema: dict) -> None:
    """Valid-looking JSON Schema: known types, required keys declared, nested parts checked."""
    assert schema["type"] in {"object", "array", "string", "integer", "number", "boolean"}
    if schema["type"] == "object":
        assert isinstance(schema["properties"], dict)
        assert set(schema["required"]) <= set(schema["properties"])
        assert len(schema["required"]) == len(set(schema["required"]))
        for sub in schema["properties"].values():
            check_schema_shape(sub)
    if schema["type"] == "array":
        check_schema_shape(schema["items"])
        if "minItems" in schema and "maxItems" in schema:
            assert schema["minItems"] <= schema["maxItems"]
    if "enum" in schema:
        assert schema["enum"] and all(isinstance(v, int) for v in schema["enum"])


@pytest.mark.parametrize("stage, score_path", [
    ("entry", ["want_to_enter"]),
    ("read", ["impact"]),
])
def test_single_score_schemas(stage, score_path):
    schema = STAGES[stage].schema(PITCH)
    json.dumps(schema)  # plain JSON
    check_schema_shape(schema)
    assert set(schema["required"]) == {score_path[0], "reason"}
    assert schema["properties"][score_path[0]]["enum"] == [1, 2, 3, 4, 5]
    assert schema.get("additionalProperties") is False


def test_buy_schema_pins_the_item_count():
    schema = STAGES["buy"].schema(PITCH)
    check_schema_shape(schema)
    arr = schema["properties"]["items"]
    assert schema["required"] == ["items"]
    assert arr["minItems"] == arr["maxItems"] == len(PITCH.items) == 4
    item = arr["items"]
    assert {"idx", "want_to_buy"} <= set(item["required"])
    assert item["properties"]["idx"]["enum"] == [1, 2, 3, 4]
    assert item["properties"]["want_to_buy"]["enum"] == [1, 2, 3, 4, 5]
    two = STAGES["buy"].schema(dataclasses.replace(PITCH, items=PITCH.items[:2]))
    assert two["properties"]["items"]["maxItems"] == 2


@pytest.mark.parametrize("stage", list(STAGES))
def test_a_reply_matching_the_schema_parses(stage):
    st = STAGES[stage]
    reply = example_reply(st.schema(PITCH))
    n = len(PITCH.items) if st.needs_showcase else 0
    got = st.parse(json.dumps(reply, ensure_ascii=False), n)
    assert set(st.features) <= set(got)
    for f in st.features:
        assert 1 <= got[f] <= 5


@pytest.mark.parametrize("stage", ["entry", "read"])
def test_parser_reads_the_required_score_key(stage):
    st = STAGES[stage]
    reply = example_reply(st.schema(PITCH))
    score_key = next(k for k in reply if k != "reason")
    reply[score_key] = 1
    assert st.parse(json.dumps(reply), 0)[st.features[0]] == 1
    del reply[score_key]
    with pytest.raises(ReplyError, match=score_key):
        st.parse(json.dumps(reply), 0)


def test_buy_parser_reads_the_schema_keys():
    reply = example_reply(STAGES["buy"].schema(PITCH))
    reply["items"][0]["want_to_buy"] = 1
    assert STAGES["buy"].parse(json.dumps(reply), 4)["action"] == 1
    del reply["items"][2]
    with pytest.raises(ReplyError, match="#3"):
        STAGES["buy"].parse(json.dumps(reply), 4)


def test_stage_registry():
    assert list(STAGES) == ["entry", "buy", "read"]
    assert STAGES["entry"].features == ("entry",)
    assert STAGES["buy"].features == ("state", "action")
    assert STAGES["read"].features == ("read",)
    assert [s.needs_showcase for s in STAGES.values()] == [False, True, False]
    assert build_request(STAGES["buy"], PITCH, MOTHER).n_items == 4
    assert build_request(STAGES["entry"], PITCH, MOTHER).n_items == 0


def test_the_stages_fill_each_layout_feature_once():
    from liveroom.data.layout import LLM_FEATURES

    filled = [f for s in STAGES.values() for f in s.features]
    assert sorted(filled) == sorted(LLM_FEATURES)


# --------------------------------------------------------------------------- versions

def versions(w: Wording) -> dict[str, str]:
    """The stage versions of a freshly built set (after a monkeypatch, say)."""
    return {name: st.version for name, st in stages_of(w).items()}


@pytest.mark.parametrize("w", [METHOD, LEGACY], ids=lambda w: w.name)
def test_version_is_stable_and_named(w):
    for name, st in PROMPT_SETS[w.name].items():
        assert st.version.startswith(name)
    assert versions(w) == {name: st.version for name, st in PROMPT_SETS[w.name].items()}
    assert len(set(versions(w).values())) == 3


def test_the_sets_have_different_versions():
    for name in STAGES:
        assert PROMPT_SETS["method"][name].version != PROMPT_SETS["legacy"][name].version


@pytest.mark.parametrize("w", [METHOD, LEGACY], ids=lambda w: w.name)
@pytest.mark.parametrize("part, changed", [
    ("entry", {"entry"}),
    ("buy", {"buy"}),
    ("item_line", {"buy"}),
    ("read", {"read"}),
    ("no_text", {"read"}),
    ("system", {"entry", "buy", "read"}),
])
def test_version_changes_with_template_wording(w, part, changed):
    before = versions(w)
    after = versions(dataclasses.replace(w, **{part: getattr(w, part) + "请认真回答。"}))
    assert {n for n in before if after[n] != before[n]} == changed


def test_version_changes_with_the_reask_wording(monkeypatch):
    before = versions(METHOD)
    monkeypatch.setattr(stages, "REASK", stages.REASK + "请认真回答。")
    after = versions(METHOD)
    assert all(after[n] != before[n] for n in before)


# --------------------------------------------------------------------------- request ids

def test_request_id_is_per_stage_index_persona():
    rid = request_id("buy", 12, "town_old")
    assert rid == request_id("buy", 12, "town_old")
    others = {request_id("read", 12, "town_old"), request_id("buy", 13, "town_old"),
              request_id("buy", 12, "town_youth"), request_id("buy", 1, "2town_old")}
    assert rid not in others and len(others) == 4
    req = build_request(STAGES["buy"], PITCH, MOTHER)
    assert req.id == request_id("buy", 7, "exquisite_mother")
    assert (req.stage, req.index, req.persona) == ("buy", 7, "exquisite_mother")


def _requests(tmp_path, rows, name):
    df = load_pitches(write_pitches(tmp_path, rows, name=name))
    sc = load_showcase(write_goods(tmp_path, sample_showcase()))
    reqs = list(iter_requests(iter_pitches(df, sc), list(STAGES.values()), DEFAULT_PERSONAS))
    return {r.id: (r.messages, r.schema) for r in reqs}, [r.id for r in reqs]


def test_ids_survive_reordering_the_input(tmp_path):
    rows = sample_rows()
    a, order_a = _requests(tmp_path, rows, "a.csv")
    b, order_b = _requests(tmp_path, [rows[2], rows[0], rows[3], rows[1]], "b.csv")
    assert len(a) == len(order_a) == 4 * 3 * 8  # ids unique
    assert a == b
    assert order_a != order_b  # file order is followed


def test_iter_requests_order_and_laziness():
    gen = iter_requests(iter([PITCH]), [STAGES["entry"], STAGES["read"]], DEFAULT_PERSONAS[:2])
    first = next(gen)
    assert (first.stage, first.persona) == ("entry", "Z")
    rest = [(r.stage, r.persona) for r in gen]
    assert rest == [("entry", "exquisite_mother"), ("read", "Z"), ("read", "exquisite_mother")]


def test_iter_pitches_attaches_showcase(pitches_csv, goods_json):
    pitches = list(iter_pitches(load_pitches(pitches_csv), load_showcase(goods_json)))
    assert [p.index for p in pitches] == [10, 11, 12, 13]
    assert pitches[0].start == dt.datetime(2024, 1, 1, 6, 55)
    assert [it.name for it in pitches[0].items] == ["真丝睡衣两件套", "羊绒围巾"]
    assert pitches[2].text == ""
    assert list(iter_pitches(load_pitches(pitches_csv)))[0].items == ()


# --------------------------------------------------------------------------- re-ask

def test_reask_appends_reply_and_reason():
    original = build_request(STAGES["entry"], PITCH, MOTHER).messages
    snapshot = json.loads(json.dumps(original))
    bad = "我觉得会进去看看"
    out = reask_messages(original, bad, "no JSON object found in the reply")
    assert out[:2] == snapshot
    assert out[2] == {"role": "assistant", "content": bad}
    assert out[3]["role"] == "user" and "no JSON object found in the reply" in out[3]["content"]
    assert len(out) == 4
    assert original == snapshot  # not changed in place
    out[0]["content"] = "changed"
    assert original[0]["content"] == snapshot[0]["content"]


def test_reask_twice_keeps_the_whole_conversation():
    first = reask_messages([{"role": "user", "content": "问"}], "答一", "原因一")
    second = reask_messages(first, "答二", "原因二")
    assert [m["content"] for m in second if m["role"] == "assistant"] == ["答一", "答二"]
    assert "原因二" in second[-1]["content"]


def test_version_changes_with_the_schema(monkeypatch):
    before = versions(METHOD)
    monkeypatch.setattr(answers, "SCORE", {"type": "integer", "enum": [1, 2, 3]})
    after = versions(METHOD)
    assert all(after[n] != before[n] for n in before)


@pytest.mark.parametrize("w", [METHOD, LEGACY], ids=lambda w: w.name)
def test_version_changes_with_the_moment_wording(w):
    before = versions(w)
    after = versions(dataclasses.replace(w, moment=lambda when: w.moment(when) + "天气晴。"))
    assert all(after[n] != before[n] for n in before)
