"""Preferred windows: a daily span of wall time, and its occurrences as instants.

A window opens each wall day at the first instant the clock reads ``start``
and closes at the first instant it reads ``end`` (the next day for an
overnight window). Like cron, it follows the first occurrence of a repeated
hour; a day whose whole window falls into a spring-forward gap has none. How a
run is kept in or snapped to a window is :func:`~ductile.domain.schedule.plan.place`.
"""

from __future__ import annotations

import functools
import re
from datetime import date, datetime, time, timedelta, tzinfo

import attrs

from ductile.domain.errors import ScheduleError
from ductile.domain.schedule.wall import to_wall, wall_to_utc

#: How many days a window search looks at; a window is missing on a DST day at most.
_WINDOW_SEARCH_DAYS = 8

_CLOCK = re.compile(r"([01]\d|2[0-3]):([0-5]\d)")


def _parse_clock(text: str, where: str) -> time:
    m = _CLOCK.fullmatch(text) if isinstance(text, str) else None
    if m is None:
        raise ScheduleError(f"{where} must be a time like '06:00' (00:00 to 23:59), not {text!r}")
    return time(int(m.group(1)), int(m.group(2)))


@attrs.frozen
class Window:
    """A daily span of wall time, ``[start, end)``; overnight when start > end.

    Each wall day ``d`` has one *occurrence*: the instants from the first one
    whose wall time reads ``d start`` (or later) up to, excluding, the first
    one that reads the end (on ``d``, or on ``d + 1`` for an overnight
    window). Occurrences are disjoint and increasing; one swallowed by a
    spring-forward gap is empty.
    """

    start: time
    end: time

    def __attrs_post_init__(self) -> None:
        if self.start.tzinfo is not None or self.end.tzinfo is not None:
            raise ScheduleError("preferred_window times are wall-clock times and take no zone")
        if self.start == self.end:
            raise ScheduleError(
                f"preferred_window start and end must differ (both are {self.start.isoformat('minutes')})"
            )

    @classmethod
    def parse(cls, start: str, end: str) -> Window:
        return cls(_parse_clock(start, "preferred_window.start"), _parse_clock(end, "preferred_window.end"))

    @property
    def overnight(self) -> bool:
        return self.start > self.end

    def contains_wall(self, wall: datetime) -> bool:
        """Whether a clock reading lies in ``[start, end)`` (no DST: see :meth:`contains`)."""
        t = wall.time()
        if self.overnight:
            return t >= self.start or t < self.end
        return self.start <= t < self.end

    def occurrence(self, day: date, tz: tzinfo) -> tuple[datetime, datetime]:
        """The ``[start, end)`` instants of the window opening on wall day ``day`` (maybe empty)."""
        return _occurrence(self, day, tz)

    def containing(self, at: datetime, tz: tzinfo) -> tuple[datetime, datetime] | None:
        """The occurrence that contains ``at``, if any."""
        day = to_wall(at, tz).date()
        for d in (day, day - timedelta(days=1), day + timedelta(days=1)):
            start, end = self.occurrence(d, tz)
            if start <= at < end:
                return start, end
        return None

    def contains(self, at: datetime, tz: tzinfo) -> bool:
        return self.containing(at, tz) is not None

    def bounds(self, at: datetime, tz: tzinfo) -> tuple[datetime, datetime]:
        """The ``[start, end)`` instants of the occurrence containing ``at``."""
        found = self.containing(at, tz)
        if found is None:
            raise ValueError(f"{at.isoformat()} is not inside the window {self.start}-{self.end} in {tz}")
        return found

    def next_start(self, after: datetime, tz: tzinfo) -> datetime:
        """The first (non-empty) window start strictly after ``after``."""
        day = to_wall(after, tz).date() - timedelta(days=1)
        for i in range(_WINDOW_SEARCH_DAYS):
            start, end = self.occurrence(day + timedelta(days=i), tz)
            if start < end and start > after:
                return start
        raise ScheduleError(f"window {self.start}-{self.end} does not open within a week of {after}")

    def last_occurrence(self, at: datetime, tz: tzinfo) -> tuple[datetime, datetime] | None:
        """The latest non-empty occurrence that opened at or before ``at``."""
        day = to_wall(at, tz).date() + timedelta(days=1)
        for i in range(_WINDOW_SEARCH_DAYS):
            start, end = self.occurrence(day - timedelta(days=i), tz)
            if start < end and start <= at:
                return start, end
        return None


@functools.lru_cache(maxsize=1024)
def _occurrence(window: Window, day: date, tz: tzinfo) -> tuple[datetime, datetime]:
    """:meth:`Window.occurrence`, memoized: planning asks for the same few days over and over."""
    start = wall_to_utc(datetime.combine(day, window.start), tz)
    end_day = day + timedelta(days=1) if window.overnight else day
    return start, wall_to_utc(datetime.combine(end_day, window.end), tz)
