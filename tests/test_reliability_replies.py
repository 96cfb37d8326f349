"""Linear-time reply parsing (issue row F5): a looping model's reply never stalls the run.

A reply over 64 KB is unusable before any parsing; any shorter one is parsed
or refused in a few passes; a re-ask sends back at most 4,096 characters of
the bad reply and a record keeps at most 64 KB of it.
"""

from __future__ import annotations

import json
import signal
import time

import pytest
from aiohttp import web

from liveroom.prompts.answers import parse_buy, parse_entry
from liveroom.prompts.replies import MAX_REPLY_CHARS, ReplyError, extract_json
from test_reliability_kit import Server, completion, make_inputs, records, score, start_score

MB = 1_000_000

SHAPES = {
    "braces": "{", "brackets": "[", "closers": "}", "open-keys": '{"a":', "quotes": "{'", "dquotes": '{"',
    "fences": "```", "backslashes": '{"\\', "sums": "[1+", "mixed": "{[", "apostrophes": "it's {",
    "small-lists": "[1],", "names": "{x} ", "bad-literals": "{'a': b}", "spaces": "``` ",
}


def shaped(unit: str, size: int) -> str:
    return (unit * (size // len(unit) + 1))[:size]


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_a_megabyte_reply_of_any_shape_is_refused_in_under_50_ms(name):
    text = shaped(SHAPES[name], MB)
    t0 = time.perf_counter()
    with pytest.raises(ReplyError, match="reply too long"):
        extract_json(text)
    assert time.perf_counter() - t0 < 0.05


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_a_reply_just_under_the_cap_of_any_shape_is_parsed_or_refused_quickly(name):
    text = shaped(SHAPES[name], MAX_REPLY_CHARS)
    t0 = time.perf_counter()
    for parse in (extract_json, parse_entry, lambda t: parse_buy(t, 3)):
        try:
            parse(text)
        except ReplyError:
            pass
    assert time.perf_counter() - t0 < 0.5  # three parsers; each took 10-25 ms here, 3 s for 8 KB before


def test_json_after_a_long_run_of_brackets_is_still_found():
    assert extract_json("{" * 5000 + ' 我的回答 {"want_to_enter": 4}') == {"want_to_enter": 4}
    assert extract_json("[1]," * 3 + '{"want_to_enter": 2}')[0] == 1  # the first value wins, as always


async def looping(request: web.Request, body: dict) -> web.StreamResponse:
    return web.json_response(completion("{" * 20_000))


def test_a_looping_model_neither_stalls_the_run_nor_delays_a_signal(tmp_path):
    pitches, goods = make_inputs(tmp_path, 6)
    srv = Server(looping)
    run = tmp_path / "run"
    try:
        t0 = time.monotonic()
        p = score(pitches, goods, run, srv.url, "--stages", "entry,read", "--concurrency", "8", timeout=120)
        assert p.returncode == 1, p.stderr
        assert time.monotonic() - t0 < 60
        recs = records(run)
        assert len(recs) == 96 and all(r["status"] == "invalid" and r["reasks"] == 2 for r in recs)
        assert recs[0]["error"] == "no JSON object found in the reply"

        proc = start_score(pitches, goods, tmp_path / "again", srv.url, "--stages", "entry,read",
                           "--concurrency", "8", "--grace", "1")
        deadline = time.time() + 30
        while srv.requests < 300 + 20 and time.time() < deadline:
            time.sleep(0.02)
        t0 = time.monotonic()
        proc.send_signal(signal.SIGINT)
        err = proc.communicate(timeout=30)[1]
        assert proc.returncode == 130, err
        assert time.monotonic() - t0 < 3, err  # 98 s before
    finally:
        srv.stop()


def test_a_huge_bad_reply_is_not_sent_back_whole_nor_kept_whole(tmp_path):
    pitches, goods = make_inputs(tmp_path, 1)

    async def huge(request: web.Request, body: dict) -> web.StreamResponse:
        return web.json_response(completion("不" * MB))  # 3 MB of UTF-8

    srv = Server(huge)
    run = tmp_path / "run"
    try:
        p = score(pitches, goods, run, srv.url, "--stages", "read", "--concurrency", "2", timeout=120)
        assert p.returncode == 1, p.stderr
        assert srv.requests == 8 * 3
        for body in srv.bodies:
            sent = json.dumps(body, ensure_ascii=False)
            assert len(sent) < 2 * 4096 + 5000, len(sent)  # the question and at most 4,096 characters per re-ask
        recs = records(run)
        assert all(r["status"] == "invalid" and r["error"].startswith("reply too long (1000000 characters")
                   for r in recs)
        assert all(len(r["reply"]) < 65536 + 100 for r in recs)
        assert (run / "read.jsonl").stat().st_size < 8 * 70_000 * 3  # not 8 x 3 MB
    finally:
        srv.stop()
