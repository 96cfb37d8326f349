"""The audience personas: the eight defaults and user persona files."""

from __future__ import annotations

import dataclasses
import json

import pytest

from conftest import PERSONA_ORDER
from liveroom.data import layout
from liveroom.data.personas import (
    DEFAULT_PERSONAS,
    LEGACY_PERSONAS,
    PERSONA_KEYS,
    Persona,
    load_personas,
    personas_json,
)
from liveroom.errors import InputError

# the segments of the reference, in its fixed order
REFERENCE_NAMES = ("Z世代", "精致妈妈", "新锐白领", "资深中产", "都市蓝领", "都市银发", "小镇青年", "小镇中老年")


def test_default_keys_in_reference_order():
    assert PERSONA_KEYS == PERSONA_ORDER
    assert tuple(p.key for p in DEFAULT_PERSONAS) == PERSONA_ORDER


def test_default_names_are_the_chinese_segments():
    assert tuple(p.name for p in DEFAULT_PERSONAS) == REFERENCE_NAMES


def test_default_attributes_follow_the_reference_table():
    by_key = {p.key: p for p in DEFAULT_PERSONAS}
    for p in DEFAULT_PERSONAS:
        assert p.age and p.city and p.consumption, p
    # city tier: small-town segments live in tier 4 and below, the rest in tiers 1-3
    for k in ("town_youth", "town_old"):
        assert "四线" in by_key[k].city
    for k in PERSONA_ORDER[:6]:
        assert "一至三线" in by_key[k].city
    # age bands
    assert "18" in by_key["Z"].age and "24" in by_key["Z"].age
    assert "50" in by_key["city_old"].age
    assert "36" in by_key["deep_middle"].age and "50" in by_key["deep_middle"].age
    # other traits
    assert "女" in by_key["exquisite_mother"].traits and "已婚" in by_key["exquisite_mother"].traits
    assert "未婚" in by_key["new_white"].traits
    assert by_key["Z"].traits == ""
    # consumption worded as the method's table: "mid-low, or not noticeably rising", "lower"
    assert by_key["city_blue"].consumption == "中低，或没有明显上升"
    assert by_key["town_old"].consumption == by_key["town_youth"].consumption == "较低"


def test_legacy_personas_keep_the_first_wording():
    assert [p.key for p in LEGACY_PERSONAS] == list(PERSONA_ORDER)
    changed = {p.key: p.consumption for p, d in zip(LEGACY_PERSONAS, DEFAULT_PERSONAS) if p != d}
    assert changed == {"city_blue": "中低，且没有上升趋势", "town_youth": "低", "town_old": "低"}
    for p, d in zip(LEGACY_PERSONAS, DEFAULT_PERSONAS):
        assert (p.key, p.name, p.age, p.city, p.traits) == (d.key, d.name, d.age, d.city, d.traits)


def test_personas_are_immutable():
    with pytest.raises(dataclasses.FrozenInstanceError):
        DEFAULT_PERSONAS[0].name = "别的"  # type: ignore[misc]


def test_layout_columns_follow_persona_order():
    assert layout.WATCH_TARGETS == tuple(f"prop_{k}_watch" for k in PERSONA_ORDER)
    assert layout.PAY_TARGETS == tuple(f"prop_{k}_pay" for k in PERSONA_ORDER)
    names = layout.llm_feature_names()
    assert len(names) == 32
    assert names[:8] == [f"entry_{k}" for k in PERSONA_ORDER]
    assert names[8] == "action_Z" and names[16] == "read_Z" and names[24] == "state_Z"
    assert len(layout.input_names()) == 40 and len(layout.TARGET_COLUMNS) == 20


# --------------------------------------------------------------------------- persona files

def _write(tmp_path, data, raw: str | None = None):
    path = tmp_path / "personas.json"
    path.write_text(raw if raw is not None else json.dumps(data, ensure_ascii=False), encoding="utf-8")
    return path


def _rec(key="student", **over):
    rec = {"key": key, "name": "大学生", "age": "18至22岁", "city": "一线城市", "consumption": "中低", "traits": "住校"}
    rec.update(over)
    return rec


def test_load_valid_file(tmp_path):
    recs = [_rec(), {k: v for k, v in _rec("retiree_2", name="退休教师", age="60岁以上").items() if k != "traits"}]
    got = load_personas(_write(tmp_path, recs))
    assert got == (
        Persona("student", "大学生", "18至22岁", "一线城市", "中低", "住校"),
        Persona("retiree_2", "退休教师", "60岁以上", "一线城市", "中低", ""),  # traits optional
    )


def test_load_accepts_str_path_and_round_trips_defaults(tmp_path):
    path = _write(tmp_path, personas_json(DEFAULT_PERSONAS))
    assert load_personas(str(path)) == DEFAULT_PERSONAS


def _error(tmp_path, data=None, raw=None) -> str:
    path = _write(tmp_path, data, raw)
    with pytest.raises(InputError) as e:
        load_personas(path)
    msg = str(e.value)
    assert "\n" not in msg
    assert "personas.json" in msg
    return msg


def test_not_json(tmp_path):
    msg = _error(tmp_path, raw='[\n  {"key": "a",\n  oops\n]')
    assert "JSON" in msg and "line 3" in msg


@pytest.mark.parametrize("data", [{"key": "a"}, "a", 3, []])
def test_not_a_non_empty_list(tmp_path, data):
    assert "list" in _error(tmp_path, data)


def test_record_not_an_object(tmp_path):
    msg = _error(tmp_path, [_rec(), ["student", "大学生"]])
    assert "persona 2" in msg and "object" in msg


@pytest.mark.parametrize("field", ["key", "name", "age", "city", "consumption"])
def test_missing_field(tmp_path, field):
    rec = _rec()
    del rec[field]
    msg = _error(tmp_path, [_rec("first"), rec])
    assert "persona 2" in msg and field in msg


@pytest.mark.parametrize("value", ["", "   ", 3, None])
def test_empty_or_non_text_field(tmp_path, value):
    msg = _error(tmp_path, [_rec(name=value)])
    assert "persona 1" in msg and "name" in msg


@pytest.mark.parametrize("key", ["1st", "town-old", "小镇", "a b", "_x"])
def test_bad_key(tmp_path, key):
    msg = _error(tmp_path, [_rec(key)])
    assert repr(key) in msg and "persona 1" in msg


def test_duplicate_key(tmp_path):
    msg = _error(tmp_path, [_rec("same"), _rec("other"), _rec("same", name="另一个")])
    assert "persona 3" in msg and "duplicate" in msg and "'same'" in msg


def test_unknown_field(tmp_path):
    msg = _error(tmp_path, [_rec(gender="女", hobby="追剧")])
    assert "unknown" in msg and "gender" in msg and "hobby" in msg


def test_missing_file(tmp_path):
    with pytest.raises(InputError) as e:
        load_personas(tmp_path / "none.json")
    assert "none.json" in str(e.value)


@pytest.mark.parametrize("traits", [5, ["女性"], None])
def test_traits_must_be_text(tmp_path, traits):
    msg = _error(tmp_path, [_rec(traits=traits)])
    assert "persona 1" in msg and "traits" in msg
