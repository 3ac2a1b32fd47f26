"""The ``schedule`` floor: cron windows, time zones, and the parser's messages."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from autoscaler.policy.schedule import Cron, ScheduleError, parse_schedule

UTC = dt.UTC
WORKDAY = "start=0 8 * * 1-5, end=0 18 * * 1-5, replicas=10"


def at(text: str, tz: str = "UTC") -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(tzinfo=ZoneInfo(tz))


@pytest.mark.parametrize(
    ("now", "floor"),
    [
        ("2026-12-07T07:59", 0),  # Monday before the start
        ("2026-12-07T08:00", 10),  # the start minute itself
        ("2026-12-07T12:30", 10),
        ("2026-12-07T18:00", 0),  # the end minute closes it
        ("2026-12-05T12:00", 0),  # Saturday
        ("2026-12-11T17:59", 10),  # Friday
    ],
)
def test_workday_window(now: str, floor: int) -> None:
    assert parse_schedule(WORKDAY).floor(at(now)) == floor


def test_window_over_midnight_and_highest_floor_wins() -> None:
    schedule = parse_schedule(
        "start=0 22 * * *, end=0 6 * * *, replicas=3; start=0 0 * * *, end=0 2 * * *, replicas=7"
    )
    assert schedule.floor(at("2026-12-04T23:00")) == 3
    assert schedule.floor(at("2026-12-05T01:00")) == 7
    assert schedule.floor(at("2026-12-05T05:59")) == 3
    assert schedule.floor(at("2026-12-05T06:00")) == 0


def test_timezone_keeps_local_wall_time_across_dst() -> None:
    schedule = parse_schedule(WORKDAY, "Europe/Paris")
    # 08:30 in Paris is 07:30 UTC in winter and 06:30 UTC in summer.
    assert schedule.floor(dt.datetime(2026, 12, 7, 7, 30, tzinfo=UTC)) == 10
    assert schedule.floor(dt.datetime(2026, 12, 7, 6, 30, tzinfo=UTC)) == 0
    assert schedule.floor(dt.datetime(2026, 7, 6, 6, 30, tzinfo=UTC)) == 10


def test_names_lists_and_steps() -> None:
    cron = Cron.parse("*/15 9-17/2 * JAN,dec sun,7")
    assert cron.minutes == frozenset({0, 15, 30, 45})
    assert cron.hours == frozenset({9, 11, 13, 15, 17})
    assert cron.months == frozenset({1, 12})
    assert cron.weekdays == frozenset({0})


def test_day_of_month_or_day_of_week_when_both_are_restricted() -> None:
    cron = Cron.parse("0 0 1 * MON")
    assert cron.matches_day(dt.date(2026, 12, 1))  # a Tuesday, the 1st
    assert cron.matches_day(dt.date(2026, 12, 7))  # a Monday
    assert not cron.matches_day(dt.date(2026, 12, 8))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "no window"),
        ("start=0 8 * * *, replicas=2", "missing end"),
        ("start=0 8 * * *, end=0 9 * * *, replicas=-1", "replicas '-1'"),
        ("start=0 8 * *, end=0 9 * * *, replicas=1", "needs 5 fields"),
        ("start=61 8 * * *, end=0 9 * * *, replicas=1", "minute: '61' is outside 0-59"),
        ("start=0 8 * * *, end=0 9 * * *, replicas=1, size=3", "'size=3' is not"),
        ("start=0 8 * * *, start=0 9 * * *, end=0 9 * * *, replicas=1", "start given twice"),
        ("start=*/0 8 * * *, end=0 9 * * *, replicas=1", "step '0'"),
    ],
)
def test_bad_schedules_name_the_part(text: str, message: str) -> None:
    with pytest.raises(ScheduleError, match=message.replace("*", r"\*")):
        parse_schedule(text)


def test_unknown_timezone() -> None:
    with pytest.raises(ScheduleError, match="unknown time zone 'Mars/Olympus'"):
        parse_schedule(WORKDAY, "Mars/Olympus")


@given(
    st.datetimes(
        min_value=dt.datetime(2000, 1, 1), max_value=dt.datetime(2100, 1, 1), timezones=st.just(UTC)
    ),
    st.integers(0, 23),
    st.integers(1, 23),
    st.integers(0, 50),
)
def test_daily_window_is_open_exactly_between_its_hours(
    now: dt.datetime, start: int, length: int, replicas: int
) -> None:
    end = (start + length) % 24
    schedule = parse_schedule(f"start=0 {start} * * *, end=0 {end} * * *, replicas={replicas}")
    hours_since_start = (now.hour - start) % 24
    assert schedule.floor(now) == (replicas if hours_since_start < length else 0)
