"""The moment a pitch starts: calendar facts, time features and their wording.

Pure functions over dates. The official Chinese calendar (package
``chinesecalendar``) decides workdays, named public holidays and working days
moved by a holiday swap.

Two wordings: :func:`plain_moment` says only what the method says (date,
weekday, clock time, the day's kind; early morning and tomorrow where the
method describes them); :func:`describe_moment` is the first prompt set's,
kept word for word so its runs resume.
"""

from __future__ import annotations

import datetime as dt
from functools import lru_cache
from typing import TYPE_CHECKING

import chinese_calendar

from ..errors import InputError

if TYPE_CHECKING:  # pandas is imported where used: bin/sim-server words moments without it
    import pandas as pd

WEEKDAYS = ("星期一", "星期二", "星期三", "星期四", "星期五", "星期六", "星期日")
HOLIDAY_NAMES = {
    "New Year's Day": "元旦",
    "Spring Festival": "春节",
    "Tomb-sweeping Day": "清明节",
    "Labour Day": "劳动节",
    "Dragon Boat Festival": "端午节",
    "National Day": "国庆节",
    "Mid-autumn Festival": "中秋节",
    "Anti-Fascist 70th Day": "抗战胜利70周年纪念日",
}


class CalendarYearError(InputError):
    """A date in a year that the installed holiday calendar does not cover."""

    def __init__(self, year: int):
        self.year = year
        lo, hi = calendar_years()
        super().__init__(f"the Chinese holiday calendar covers {lo}-{hi} only, not {year} (upgrade chinesecalendar)")


@lru_cache(maxsize=1)
def calendar_years() -> tuple[int, int]:
    from chinese_calendar.constants import holidays, workdays
    days = [*holidays, *workdays]
    return min(days).year, max(days).year


@lru_cache(maxsize=8192)
def day_facts(day: dt.date) -> tuple[bool, str | None]:
    """(is_workday, holiday name in Chinese or None) for one date."""
    try:
        workday = chinese_calendar.is_workday(day)
        _, holiday = chinese_calendar.get_holiday_detail(day)
    except NotImplementedError:
        raise CalendarYearError(day.year) from None
    return workday, (HOLIDAY_NAMES.get(holiday, holiday) if holiday else None)


def time_features(start: pd.Series) -> pd.DataFrame:
    """The six time columns of the reference for a series of datetimes.

    cos/sin(2*pi*x/period) of the weekday (Monday = 0, period 7) and the hour
    (period 24); ``is_workday`` by the official calendar (swapped working
    weekends count as workdays); ``is_holiday = 1 - is_workday``.
    """
    import numpy as np
    import pandas as pd

    dow = start.dt.day_of_week.to_numpy(dtype=float)
    hour = start.dt.hour.to_numpy(dtype=float)
    days = start.dt.date
    work = {d: day_facts(d)[0] for d in days.unique()}
    is_workday = days.map(work).to_numpy(dtype=float)
    return pd.DataFrame({
        "dow_cos": np.cos(2 * np.pi * dow / 7),
        "dow_sin": np.sin(2 * np.pi * dow / 7),
        "hour_cos": np.cos(2 * np.pi * hour / 24),
        "hour_sin": np.sin(2 * np.pi * hour / 24),
        "is_workday": is_workday,
        "is_holiday": 1.0 - is_workday,
    }, index=start.index)


def day_kind(day: dt.date) -> str:
    """How a date counts: workday, rest day, named holiday or swapped working day."""
    workday, holiday = day_facts(day)
    weekend = day.weekday() >= 5
    if workday and weekend:
        return f"调休上班日（本是{WEEKDAYS[day.weekday()]}，因{holiday or '节假日'}调休需要上班）"
    if workday:
        return "工作日，需要上班上学"
    if holiday:
        return f"{holiday}假期，法定节假日休息"
    return "周末休息日"


def part_of_day(hour: int) -> str:
    if hour < 6:
        return "凌晨"
    if hour < 9:
        return "早上"
    if hour < 12:
        return "上午"
    if hour < 14:
        return "中午"
    if hour < 18:
        return "下午"
    if hour < 23:
        return "晚上"
    return "深夜"


def calendar_date(day: dt.date) -> str:
    """The date and weekday as both wordings write them: ``2024年3月8日 星期五``."""
    return f"{day.year}年{day.month}月{day.day}日 {WEEKDAYS[day.weekday()]}"


def describe_moment(when: dt.datetime) -> str:
    """One Chinese paragraph placing the persona at the moment ``when``.

    Before 06:00 it says it is early morning and describes the coming day; from
    21:00 it also describes tomorrow.
    """
    day = when.date()
    clock = f"{calendar_date(day)} {when:%H:%M}"
    if when.hour < 6:
        return f"现在是{clock}，正是凌晨，大多数人还在休息。天亮后的今天是{day_kind(day)}。"
    text = f"现在是{clock}，{part_of_day(when.hour)}。今天是{day_kind(day)}。"
    if when.hour >= 21:
        tomorrow = day + dt.timedelta(days=1)
        text += f"明天（{WEEKDAYS[tomorrow.weekday()]}）是{day_kind(tomorrow)}。"
    return text


def plain_day_kind(day: dt.date) -> str:
    """The day's kind and nothing about what people do on it (the method's four kinds)."""
    workday, holiday = day_facts(day)
    if workday and day.weekday() >= 5:
        return f"调休上班日（因{holiday or '节假日'}调休）"
    if workday:
        return "工作日"
    if holiday:
        return f"{holiday}假期，法定节假日"
    return "休息日"


def plain_moment(when: dt.datetime) -> str:
    """The moment as the method states it: date, weekday, time and the day's kind.

    Before 06:00 it says it is early morning and gives the coming day's kind;
    from 21:00 it also gives tomorrow's date, weekday and kind. No word on
    what people usually do at that hour.
    """
    day = when.date()
    clock = f"{calendar_date(day)} {when:%H:%M}"
    if when.hour < 6:
        return f"现在是{clock}，凌晨。天亮后的今天是{plain_day_kind(day)}。"
    text = f"现在是{clock}。今天是{plain_day_kind(day)}。"
    if when.hour >= 21:
        tomorrow = day + dt.timedelta(days=1)
        text += f"明天是{calendar_date(tomorrow)}，{plain_day_kind(tomorrow)}。"
    return text
