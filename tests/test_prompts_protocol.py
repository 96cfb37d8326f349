"""The method's prompt protocol, point by point, on the rendered requests of the default set.

Each test names the point of docs/PROTOCOL.md it checks. The first wording
(``--prompts legacy``) is checked to render exactly as before there were sets,
and a run made before sets resumes with the same command.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
import subprocess

import pytest

import kit
from conftest import Sim
from liveroom.async_client.run_dir import ManifestMismatch, RunDir
from liveroom.cli import batch_main
from liveroom.data.inputs import Item
from liveroom.data.personas import DEFAULT_PERSONAS, LEGACY_PERSONAS, personas_json
from liveroom.errors import InputError
from liveroom.prompts.replies import ReplyError
from liveroom.prompts.stages import PROMPT_SETS, STAGES, TEXT_LIMIT, Pitch, build_request, iter_requests
from liveroom.prompts.wording import DEFAULT_PROMPTS, WORDINGS
from liveroom.scoring.plan import ModelParams, choose_prompts, make_plan

ITEMS = (Item(0, "电动牙刷", 199.0), Item(5, "替换刷头四支装", 59.9), Item(2, "旅行收纳盒", 12.5))
PITCH = Pitch(3, dt.datetime(2024, 3, 12, 10, 0), "国庆囤货专场，全场包邮", "电动牙刷", "宝子们这款牙刷，三档模式", ITEMS)
BY_KEY = {p.key: p for p in DEFAULT_PERSONAS}


def user(stage: str, pitch: Pitch = PITCH) -> str:
    return build_request(STAGES[stage], pitch, DEFAULT_PERSONAS[0]).messages[1]["content"]


def system(when: dt.datetime, persona: str = "Z") -> str:
    return build_request(STAGES["entry"], Pitch(0, when, "t", "p", "x"), BY_KEY[persona]).messages[0]["content"]


def examples(text: str) -> list[dict]:
    """The example replies: the JSON lines after 示例."""
    tail = text.split("示例：", 1)[1]
    return [json.loads(line) for line in tail.strip().splitlines()]


def labelled(text: str) -> dict[int, str]:
    """The scale levels the message names, ``N = words``."""
    return {int(n): words for n, words in re.findall(r"(\d) = ([^，。）(（]+)", text)}


def test_the_method_set_is_the_default():
    assert DEFAULT_PROMPTS == "method"
    assert all(s.wording is WORDINGS["method"] for s in STAGES.values())


# --------------------------------------------------------------------------- 1. examples at the ends

def test_1_example_scores_are_at_the_scale_ends():
    assert [e["want_to_enter"] for e in examples(user("entry"))] == [1, 5]
    assert sorted(i["want_to_buy"] for e in examples(user("buy")) for i in e["items"]) == [1, 3, 5]
    assert sorted(e["impact"] for e in examples(user("read"))) == [2, 3, 5]


def test_1_example_reasons_are_short_and_every_example_parses():
    for stage in STAGES:
        for e in examples(user(stage)):
            reasons = [i["reason"] for i in e["items"]] if "items" in e else [e["reason"]]
            assert all(0 < len(r) <= 20 for r in reasons)
    buy = examples(user("buy"))[0]
    assert STAGES["buy"].parse(json.dumps(buy, ensure_ascii=False), 3)["scores"] == [5, 3, 1]


# --------------------------------------------------------------------------- 2. only the ends labelled

def test_2_only_the_scale_ends_are_labelled():
    assert sorted(labelled(user("entry"))) == [1, 5]
    assert sorted(labelled(user("buy"))) == [1, 5]
    read = labelled(user("read"))
    assert sorted(read) == [1, 3, 5]
    assert "没有变化" in read[3]


# --------------------------------------------------------------------------- 3. the streamer

def test_3_entry_assumes_a_credible_popular_streamer_not_a_basis_for_deciding():
    text = user("entry")
    assert "主播真实可信、人气很高" in text
    assert "这一点不作为你是否进入的依据" in text
    assert "忽略主播的知名度" not in text
    for stage in ("buy", "read"):
        assert "人气" not in user(stage)


# --------------------------------------------------------------------------- 4. the moment

NUDGES = ("大多数人", "还在休息", "需要上班上学", "正是", "早上", "上午", "中午", "下午", "晚上", "深夜")


def test_4_the_moment_is_date_weekday_time_and_the_kind_of_day():
    assert system(dt.datetime(2024, 3, 12, 10, 0)).endswith("现在是2024年3月12日 星期二 10:00。今天是工作日。")
    assert system(dt.datetime(2024, 3, 9, 15, 30)).endswith("现在是2024年3月9日 星期六 15:30。今天是休息日。")
    assert system(dt.datetime(2024, 10, 3, 12, 0)).endswith("今天是国庆节假期，法定节假日。")
    assert system(dt.datetime(2024, 2, 4, 14, 0)).endswith("今天是调休上班日（因春节调休）。")


def test_4_before_six_it_is_early_morning_and_the_coming_day_is_described():
    text = system(dt.datetime(2024, 2, 4, 3, 10))
    assert text.endswith("现在是2024年2月4日 星期日 03:10，凌晨。天亮后的今天是调休上班日（因春节调休）。")
    assert "明天" not in text
    assert "凌晨" not in system(dt.datetime(2024, 2, 4, 6, 0))


def test_4_from_21_tomorrow_is_described_with_its_date_and_kind():
    text = system(dt.datetime(2024, 9, 30, 21, 0))
    assert text.endswith("今天是工作日。明天是2024年10月1日 星期二，国庆节假期，法定节假日。")
    assert system(dt.datetime(2024, 3, 10, 23, 40)).endswith("明天是2024年3月11日 星期一，工作日。")
    assert "明天" not in system(dt.datetime(2024, 9, 30, 20, 59))


@pytest.mark.parametrize("day", [dt.date(2024, 3, 12), dt.date(2024, 3, 9), dt.date(2024, 10, 1), dt.date(2024, 2, 4)])
def test_4_no_nudges_at_any_hour(day):
    for hour in range(24):
        text = system(dt.datetime.combine(day, dt.time(hour, 30)))
        assert not [n for n in NUDGES if n in text], (hour, text)


# --------------------------------------------------------------------------- 5. buy

def test_5_buy_does_not_show_the_title_and_enters_even_if_unwilling():
    text = user("buy")
    assert PITCH.title not in text and "【国庆" not in text
    assert "假设你已经进入了这个直播间，即使你觉得自己其实不会想进入" in text
    assert [ln for ln in text.splitlines() if ln.startswith("#")] == [
        "#1 【电动牙刷】 单价【199】元", "#2 【替换刷头四支装】 单价【59.9】元", "#3 【旅行收纳盒】 单价【12.5】元"]


def test_5_buy_keeps_the_wrapped_reply_the_item_count_and_the_scale():
    text = user("buy")
    assert '{"items": [{"idx": 编号, "want_to_buy": 分数' in text and "共3项" in text
    schema = STAGES["buy"].schema(PITCH)
    assert schema["required"] == ["items"]
    assert schema["properties"]["items"]["minItems"] == schema["properties"]["items"]["maxItems"] == 3
    parse = STAGES["buy"].parse
    with pytest.raises(ReplyError, match="#3"):
        parse('{"items": [{"idx": 1, "want_to_buy": 2}, {"idx": 2, "want_to_buy": 2}]}', 3)
    with pytest.raises(ReplyError, match="1..5"):
        parse('{"items": [{"idx": 1, "want_to_buy": 0}, {"idx": 2, "want_to_buy": 6}, {"idx": 3, "want_to_buy": 1}]}', 3)
    for stage in ("entry", "read"):
        with pytest.raises(ReplyError, match="1..5"):
            STAGES[stage].parse('{"want_to_enter": 0, "impact": 0}', 0)


# --------------------------------------------------------------------------- 6. persona wording

def test_6_persona_wording_follows_the_table():
    assert "消费水平中低，或没有明显上升。" in system(PITCH.start, "city_blue")
    for key in ("town_youth", "town_old"):
        assert "消费水平较低" in system(PITCH.start, key)
    assert "且没有上升趋势" not in system(PITCH.start, "city_blue")


# --------------------------------------------------------------------------- the rest stays

def test_the_transcript_is_cut_at_1024_characters():
    text = user("read", Pitch(3, PITCH.start, "t", "p", "甲" * TEXT_LIMIT + "乙", ITEMS))
    assert "甲" * TEXT_LIMIT in text and "乙" not in text


#: rendered messages, schemas and versions of the first wording, computed from the code
#: before there were prompt sets (commit 738f3b3), for the pitches of legacy_digest()
LEGACY_DIGEST = "34f6dfd610c6aa6643ec2fb5e067abba068cc4e4a36ac9620e1d213910769c28"
LEGACY_VERSIONS = {"entry": "entry-e30a6ee3", "buy": "buy-fd90a944", "read": "read-1be3bc55"}


def legacy_digest() -> tuple[int, str]:
    whens = [dt.datetime(2024, 2, 4, 3, 0), dt.datetime(2024, 3, 12, 10, 0), dt.datetime(2024, 9, 30, 21, 30),
             dt.datetime(2024, 3, 9, 23, 59)]
    text = "宝子们这款牙刷，三档模式,\n续航一个月" * 80
    pitches = [Pitch(i, w, "国庆囤货专场，全场包邮", "电动牙刷", text, ITEMS) for i, w in enumerate(whens)]
    pitches.append(Pitch(9, whens[1], "标题", "产品", "", ITEMS[:1]))
    reqs = [dict(id=r.id, m=r.messages, s=r.schema, n=r.n_items)
            for r in iter_requests(pitches, list(PROMPT_SETS["legacy"].values()), LEGACY_PERSONAS)]
    return len(reqs), hashlib.sha256(json.dumps(reqs, ensure_ascii=False, sort_keys=True).encode()).hexdigest()


def test_the_legacy_set_renders_exactly_as_before():
    assert legacy_digest() == (120, LEGACY_DIGEST)
    assert {n: s.version for n, s in PROMPT_SETS["legacy"].items()} == LEGACY_VERSIONS
    assert {n: s.version for n, s in STAGES.items()}.keys() == LEGACY_VERSIONS.keys()
    assert not {s.version for s in STAGES.values()} & set(LEGACY_VERSIONS.values())


# --------------------------------------------------------------------------- the set of a run

def _inputs(tmp_path):
    return tuple(str(p) for p in kit.make_inputs(tmp_path, 2))


def _plan(tmp_path, prompts=None, run_dir=None):
    pitches, goods = _inputs(tmp_path)
    return make_plan(pitches, goods, "entry,buy,read", None, ModelParams(), "https://api.example.com/v1",
                     prompts, run_dir)


def test_a_new_run_is_asked_with_the_method_set_and_names_it(tmp_path):
    m = _plan(tmp_path, run_dir=tmp_path / "new").manifest.to_json()
    assert m["prompts"] == "method"
    assert m["groups"] == {n: s.version for n, s in PROMPT_SETS["method"].items()}
    assert m["personas"] == personas_json(DEFAULT_PERSONAS)


def test_the_legacy_set_writes_the_manifest_of_before(tmp_path):
    plan = _plan(tmp_path, "legacy")
    manifest = plan.manifest.to_json()
    assert "prompts" not in manifest
    assert manifest["groups"] == LEGACY_VERSIONS
    assert manifest["personas"] == personas_json(LEGACY_PERSONAS)
    assert all(s.wording is WORDINGS["legacy"] for s in plan.stages)


def test_a_run_made_before_sets_resumes_with_the_same_command(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    old = _plan(tmp_path, "legacy").manifest.to_json()  # what the code before sets wrote
    (run / "manifest.json").write_text(json.dumps(old, ensure_ascii=False))
    assert choose_prompts(None, run) == "legacy"
    plan = _plan(tmp_path, None, run)
    assert RunDir(run).check(plan.manifest).to_json() == old
    with pytest.raises(ManifestMismatch, match="groups.entry"):
        RunDir(run).check(_plan(tmp_path, "method", run).manifest)


def test_a_method_run_resumes_with_the_method_set(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "manifest.json").write_text(json.dumps(_plan(tmp_path).manifest.to_json()))
    assert choose_prompts(None, run) == "method"
    with pytest.raises(ManifestMismatch, match="prompts"):
        RunDir(run).check(_plan(tmp_path, "legacy", run).manifest)


def test_unknown_prompt_sets_are_refused(tmp_path):
    with pytest.raises(InputError, match="--prompts: unknown prompt set 'v9'; choose from method, legacy"):
        choose_prompts("v9")
    run = tmp_path / "run"
    run.mkdir()
    (run / "manifest.json").write_text(json.dumps({"prompts": "future"}))
    with pytest.raises(InputError, match="prompt set 'future'"):
        choose_prompts(None, run)


def test_bin_score_asks_the_set_named_and_resumes_it_without_the_flag(tmp_path):
    pitches, goods = _inputs(tmp_path)
    run = tmp_path / "run"
    sim = Sim()
    try:
        def score(*flags: str) -> subprocess.CompletedProcess:
            return kit.score(pitches, goods, run, sim.url, "--stages", "entry", *flags)

        first = score("--prompts", "legacy")
        assert first.returncode == 0, first.stderr
        manifest = json.loads((run / "manifest.json").read_text())
        assert "prompts" not in manifest and manifest["groups"] == {"entry": LEGACY_VERSIONS["entry"]}
        again = score("--stages", "entry,read")  # no --prompts: the run's set, extended by a stage
        assert again.returncode == 0, again.stderr
        manifest = json.loads((run / "manifest.json").read_text())
        assert manifest["groups"] == {"entry": LEGACY_VERSIONS["entry"], "read": LEGACY_VERSIONS["read"]}
        refused = score("--prompts", "method")
        assert refused.returncode == 2 and "groups.entry" in refused.stderr
    finally:
        sim.stop()


def test_bin_batch_prepare_takes_the_same_flag(tmp_path, monkeypatch):
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    pitches, goods = _inputs(tmp_path)
    run = tmp_path / "run"
    argv = ["prepare", "--pitches", pitches, "--goods", goods, "--out", str(run)]
    assert batch_main([*argv, "--prompts", "legacy"]) == 0
    manifest = json.loads((run / "manifest.json").read_text())
    assert "prompts" not in manifest and manifest["groups"] == LEGACY_VERSIONS
    body = json.loads((run / "batch" / "requests-0001.jsonl").read_text().splitlines()[0])["body"]
    assert "请忽略主播的知名度" in body["messages"][1]["content"]  # the first entry request, legacy wording
    assert batch_main(argv) == 0  # resumed without the flag: the run's set
    assert json.loads((run / "manifest.json").read_text()) == manifest
