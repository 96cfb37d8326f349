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

from kit import Server, completion, make_inputs, python_steps, records, score, start_score
from liveroom.prompts.answers import parse_buy, parse_entry
from liveroom.prompts.replies import MAX_REPLY_CHARS, ReplyError, extract_json

MB = 1_000_000

SHAPES = {
    "braces": "{", "brackets": "[", "closers": "}", "open-keys": '{"a":', "quotes": "{'", "dquotes": '{"',
    "fences": "```", "backslashes": '{"\\', "sums": "[1+", "mixed": "{[", "apostrophes": "it's {",
    "small-lists": "[1],", "names": "{x} ", "bad-literals": "{'a': b}", "spaces": "``` ",
}


def shaped(unit: str, size: int) -> str:
    return (unit * (size // len(unit) + 1))[:size]


def refusal(text: str) -> str:
    """What extract_json says of ``text`` ('' when it is taken)."""
    try:
        extract_json(text)
    except ReplyError as e:
        return str(e)
    return ""


def parse_all_three(text: str) -> None:
    for parse in (extract_json, parse_entry, lambda t: parse_buy(t, 3)):
        try:
            parse(text)
        except ReplyError:
            pass


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_a_megabyte_reply_of_any_shape_is_refused_before_any_parsing(name):
    text, said = shaped(SHAPES[name], MB), []
    assert python_steps(lambda: said.append(refusal(text))) < 200  # its length is looked at, not its characters
    assert said[0].startswith("reply too long"), said


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_a_reply_just_under_the_cap_of_any_shape_is_parsed_or_refused_in_bounded_work(name):
    """A few passes and a bounded number of candidates: about 400,000 Python steps for the three parsers at
    the cap, whatever the shape; trying every opening bracket (3 s for 8 KB before) is billions."""
    assert python_steps(lambda: parse_all_three(shaped(SHAPES[name], MAX_REPLY_CHARS))) < 2_000_000


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
        p = score(pitches, goods, run, srv.url, "--stages", "entry,read", "--concurrency", "8", timeout=120)
        assert p.returncode == 1, p.stderr
        recs = records(run)
        assert len(recs) == 96 and all(r["status"] == "invalid" and r["reasks"] == 2 for r in recs)
        assert recs[0]["error"] == "no JSON object found in the reply"

        proc = start_score(pitches, goods, tmp_path / "again", srv.url, "--stages", "entry,read",
                           "--concurrency", "8", "--grace", "1")
        deadline = time.time() + 30
        while srv.requests < 300 + 20 and time.time() < deadline:
            time.sleep(0.02)
        proc.send_signal(signal.SIGINT)
        err = proc.communicate(timeout=30)[1]  # 98 s before: the loop was busy parsing
        assert proc.returncode == 130, err
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
