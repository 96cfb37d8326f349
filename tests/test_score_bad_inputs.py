"""Bad input stays bad input (fault F8 and what was seen beside it).

A record with a field more or fewer than the header, a file in another
encoding, an item name of 100,000 characters: one line naming the line (with
a hint), or a documented cap, before anything is sent.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from conftest import PITCH_COLUMNS
from kit import Server, collect, make_inputs, one_line_error, score


def rewrite(path: Path, line_no: int, change) -> None:
    """Line ``line_no`` (1-based, physical) of ``path`` changed by ``change``."""
    lines = path.read_text(encoding="utf-8").split("\n")
    lines[line_no - 1] = change(lines[line_no - 1])
    path.write_text("\n".join(lines), encoding="utf-8")


def test_an_unquoted_comma_is_one_line_naming_the_line_and_nothing_is_sent(tmp_path):
    pitches, goods = make_inputs(tmp_path, 3)
    rewrite(pitches, 3, lambda s: s.replace("宠粉专场第1场", "宠粉专场,第1场"))  # the title gains a comma
    srv = Server()
    try:
        p = score(pitches, goods, tmp_path / "run", srv.url)
        line = one_line_error(p)
        assert line == (f"score: error: pitches.csv line 3: {len(PITCH_COLUMNS) + 1} fields, the header has "
                        f"{len(PITCH_COLUMNS)} (an unquoted comma? quote fields that hold commas)")
        rewrite(pitches, 3, lambda s: s.replace("宠粉专场,第1场", "宠粉专场第1场").rsplit(",", 2)[0])
        p = score(pitches, goods, tmp_path / "run", srv.url)
        assert one_line_error(p) == (f"score: error: pitches.csv line 3: {len(PITCH_COLUMNS) - 2} fields, "
                                     f"the header has {len(PITCH_COLUMNS)}")
        assert srv.requests == 0 and not (tmp_path / "run").exists()
    finally:
        srv.stop()


def test_a_gbk_file_says_so_with_the_line_and_encoding_reads_it(tmp_path):
    pitches, goods = make_inputs(tmp_path, 2)
    utf8 = pitches.read_bytes()
    gbk = tmp_path / "gbk.csv"
    gbk.write_bytes(utf8.decode("utf-8").encode("gb18030"))
    srv = Server()
    try:
        p = score(gbk, goods, tmp_path / "run", srv.url, "--stages", "entry")
        line = one_line_error(p)
        assert line.startswith("score: error: gbk.csv line 2: not UTF-8 (byte 0x"), line
        assert line.endswith("looks like GB18030/GBK: pass --encoding gb18030 or convert with iconv -f gb18030 "
                             "-t utf-8 gbk.csv")
        assert srv.requests == 0

        p = score(gbk, goods, tmp_path / "run", srv.url, "--stages", "entry", "--encoding", "gb18030")
        assert p.returncode == 0, p.stderr
        sent = [m["content"] for b in srv.bodies for m in b["messages"] if m["role"] == "user"]
        assert any("宠粉专场第1场" in s for s in sent)  # the text as written, not mojibake

        c = collect(gbk, tmp_path / "run", tmp_path / "f", "--allow-missing")
        assert c.returncode == 2 and "looks like GB18030/GBK" in c.stderr
        c = collect(gbk, tmp_path / "run", tmp_path / "f", "--allow-missing", "--encoding", "gb18030")
        assert c.returncode == 0 and "entry: 16/16 cells" in c.stderr, c.stderr
        p = score(gbk, goods, tmp_path / "run", srv.url, "--encoding", "no-such-codec")
        assert "--encoding: unknown encoding 'no-such-codec'" in one_line_error(p)
        # the flag is named before the run directory is looked at
        c = collect(gbk, tmp_path / "no-run", tmp_path / "f2", "--encoding", "no-such-codec")
        assert one_line_error(c) == "collect: error: --encoding: unknown encoding 'no-such-codec' (e.g. utf-8, gb18030)"
        assert not (tmp_path / "f2").exists()
    finally:
        srv.stop()


def test_an_item_name_and_a_transcript_are_cut_to_their_caps(tmp_path):
    pitches, goods = make_inputs(tmp_path, 1)
    showcase = json.loads(goods.read_text())
    (start,) = showcase
    showcase[start][0][1] = "名" * 100_000
    goods.write_text(json.dumps(showcase, ensure_ascii=False))
    rewrite(pitches, 2, lambda s: s.replace("今天限时优惠，全场包邮，福利多多", "话" * 100_000))
    srv = Server()
    try:
        p = score(pitches, goods, tmp_path / "run", srv.url, "--stages", "buy,read", "--max-reasks", "0")
        assert p.returncode == 1, p.stderr  # the server's reply does not fit buy; what was asked is the point
        users = [m["content"] for b in srv.bodies for m in b["messages"] if m["role"] == "user"]
        assert len(users) == 16
        def longest(ch: str) -> int:
            return max(len(run) for u in users for run in re.findall(f"{ch}+", u) or [""])

        assert longest("名") == 200  # MAX_ITEM_NAME
        assert longest("话") == 1024  # the prompts' TEXT_LIMIT
        assert max(len(json.dumps(b, ensure_ascii=False)) for b in srv.bodies) < 5000
    finally:
        srv.stop()
