"""The moment of a pitch: calendar facts and the Chinese wordings shown to the model.

``describe_moment`` is the first prompt set's wording, ``plain_moment`` the
method's (its protocol points are checked on rendered requests in test_protocol).
"""

from __future__ import annotations

import datetime as dt

import pandas as pd
import pytest

from liveroom.data.moment import (
    CalendarYearError,
    day_facts,
    describe_moment,
    plain_day_kind,
    plain_moment,
    time_features,
)
from liveroom.errors import InputError


def at(s: str) -> dt.datetime:
    return dt.datetime.strptime(s, "%Y-%m-%d %H:%M")


def test_plain_workday():
    text = describe_moment(at("2024-03-12 10:00"))  # a Tuesday
    assert "2024年3月12日" in text and "星期二" in text and "10:00" in text
    assert "工作日" in text
    assert "休息日" not in text and "假期" not in text and "调休" not in text
    assert "明天" not in text and "凌晨" not in text


def test_weekend_rest_day():
    text = describe_moment(at("2024-03-09 15:30"))  # a Saturday, no holiday nearby
    assert "星期六" in text and "15:30" in text
    assert "休息" in text
    assert "工作日" not in text and "调休" not in text and "上班" not in text


@pytest.mark.parametrize("when, name", [
    ("2024-02-10 11:00", "春节"),     # Spring Festival, Saturday
    ("2024-02-13 11:00", "春节"),     # Spring Festival, Tuesday
    ("2024-10-01 11:00", "国庆节"),   # National Day
    ("2024-01-01 11:00", "元旦"),     # New Year's Day, Monday
    ("2024-06-10 11:00", "端午节"),   # Dragon Boat Festival
])
def test_named_public_holiday(when, name):
    text = describe_moment(at(when))
    assert name in text
    assert "工作日" not in text and "调休" not in text


@pytest.mark.parametrize("when, weekday, reason", [
    ("2024-02-04 14:00", "星期日", "春节"),
    ("2024-02-18 14:00", "星期日", "春节"),
    ("2024-09-29 14:00", "星期日", "国庆节"),
    ("2024-10-12 14:00", "星期六", "国庆节"),
])
def test_swapped_working_day(when, weekday, reason):
    text = describe_moment(at(when))
    assert weekday in text
    assert "调休" in text and "上班" in text and reason in text
    assert "休息日" not in text


def test_early_morning_describes_the_coming_day():
    text = describe_moment(at("2024-10-01 03:20"))
    assert "凌晨" in text and "03:20" in text
    assert "国庆节" in text       # the day that is about to begin
    assert "明天" not in text      # not the day after
    workday = describe_moment(at("2024-03-12 05:59"))
    assert "凌晨" in workday and "工作日" in workday


def test_six_oclock_is_no_longer_early_morning():
    assert "凌晨" not in describe_moment(at("2024-03-12 06:00"))


def test_from_21_it_also_describes_tomorrow():
    text = describe_moment(at("2024-09-30 21:30"))  # a Monday, the eve of National Day
    assert "工作日" in text
    assert "明天" in text and "国庆节" in text
    assert text.index("国庆节") > text.index("明天")
    assert text.index("工作日") < text.index("明天")   # today first, then tomorrow
    assert "星期二" in text[text.index("明天"):]


def test_before_21_no_tomorrow():
    assert "明天" not in describe_moment(at("2024-09-30 20:59"))
    assert "明天" in describe_moment(at("2024-09-30 21:00"))


def test_late_sunday_says_tomorrow_is_a_workday():
    text = describe_moment(at("2024-03-10 23:40"))
    today, tomorrow = text.split("明天", 1)
    assert "休息" in today and "工作日" not in today
    assert "工作日" in tomorrow and "星期一" in tomorrow


def test_late_on_the_last_holiday_day_tomorrow_is_a_workday():
    text = describe_moment(at("2024-10-07 22:00"))
    today, tomorrow = text.split("明天", 1)
    assert "国庆节" in today
    assert "工作日" in tomorrow


def test_wording_is_one_paragraph():
    for s in ("2024-03-12 03:00", "2024-03-12 12:00", "2024-03-12 22:00"):
        text = describe_moment(at(s))
        assert "\n" not in text and text.startswith("现在是")


def test_day_facts():
    assert day_facts(dt.date(2024, 2, 4)) == (True, "春节")        # swapped working Sunday
    assert day_facts(dt.date(2024, 10, 1)) == (False, "国庆节")
    assert day_facts(dt.date(2024, 3, 9)) == (False, None)
    assert day_facts(dt.date(2024, 3, 12)) == (True, None)


def test_uncovered_year_is_an_input_error():
    with pytest.raises(CalendarYearError) as e:
        describe_moment(at("2031-05-01 10:00"))
    assert isinstance(e.value, InputError)
    assert e.value.year == 2031
    assert "2031" in str(e.value) and "\n" not in str(e.value)


def test_time_features_of_a_series():
    s = pd.Series(pd.to_datetime(["2024-02-04 00:30", "2024-10-01 12:00"]), index=[5, 9])
    f = time_features(s)
    assert list(f.index) == [5, 9]
    assert f["is_workday"].tolist() == [1.0, 0.0]
    assert f["is_holiday"].tolist() == [0.0, 1.0]
    # Sunday = 6, Tuesday = 1; hour 0 and 12
    assert f["dow_cos"].tolist() == pytest.approx([0.6234898018587336, 0.6234898018587336])
    assert f["dow_sin"].tolist() == pytest.approx([-0.7818314824680299, 0.7818314824680298])
    assert f["hour_cos"].tolist() == pytest.approx([1.0, -1.0])
    assert f["hour_sin"].tolist() == pytest.approx([0.0, 0.0], abs=1e-12)


# --------------------------------------------------------------------------- the method's wording

@pytest.mark.parametrize("day, kind", [
    ("2024-03-12", "工作日"),
    ("2024-03-09", "休息日"),
    ("2024-10-01", "国庆节假期，法定节假日"),
    ("2024-02-04", "调休上班日（因春节调休）"),
])
def test_plain_day_kinds(day, kind):
    assert plain_day_kind(at(day + " 12:00").date()) == kind


def test_plain_moment_is_the_clock_and_the_kind():
    assert plain_moment(at("2024-03-12 10:00")) == "现在是2024年3月12日 星期二 10:00。今天是工作日。"
    assert plain_moment(at("2024-02-04 03:00")) == "现在是2024年2月4日 星期日 03:00，凌晨。天亮后的今天是调休上班日（因春节调休）。"
    assert plain_moment(at("2024-09-30 21:00")) == (
        "现在是2024年9月30日 星期一 21:00。今天是工作日。明天是2024年10月1日 星期二，国庆节假期，法定节假日。")
    assert plain_moment(at("2024-03-12 20:59")) == "现在是2024年3月12日 星期二 20:59。今天是工作日。"


def test_plain_moment_reads_the_same_calendar():
    for s in ("2024-02-10 11:00", "2024-10-07 22:00", "2024-03-10 23:40", "2024-10-12 14:00"):
        when = at(s)
        workday, holiday = day_facts(when.date())
        text = plain_moment(when)
        assert text.startswith("现在是") and "\n" not in text
        assert ("工作日" in text.split("明天")[0]) == (workday and when.weekday() < 5)
        if holiday:
            assert holiday in text
