"""A pitch asks the same questions whichever way it comes in, and what it can cost is bounded.

Real processes: bin/sim-server records every request body it gets
(``--record-requests``), bin/serve forecasts a pitch, and bin/batch prepare
writes the same pitch, put in a pitches CSV and a showcase file, as request
lines; their system and user messages are compared byte for byte, and their
ids. Over-long free text is cut at the documented lengths on both paths, and
impossible numbers are a 400 naming the field, as the CSV loader names the row
and column.
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import orjson
import pytest

from conftest import write_goods, write_pitches
from kit import BIN, call, make_pitch, serve_over, sim_stats
from liveroom.data.inputs import load_pitches, load_showcase
from liveroom.data.pitch import MAX_ITEM_NAME, NUMBER_RANGES, TEXT_LIMITS
from liveroom.errors import InputError

LONG = make_pitch(7, title="标题很长" * 80, prod="讲解的商品" * 60, text="家人们看过来，" * 400,
                  showcase=[[0, "加厚保暖羊毛袜" * 40, 29.9], [1, "羊绒围巾", 259], [2, "赠品", 0]])


def messages_of(bodies: list[dict[str, Any]]) -> list[bytes]:
    """Each request's system and user messages, as bytes, sorted."""
    return sorted(orjson.dumps([(m["role"], m["content"]) for m in b["messages"]]) for b in bodies)


def test_the_api_and_a_csv_run_ask_byte_identical_questions_with_the_same_ids(servers, model_dir, tmp_path):
    sent = tmp_path / "sent.jsonl"
    sim = servers("sim-server", "--record-requests", str(sent))
    serve = serve_over(servers, sim, model_dir, tmp_path / "cache")
    status, got = call(serve.url + "/v1/forecast", LONG)
    assert status == 200 and got["requests_sent"] == 24, got
    api_bodies = [orjson.loads(line) for line in sent.read_bytes().splitlines()]
    assert len(api_bodies) == 24
    cache_ids = sorted(json.loads(line)["id"] for s in ("entry", "buy", "read")
                       for line in (tmp_path / "cache" / f"{s}.jsonl").read_text().splitlines())

    # the same pitch as a row of a pitches CSV (with the index the service gave it) and its showcase
    row = {k: LONG[k] for k in ("start", "title", "prod", "text", "duration", "user_cnt")}
    pitches = write_pitches(tmp_path, [{"index": got["index"], **row}], ["index", *row])
    goods = write_goods(tmp_path, {LONG["start"]: LONG["showcase"]})
    run = tmp_path / "run"
    p = subprocess.run([sys.executable, str(BIN / "batch"), "prepare", "--pitches", str(pitches), "--goods",
                        str(goods), "--out", str(run), "--base-url", sim.url, "--model", "liveroom-sim"],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    lines = [orjson.loads(line) for f in sorted((run / "batch").glob("requests-*.jsonl")) if not f.name.endswith(".meta.jsonl")
             for line in f.read_bytes().splitlines()]
    assert len(lines) == 24
    assert messages_of([line["body"] for line in lines]) == messages_of(api_bodies)
    assert sorted(line["custom_id"] for line in lines) == cache_ids
    # what was cut, was cut at the documented lengths
    shown = b"".join(messages_of(api_bodies)).decode()
    assert LONG["title"][:TEXT_LIMITS["title"]] in shown and LONG["title"][:TEXT_LIMITS["title"] + 1] not in shown
    assert LONG["showcase"][0][1][:MAX_ITEM_NAME + 1] not in shown
    assert sim_stats(sim)["requests"] == 24


def test_free_text_is_cut_the_same_on_both_paths(tmp_path):
    """A 100,000-character title costs what a 200-character one does: the loader and the API cut alike."""
    from liveroom.serve.forecast import check_pitch

    huge = make_pitch(title="题" * 100_000, prod="品" * 100_000, text="字" * 100_000,
                      showcase=[[0, "名" * 200_000, 29.9]])
    pitch = check_pitch(huge)
    assert (len(pitch.title), len(pitch.prod), len(pitch.text)) == (200, 200, 1024)
    assert len(pitch.items[0].name) == MAX_ITEM_NAME
    row = {"index": 1, **{k: huge[k] for k in ("start", "title", "prod", "text")}}
    df = load_pitches(write_pitches(tmp_path, [row], list(row)))
    assert (df["title"][0], df["prod"][0], df["text"][0]) == (pitch.title, pitch.prod, pitch.text)
    goods = load_showcase(write_goods(tmp_path, {huge["start"]: huge["showcase"]}))
    assert tuple(goods[huge["start"]]) == pitch.items


@pytest.mark.parametrize("field, value, words", [
    ("duration", 1e308, "is outside 0 .. 100000"),
    ("duration", -3, "is outside 0 .. 100000"),
    ("user_cnt", 1e308, "is outside 0 .. 1e+09"),
    ("user_cnt", -1, "is outside 0 .. 1e+09"),
    ("user_cnt", "1e400", "is not a finite number"),
])
def test_impossible_numbers_are_refused_naming_the_field_on_both_paths(plain, tmp_path, field, value, words):
    sim, serve = plain
    before = sim_stats(sim)["requests"]
    status, got = call(serve.url + "/v1/forecast", make_pitch(**{field: value}))
    assert status == 400 and got["error"]["field"] == field and words in got["error"]["message"], got
    assert sim_stats(sim)["requests"] == before
    row = {"index": 1, "start": "2024-03-08 20:00", "duration": 3, "user_cnt": 100, field: value}
    with pytest.raises(InputError, match=f"pitches.csv line 2: {field} .*(outside|not a finite)"):
        load_pitches(write_pitches(tmp_path, [row], list(row)), need=(), numeric=tuple(NUMBER_RANGES))


def test_an_absurd_price_is_refused_on_both_paths(tmp_path):
    from liveroom.serve.forecast import FieldError, check_pitch

    items = [[0, "袜子", 1e308]]
    with pytest.raises(FieldError, match="item 1: expected \\[idx, name, price\\] with a price up to"):
        check_pitch(make_pitch(showcase=items))
    with pytest.raises(InputError, match="item 1: expected \\[idx, name, price\\] with a price up to"):
        load_showcase(write_goods(tmp_path, {"2024-03-08 20:00": items}))
