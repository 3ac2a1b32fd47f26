"""Scheduled floors for known load patterns: ``start=<cron>, end=<cron>, replicas=<n>``.

A *window* is open from an occurrence of its ``start`` cron until the next occurrence of
its ``end`` cron; while it is open, the workload keeps at least ``replicas`` (a floor that
joins the other triggers: the highest wins, and a floor above zero activates a workload
at zero before its load arrives). This is KEDA's cron scaler, with one difference: the
window is decided by which of start and end fired *last* (scanning back from ``now``),
so a controller that starts mid-window sees it open at once.

Cron expressions have the five standard fields (minute hour day-of-month month
day-of-week) with ``*``, lists ``a,b``, ranges ``a-b`` and steps ``*/n`` / ``a-b/n``;
day-of-week 0 and 7 are Sunday; names (``MON``, ``JAN``) are accepted. When both
day-of-month and day-of-week are restricted, a day matches either (as cron does).
Times are evaluated in the schedule's IANA time zone (``zoneinfo``, standard library),
so "08:00 on weekdays" stays 08:00 across daylight-saving changes.

Pure: callers pass ``now`` as an aware ``datetime``; nothing here reads the clock.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

# How far back to look for the last start/end: a yearly window ("0 0 1 1 *") still works.
LOOKBACK_DAYS = 366 + 31

_MONTHS = ["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"]
_DAYS = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"]


class ScheduleError(ValueError):
    """A schedule or cron expression that cannot be used; the message names the part."""


def _field(text: str, low: int, high: int, names: list[str] | None, what: str) -> frozenset[int]:
    values: set[int] = set()

    def number(token: str) -> int:
        token = token.strip().upper()
        if names is not None and token in names:
            return names.index(token) + low
        if not token.isdigit():
            raise ScheduleError(f"{what}: {token!r} is not a number")
        return int(token)

    for part in text.split(","):
        base, _, step_text = part.partition("/")
        step = 1
        if step_text:
            if not step_text.isdigit() or int(step_text) == 0:
                raise ScheduleError(f"{what}: step {step_text!r} must be a positive integer")
            step = int(step_text)
        if base == "*":
            first, last = low, high
        elif "-" in base:
            a, b = base.split("-", 1)
            first, last = number(a), number(b)
        else:
            first = number(base)
            last = high if step_text else first
        top = 7 if what == "day-of-week" else high  # 7 is Sunday too
        if not (low <= first <= top and low <= last <= top) or first > last:
            raise ScheduleError(f"{what}: {part!r} is outside {low}-{high}")
        values.update(range(first, last + 1, step))
    if what == "day-of-week" and 7 in values:
        values.discard(7)
        values.add(0)
    return frozenset(values)


@dataclass(frozen=True, slots=True)
class Cron:
    """A parsed five-field cron expression; ``text`` is what the user wrote."""

    text: str
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # 0 = Sunday
    any_day: bool  # day-of-month is "*"
    any_weekday: bool  # day-of-week is "*"

    @classmethod
    def parse(cls, text: str) -> Cron:
        fields = text.split()
        if len(fields) != 5:
            raise ScheduleError(
                f"cron {text!r} needs 5 fields (minute hour day-of-month month day-of-week)"
            )
        minute, hour, day, month, weekday = fields
        return cls(
            text=" ".join(fields),
            minutes=_field(minute, 0, 59, None, "minute"),
            hours=_field(hour, 0, 23, None, "hour"),
            days=_field(day, 1, 31, None, "day-of-month"),
            months=_field(month, 1, 12, _MONTHS, "month"),
            weekdays=_field(weekday, 0, 6, _DAYS, "day-of-week"),
            any_day=day == "*",
            any_weekday=weekday == "*",
        )

    def matches_day(self, day: dt.date) -> bool:
        if day.month not in self.months:
            return False
        in_month = day.day in self.days
        in_week = (day.isoweekday() % 7) in self.weekdays
        if self.any_day or self.any_weekday:
            return in_month and in_week
        return in_month or in_week

    def last_before(self, now: dt.datetime) -> dt.datetime | None:
        """The latest occurrence at or before ``now`` (in ``now``'s zone), within the lookback."""
        local = now.replace(second=0, microsecond=0)
        for back in range(LOOKBACK_DAYS):
            day = (local - dt.timedelta(days=back)).date()
            if not self.matches_day(day):
                continue
            for hour in sorted(self.hours, reverse=True):
                for minute in sorted(self.minutes, reverse=True):
                    at = dt.datetime(day.year, day.month, day.day, hour, minute, tzinfo=now.tzinfo)
                    if at <= local:
                        return at
        return None


@dataclass(frozen=True, slots=True)
class Window:
    """One ``start=…, end=…, replicas=…`` entry."""

    start: Cron
    end: Cron
    replicas: int

    def open_at(self, now: dt.datetime) -> bool:
        started = self.start.last_before(now)
        if started is None:
            return False
        ended = self.end.last_before(now)
        return ended is None or started > ended


@dataclass(frozen=True, slots=True)
class Schedule:
    """The ``schedule`` annotation: windows in one time zone."""

    windows: tuple[Window, ...]
    timezone: str = "UTC"

    def floor(self, now: dt.datetime) -> int:
        """The highest ``replicas`` among the windows open at ``now`` (0 when none is)."""
        local = now.astimezone(ZoneInfo(self.timezone))
        return max((w.replicas for w in self.windows if w.open_at(local)), default=0)


def parse_timezone(text: str) -> str:
    try:
        ZoneInfo(text)
    except (ZoneInfoNotFoundError, ValueError) as e:
        raise ScheduleError(
            f"unknown time zone {text!r} (use an IANA name such as Europe/Paris)"
        ) from e
    return text


def parse_schedule(text: str, timezone: str = "UTC") -> Schedule:
    """Parse ``start=<cron>, end=<cron>, replicas=<n>[; …]``; raises ``ScheduleError``."""
    windows = []
    for number, entry in enumerate(filter(str.strip, text.split(";")), start=1):
        parts: dict[str, str] = {}
        for item in entry.split(","):
            key, sep, value = item.partition("=")
            key = key.strip()
            if not sep or key not in ("start", "end", "replicas"):
                raise ScheduleError(
                    f"window {number}: {item.strip()!r} is not start=<cron>, end=<cron> "
                    "or replicas=<n>"
                )
            if key in parts:
                raise ScheduleError(f"window {number}: {key} given twice")
            parts[key] = value.strip()
        missing = [k for k in ("start", "end", "replicas") if k not in parts]
        if missing:
            raise ScheduleError(f"window {number}: missing {', '.join(missing)}")
        if not parts["replicas"].isdigit():
            raise ScheduleError(
                f"window {number}: replicas {parts['replicas']!r} must be an integer ≥ 0"
            )
        try:
            start, end = Cron.parse(parts["start"]), Cron.parse(parts["end"])
        except ScheduleError as e:
            raise ScheduleError(f"window {number}: {e}") from e
        windows.append(Window(start, end, int(parts["replicas"])))
    if not windows:
        raise ScheduleError("no window: write start=<cron>, end=<cron>, replicas=<n>")
    return Schedule(tuple(windows), parse_timezone(timezone))
