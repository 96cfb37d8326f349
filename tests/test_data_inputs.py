"""Reading and validating the pitches CSV and the showcase JSON."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from conftest import (
    MULTILINE_TEXT,
    NUMERIC_COLUMNS,
    PITCH_COLUMNS,
    SAMPLE_STARTS,
    TIME_COLS,
    pitch_row,
    sample_rows,
    sample_showcase,
    write_goods,
    write_pitches,
)
from liveroom.data.inputs import Item, check_showcase, load_pitches, load_showcase
from liveroom.errors import InputError, LiveroomError

NO_TIME = [c for c in PITCH_COLUMNS if c not in TIME_COLS]


def one_line_error(excinfo) -> str:
    msg = str(excinfo.value)
    assert "\n" not in msg, msg
    assert isinstance(excinfo.value, LiveroomError)
    return msg


# --------------------------------------------------------------------------- reading the format

def test_reads_the_reference_format(pitches_csv):
    df = load_pitches(pitches_csv, numeric=NUMERIC_COLUMNS)
    rows = sample_rows()
    assert len(df) == len(rows)
    assert set(PITCH_COLUMNS) <= set(df.columns)
    assert df["index"].tolist() == [r["index"] for r in rows]
    assert df["index"].dtype == np.int64
    assert df["start"].tolist() == list(SAMPLE_STARTS)  # kept as the showcase key
    assert df["title"].tolist() == [r["title"] for r in rows]
    # the quoted transcript keeps its newline and commas; the empty one stays ""
    assert df["text"].tolist() == [r["text"] for r in rows]
    assert df["text"].iat[0] == MULTILINE_TEXT and "\n" in MULTILINE_TEXT
    assert df["text"].iat[2] == ""
    for col in NUMERIC_COLUMNS:
        assert df[col].dtype == np.float64, col
        assert df[col].tolist() == pytest.approx([float(r[col]) for r in rows]), col


def test_text_columns_only_by_default(pitches_csv):
    df = load_pitches(pitches_csv)
    assert {"index", "start", "title", "prod", "text"} <= set(df.columns)
    assert "log_gmv" not in df.columns  # columns nobody asked for are not read


@pytest.mark.parametrize("bom", [False, True])
@pytest.mark.parametrize("eol", ["\n", "\r\n"])
def test_bom_and_line_endings(tmp_path, bom, eol):
    path = write_pitches(tmp_path, sample_rows(), bom=bom, lineterminator=eol)
    if bom:
        assert path.read_bytes().startswith(b"\xef\xbb\xbf")
    df = load_pitches(path, numeric=["duration"])
    assert df.columns[0] == "index"
    assert df["index"].tolist() == [10, 11, 12, 13]
    assert df["text"].iat[0].replace("\r\n", "\n") == MULTILINE_TEXT


def test_columns_in_any_order(tmp_path):
    cols = list(reversed(PITCH_COLUMNS))
    df = load_pitches(write_pitches(tmp_path, sample_rows(), cols), numeric=["user_cnt"])
    assert df["index"].tolist() == [10, 11, 12, 13]
    assert df["user_cnt"].tolist() == [1200, 3456, 1200, 999]


def test_rows_keep_file_order(tmp_path):
    rows = sample_rows()[::-1]
    df = load_pitches(write_pitches(tmp_path, rows))
    assert df["index"].tolist() == [13, 12, 11, 10]


# --------------------------------------------------------------------------- required columns

def test_missing_columns_are_all_listed(tmp_path):
    cols = [c for c in PITCH_COLUMNS if c not in ("title", "prod")]
    with pytest.raises(InputError) as e:
        load_pitches(write_pitches(tmp_path, sample_rows(), cols))
    msg = one_line_error(e)
    assert msg.startswith("pitches.csv")
    assert "missing" in msg and "title" in msg and "prod" in msg
    assert "text" not in msg.split("missing", 1)[1]  # present columns are not listed


def test_missing_index_and_start_are_required_always(tmp_path):
    with pytest.raises(InputError) as e:
        load_pitches(write_pitches(tmp_path, sample_rows(), ["title", "prod", "text"]), need=())
    msg = one_line_error(e)
    assert "index" in msg and "start" in msg


def test_missing_numeric_column_is_reported(tmp_path):
    cols = [c for c in PITCH_COLUMNS if c != "user_cnt"]
    path = write_pitches(tmp_path, sample_rows(), cols)
    load_pitches(path)  # not needed: fine
    with pytest.raises(InputError) as e:
        load_pitches(path, numeric=["duration", "user_cnt"])
    assert "user_cnt" in one_line_error(e)


def test_missing_time_columns_are_not_missing(tmp_path):
    # they can be computed from start, so asking for them as numbers is fine
    df = load_pitches(write_pitches(tmp_path, sample_rows(), NO_TIME), numeric=[*TIME_COLS, "duration"])
    assert set(TIME_COLS) <= set(df.columns)


def test_header_only_file(tmp_path):
    with pytest.raises(InputError) as e:
        load_pitches(write_pitches(tmp_path, []))
    assert "pitches.csv" in one_line_error(e)


def test_missing_file(tmp_path):
    with pytest.raises(InputError) as e:
        load_pitches(tmp_path / "absent.csv")
    msg = one_line_error(e)
    assert "absent.csv" in msg and "no such file" in msg


# --------------------------------------------------------------------------- start

def _rows_with(col, value, at=3, multiline_first=False):
    rows = sample_rows()
    rows[0]["text"] = MULTILINE_TEXT if multiline_first else "单行讲解"
    rows[at][col] = value
    return rows


def test_bad_start_names_line_and_value(tmp_path):
    # header is line 1, so the 4th record (0-based 3) starts on line 5
    path = write_pitches(tmp_path, _rows_with("start", "2024-13-45 99:99"))
    with pytest.raises(InputError) as e:
        load_pitches(path)
    assert one_line_error(e) == "pitches.csv line 5: start '2024-13-45 99:99' is not YYYY-MM-DD HH:MM"


def test_bad_start_line_counts_physical_lines(tmp_path):
    rows = _rows_with("start", "2024-13-45 99:99")
    rows[1]["text"] = "第一行，\n第二行,\n第三行"  # record 1 takes lines 3-5
    path = write_pitches(tmp_path, rows)
    assert path.read_text(encoding="utf-8").splitlines()[6].startswith("13,2024-13-45 99:99,")  # line 7
    with pytest.raises(InputError) as e:
        load_pitches(path)
    assert one_line_error(e).startswith("pitches.csv line 7: start '2024-13-45 99:99'")


@pytest.mark.parametrize("value", [
    "2024-02-30 10:00", "2024-01-05", "2024-01-05 06:05:00", "2024-01-05T06:05", "2024/01/05 06:05",
    "2024-1-5 6:05", " 2024-01-05 06:05", "", "明天早上",
])
def test_start_must_be_exactly_the_format(tmp_path, value):
    with pytest.raises(InputError) as e:
        load_pitches(write_pitches(tmp_path, _rows_with("start", value, at=1)))
    assert one_line_error(e) == f"pitches.csv line 3: start {value!r} is not YYYY-MM-DD HH:MM"


# --------------------------------------------------------------------------- index

@pytest.mark.parametrize("value", ["1.5", "abc", "", "inf", "nan", "99999999999999999999"])
def test_index_must_be_an_integer(tmp_path, value):
    with pytest.raises(InputError) as e:
        load_pitches(write_pitches(tmp_path, _rows_with("index", value, at=2)))
    msg = one_line_error(e)
    assert msg.startswith("pitches.csv line 4: index")
    assert repr(value) in msg


def test_integral_index_spellings_are_integers(tmp_path):
    rows = sample_rows()
    rows[1]["index"], rows[2]["index"] = "21.0", " 22"
    df = load_pitches(write_pitches(tmp_path, rows))
    assert df["index"].tolist() == [10, 21, 22, 13]
    assert df["index"].dtype == np.int64


def test_duplicate_index_names_both_lines(tmp_path):
    rows = sample_rows()
    rows[0]["text"] = MULTILINE_TEXT  # record 0: lines 2-3, record 1: line 4, record 3: line 6
    rows[3]["index"] = rows[1]["index"]
    with pytest.raises(InputError) as e:
        load_pitches(write_pitches(tmp_path, rows))
    msg = one_line_error(e)
    assert msg.startswith("pitches.csv line 6: index")
    assert "11" in msg and "line 4" in msg


# --------------------------------------------------------------------------- numbers

@pytest.mark.parametrize("value", ["abc", "", "inf", "-inf", "nan", "1,5"])
def test_numeric_columns_must_be_finite(tmp_path, value):
    path = write_pitches(tmp_path, _rows_with("user_cnt", value, at=3, multiline_first=True))
    with pytest.raises(InputError) as e:
        load_pitches(path, numeric=["duration", "user_cnt"])
    msg = one_line_error(e)
    assert msg.startswith("pitches.csv line 6: user_cnt")  # record 0 spans two lines
    assert repr(value) in msg
    load_pitches(path, numeric=["duration"])  # only checked when asked for


def test_numbers_with_spaces_and_exponents(tmp_path):
    rows = sample_rows()
    rows[0]["duration"], rows[1]["duration"] = " 7 ", "1.5e1"
    df = load_pitches(write_pitches(tmp_path, rows), numeric=["duration"])
    assert df["duration"].tolist()[:2] == [7.0, 15.0]


def test_empty_text_is_kept_as_empty_string(tmp_path):
    rows = sample_rows()
    for r in rows:
        r["text"] = ""
    df = load_pitches(write_pitches(tmp_path, rows))
    assert df["text"].tolist() == ["", "", "", ""]


# --------------------------------------------------------------------------- time features

def _hand_features(start: str) -> dict[str, float]:
    date, clock = start.split()
    y, m, d = map(int, date.split("-"))
    import datetime as dt
    dow = dt.date(y, m, d).weekday()  # Monday = 0
    hour = int(clock.split(":")[0])
    return {
        "dow_cos": math.cos(2 * math.pi * dow / 7), "dow_sin": math.sin(2 * math.pi * dow / 7),
        "hour_cos": math.cos(2 * math.pi * hour / 24), "hour_sin": math.sin(2 * math.pi * hour / 24),
    }


# start -> is_workday by the published State Council calendar
CALENDAR_CASES = {
    "2024-01-01 06:55": 0,  # New Year's Day, a Monday
    "2024-02-04 10:30": 1,  # Sunday, working day moved for the Spring Festival
    "2024-02-12 20:00": 0,  # Monday inside the Spring Festival break
    "2024-03-09 18:15": 0,  # plain Saturday
    "2024-03-12 09:00": 1,  # plain Tuesday
    "2024-09-29 23:10": 1,  # Sunday, working day moved for National Day
    "2024-10-01 00:05": 0,  # National Day
    "2024-10-12 12:00": 1,  # Saturday, working day moved for National Day
}


def test_time_features_computed_when_missing(tmp_path):
    rows = [pitch_row(i, s) for i, s in enumerate(CALENDAR_CASES)]
    df = load_pitches(write_pitches(tmp_path, rows, NO_TIME))
    for col in ("dow_cos", "dow_sin", "hour_cos", "hour_sin"):
        expected = [_hand_features(s)[col] for s in CALENDAR_CASES]
        assert df[col].to_numpy() == pytest.approx(expected, abs=1e-12), col
    assert df["is_workday"].tolist() == list(map(float, CALENDAR_CASES.values()))
    assert (df["is_holiday"] == 1 - df["is_workday"]).all()


def test_new_year_morning_known_values(tmp_path):
    # the authors' file has dow_cos 1, hour_cos 6.1e-17, hour_sin 1, is_workday 0 for this moment
    df = load_pitches(write_pitches(tmp_path, [pitch_row(0, "2024-01-01 06:55")], NO_TIME))
    r = df.iloc[0]
    assert r["dow_cos"] == pytest.approx(1.0)
    assert r["dow_sin"] == pytest.approx(0.0, abs=1e-12)
    assert r["hour_cos"] == pytest.approx(0.0, abs=1e-12)
    assert r["hour_sin"] == pytest.approx(1.0)
    assert (r["is_workday"], r["is_holiday"]) == (0.0, 1.0)


def test_only_lacking_time_columns_are_computed(tmp_path):
    rows = sample_rows()
    for r in rows:
        r["is_workday"], r["is_holiday"], r["dow_cos"] = 0.5, 0.25, 0.125  # not what the calendar says
    cols = [c for c in PITCH_COLUMNS if c not in ("hour_cos", "hour_sin")]
    df = load_pitches(write_pitches(tmp_path, rows, cols), numeric=[*TIME_COLS, "duration"])
    assert df["is_workday"].tolist() == [0.5] * 4
    assert df["is_holiday"].tolist() == [0.25] * 4
    assert df["dow_cos"].tolist() == [0.125] * 4
    assert df["hour_sin"].to_numpy() == pytest.approx([_hand_features(s)["hour_sin"] for s in SAMPLE_STARTS])


def test_uncovered_year_is_a_one_line_error_naming_the_line(tmp_path):
    rows = sample_rows()
    rows[0]["text"] = MULTILINE_TEXT
    rows[2]["start"] = "2031-05-01 10:00"
    with pytest.raises(InputError) as e:
        load_pitches(write_pitches(tmp_path, rows, NO_TIME))
    msg = one_line_error(e)
    assert msg.startswith("pitches.csv line 5: start '2031-05-01 10:00'")
    assert "2031" in msg.split("'2031-05-01 10:00'", 1)[1]


def test_uncovered_year_is_fine_when_the_file_has_the_time_columns(tmp_path):
    rows = [pitch_row(1, "2031-05-01 10:00", is_workday=0)]
    df = load_pitches(write_pitches(tmp_path, rows), numeric=TIME_COLS)
    assert df["is_workday"].tolist() == [0.0]


# --------------------------------------------------------------------------- showcase

def test_showcase_reads_items_in_order(goods_json):
    sc = load_showcase(goods_json)
    assert set(sc) == set(SAMPLE_STARTS)
    assert sc[SAMPLE_STARTS[1]] == [Item(0, "坚果礼盒", 88.0), Item(1, "牛肉干", 45.5)]
    assert all(isinstance(it.price, float) for items in sc.values() for it in items)


def test_showcase_drops_non_positive_prices(goods_json):
    sc = load_showcase(goods_json)
    assert [it.name for it in sc[SAMPLE_STARTS[0]]] == ["真丝睡衣两件套", "羊绒围巾"]  # price 0 dropped
    assert [it.idx for it in sc[SAMPLE_STARTS[2]]] == [0, 2, 3]  # price -1 dropped


def test_showcase_keeps_first_ten_positive(tmp_path):
    items = [[i, f"商品{i}", 0.0 if i in (2, 5) else 10.0 + i] for i in range(15)]
    sc = load_showcase(write_goods(tmp_path, {"2024-03-12 09:00": items}))
    kept = sc["2024-03-12 09:00"]
    assert [it.idx for it in kept] == [0, 1, 3, 4, 6, 7, 8, 9, 10, 11]
    assert kept[0] == Item(0, "商品0", 10.0)


def test_showcase_with_bom_and_empty_list(tmp_path):
    path = tmp_path / "goods.json"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps({"2024-03-12 09:00": [], "2024-03-12 10:00": [[3, "围巾", 59]]},
                                                   ensure_ascii=False).encode())
    sc = load_showcase(path)
    assert sc == {"2024-03-12 09:00": [], "2024-03-12 10:00": [Item(3, "围巾", 59.0)]}


@pytest.mark.parametrize("bad", [
    ["x", "名字", 1.0],   # idx not an integer
    [1.0, "名字", 1.0],   # idx a float
    [True, "名字", 1.0],  # idx a bool
    [1, 2, 1.0],          # name not a string
    [1, "名字", "12"],    # price a string
    [1, "名字", True],    # price a bool
    [1, "名字"],          # too short
    [1, "名字", 1.0, 2],  # too long
    {"idx": 1},           # not a list
    [1, "名字", None],
])
def test_malformed_item_names_key_and_item_number(tmp_path, bad):
    data = {"2024-03-12 09:00": [[0, "好物", 9.9]], "2024-03-12 10:00": [[0, "好物", 9.9], [1, "好物", 5.0], bad]}
    with pytest.raises(InputError) as e:
        load_showcase(write_goods(tmp_path, data))
    msg = one_line_error(e)
    assert msg.startswith("goods.json")
    assert "'2024-03-12 10:00'" in msg and "item 3" in msg


@pytest.mark.parametrize("price", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_price_is_malformed(tmp_path, price):
    path = tmp_path / "goods.json"
    path.write_text('{"2024-03-12 09:00": [[0, "好物", 9.9], [1, "坏价", %s]]}' % price, encoding="utf-8")
    with pytest.raises(InputError) as e:
        load_showcase(path)
    assert "item 2" in one_line_error(e)


def test_showcase_value_not_a_list(tmp_path):
    with pytest.raises(InputError) as e:
        load_showcase(write_goods(tmp_path, {"2024-03-12 09:00": {"0": "好物"}}))
    assert "'2024-03-12 09:00'" in one_line_error(e)


def test_showcase_not_an_object(tmp_path):
    with pytest.raises(InputError) as e:
        load_showcase(write_goods(tmp_path, [[0, "好物", 9.9]]))
    assert "goods.json" in one_line_error(e)


def test_invalid_json_names_the_line(tmp_path):
    path = tmp_path / "goods.json"
    path.write_text('{\n  "2024-03-12 09:00": [\n    [0, "好物", 9.9],,\n  ]\n}\n', encoding="utf-8")
    with pytest.raises(InputError) as e:
        load_showcase(path)
    msg = one_line_error(e)
    assert msg.startswith("goods.json line 3:")
    assert "JSON" in msg


def test_showcase_missing_file(tmp_path):
    with pytest.raises(InputError) as e:
        load_showcase(tmp_path / "nope.json")
    assert "no such file" in one_line_error(e)


def test_check_showcase_passes_when_every_pitch_has_items(pitches_csv, goods_json):
    assert check_showcase(load_pitches(pitches_csv), load_showcase(goods_json)) is None


def test_check_showcase_lists_the_pitches_lacking_one(pitches_csv):
    data = sample_showcase()
    del data[SAMPLE_STARTS[1]]                              # no entry
    data[SAMPLE_STARTS[3]] = [[0, "旅行拉杆箱", 0.0]]          # only a free item
    with pytest.raises(InputError) as e:
        check_showcase(load_pitches(pitches_csv), load_showcase(write_goods(pitches_csv.parent, data)), "goods.json")
    msg = one_line_error(e)
    assert msg.startswith("goods.json")
    assert "index 11" in msg and SAMPLE_STARTS[1] in msg
    assert "index 13" in msg and SAMPLE_STARTS[3] in msg
    assert "index 10" not in msg and "index 12" not in msg
    assert " 2 " in msg  # the count


def test_check_showcase_shortens_a_long_list(tmp_path):
    rows = [pitch_row(i, f"2024-03-{i + 1:02d} 10:00") for i in range(8)]
    with pytest.raises(InputError) as e:
        check_showcase(load_pitches(write_pitches(tmp_path, rows)), {})
    msg = one_line_error(e)
    assert "8" in msg and "index 0" in msg and "index 4" in msg
    assert "index 5" not in msg and "3 more" in msg


# --------------------------------------------------------------------------- field counts and encodings

def _with_line(path, n, change):
    lines = path.read_text(encoding="utf-8").split("\n")
    lines[n - 1] = change(lines[n - 1])
    path.write_text("\n".join(lines), encoding="utf-8")


def test_a_record_with_a_field_more_than_the_header_names_its_line(tmp_path):
    path = write_pitches(tmp_path, sample_rows())  # record 1 spans lines 2-3
    _with_line(path, 5, lambda s: s.replace("周末宠粉夜", "周末,宠粉夜"))
    with pytest.raises(InputError) as e:
        load_pitches(path)
    assert one_line_error(e) == ("pitches.csv line 5: 34 fields, the header has 33 "
                                 "(an unquoted comma? quote fields that hold commas)")


def test_a_record_with_fewer_fields_than_the_header_names_its_line(tmp_path):
    path = write_pitches(tmp_path, sample_rows())
    _with_line(path, 6, lambda s: s.rsplit(",", 1)[0])
    with pytest.raises(InputError) as e:
        load_pitches(path, need=())
    assert one_line_error(e) == "pitches.csv line 6: 32 fields, the header has 33"


def test_a_first_record_with_an_extra_field_is_not_read_as_an_index(tmp_path):
    path = write_pitches(tmp_path, sample_rows()[1:])
    _with_line(path, 2, lambda s: s + ",extra")
    with pytest.raises(InputError, match="line 2: 34 fields"):
        load_pitches(path)


def test_blank_lines_are_no_records(tmp_path):
    path = write_pitches(tmp_path, sample_rows())
    path.write_text(path.read_text(encoding="utf-8") + "\n\n", encoding="utf-8")
    assert len(load_pitches(path)) == 4


def test_a_gbk_file_names_the_line_and_hints_at_the_encoding(tmp_path):
    path = write_pitches(tmp_path, sample_rows())
    path.write_bytes(path.read_text(encoding="utf-8").encode("gb18030"))
    with pytest.raises(InputError) as e:
        load_pitches(path)
    msg = one_line_error(e)
    assert msg.startswith("pitches.csv line 2: not UTF-8 (byte 0x")
    assert "looks like GB18030/GBK: pass --encoding gb18030 or convert with iconv" in msg
    df = load_pitches(path, encoding="gb18030")
    assert df["title"].tolist()[0] == "元旦开年第一播" and df["text"].tolist()[0] == MULTILINE_TEXT


def test_a_bad_value_in_a_gbk_file_names_its_line_too(tmp_path):
    rows = sample_rows()
    rows[2]["start"] = "2024-13-45 99:99"
    path = write_pitches(tmp_path, rows)
    path.write_bytes(path.read_text(encoding="utf-8").encode("gb18030"))
    with pytest.raises(InputError, match=r"pitches\.csv line 5: start '2024-13-45 99:99'"):
        load_pitches(path, encoding="gb18030")


def test_a_file_in_no_known_encoding_gets_the_plain_hint(tmp_path):
    path = write_pitches(tmp_path, sample_rows())
    path.write_bytes(path.read_bytes().replace("国庆狂欢".encode(), b"\xff\xfe\xff\xfe"))
    with pytest.raises(InputError) as e:
        load_pitches(path)
    msg = one_line_error(e)
    assert "not UTF-8 (byte 0xff)" in msg and "looks like GB18030" not in msg and "iconv" in msg


def test_the_encoding_a_command_passes_is_used_and_unknown_ones_are_named(tmp_path):
    path = write_pitches(tmp_path, sample_rows())
    path.write_bytes(path.read_text(encoding="utf-8").encode("gb18030"))
    assert len(load_pitches(path, encoding="gb18030")) == 4
    with pytest.raises(InputError, match="not UTF-8"):
        load_pitches(path)
    with pytest.raises(InputError, match="--encoding: unknown encoding 'klingon'"):
        load_pitches(path, encoding="klingon")
    utf8 = write_pitches(tmp_path, sample_rows(), name="bom.csv", bom=True)
    assert len(load_pitches(utf8, encoding="UTF8")) == 4  # utf-8 named any way still takes a BOM


def test_a_long_item_name_is_cut_to_the_cap(tmp_path):
    from liveroom.data.inputs import MAX_ITEM_NAME

    showcase = sample_showcase()
    showcase[SAMPLE_STARTS[3]][0][1] = "箱" * 100_000
    got = load_showcase(write_goods(tmp_path, showcase))
    assert MAX_ITEM_NAME == 200 and got[SAMPLE_STARTS[3]][0].name == "箱" * 200
