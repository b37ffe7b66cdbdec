"""``not_on``: the weekdays a schedule never runs on, judged in the schedule's zone.

Days are written as names (``sat``, ``Saturday``) or numbers 0-6 where 0 is
Sunday, as in cron; they are kept as Python weekday numbers (Monday is 0). A
run is on an excluded day when its *planned* instant, read in the schedule's
zone, falls on one: a run whose jitter carries it past midnight into an
excluded day does not run there.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, time, timedelta, tzinfo

from ductile.domain.errors import ScheduleError
from ductile.domain.schedule.wall import to_wall, wall_to_utc

#: Python weekday numbers by name (Monday is 0).
_NAMES = {
    "mon": 0,
    "monday": 0,
    "tue": 1,
    "tues": 1,
    "tuesday": 1,
    "wed": 2,
    "wednesday": 2,
    "thu": 3,
    "thur": 3,
    "thurs": 3,
    "thursday": 3,
    "fri": 4,
    "friday": 4,
    "sat": 5,
    "saturday": 5,
    "sun": 6,
    "sunday": 6,
}
SHORT_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def parse_weekday(value: object) -> int:
    """A weekday as written (a name, or 0-6 with 0 for Sunday) as a Python weekday number."""
    if isinstance(value, int) and not isinstance(value, bool):
        if not 0 <= value <= 6:
            raise ScheduleError(f"a weekday number is 0-6 (0 is Sunday), not {value}")
        return (value - 1) % 7
    if isinstance(value, str):
        text = value.strip().lower()
        if text.isdigit() and len(text) == 1:
            return parse_weekday(int(text))
        if text in _NAMES:
            return _NAMES[text]
    raise ScheduleError(f"{value!r} is not a weekday: write mon, tue ... sun, or 0-6 with 0 for Sunday")


def weekdays(values: Iterable[object]) -> frozenset[int]:
    days = frozenset(parse_weekday(v) for v in values)
    if len(days) == 7:
        raise ScheduleError("'not_on' excludes every day of the week: the schedule would never run")
    return days


def excluded(at: datetime, tz: tzinfo, not_on: frozenset[int]) -> bool:
    """Is the instant ``at`` on one of the ``not_on`` days in ``tz``?"""
    return bool(not_on) and to_wall(at, tz).weekday() in not_on


def next_allowed_day(at: datetime, tz: tzinfo, not_on: frozenset[int]) -> datetime:
    """The first instant of the first day after ``at``'s day (in ``tz``) that is not excluded."""
    day = to_wall(at, tz).date()
    for _ in range(7):
        day += timedelta(days=1)
        if day.weekday() not in not_on:
            return wall_to_utc(datetime.combine(day, time()), tz)
    raise ScheduleError("'not_on' excludes every day of the week")  # pragma: no cover - refused earlier
