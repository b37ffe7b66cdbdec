"""Planning: a schedule, the previous planned run and a random draw give the next planned run.

The rules it follows (nominal grid, jitter, windows, DST, coalescing) are in
the package docstring, :mod:`ductile.domain.schedule`. Nothing here loops over
time or stores anything: the schedule index (a store concern) keeps the
:class:`PlannedRun` rows, and the runner (the app) fires what is due
(:mod:`ductile.domain.schedule.fire`).
"""

from __future__ import annotations

import enum
import functools
import hashlib
import json
from collections.abc import Iterator
from datetime import datetime, timedelta, tzinfo
from typing import Any

import attrs

from ductile.domain.draw import check_draw
from ductile.domain.errors import ScheduleError
from ductile.domain.protocol import EmittedEvent
from ductile.domain.quantities import format_duration
from ductile.domain.schedule.cron import cron_fires, validate_cron
from ductile.domain.schedule.wall import ONE_MICROSECOND, ONE_SECOND, require_aware
from ductile.domain.schedule.window import Window


class CatchUp(enum.StrEnum):
    SKIP = "skip"
    RUN_ONCE = "run_once"


@attrs.frozen(kw_only=True)
class Schedule:
    """A plugin's schedule, as configured (values already parsed)."""

    tz: tzinfo
    every: timedelta | None = None
    cron: str | None = None
    jitter: timedelta = timedelta(0)
    window: Window | None = None
    catch_up: CatchUp = CatchUp.SKIP
    #: The command a fire enqueues (``poll`` unless configured).
    command: str = "poll"
    #: A timer trigger: fire this event into the router instead of a command.
    emit: EmittedEvent | None = None

    def __attrs_post_init__(self) -> None:
        if (self.every is None) == (self.cron is None):
            raise ScheduleError("a schedule needs exactly one of 'every' or 'cron'")
        if self.every is not None and self.every <= timedelta(0):
            raise ScheduleError("'every' must be longer than zero")
        if self.cron is not None:
            object.__setattr__(self, "cron", validate_cron(self.cron))
        if self.jitter < timedelta(0):
            raise ScheduleError("'jitter' cannot be negative")
        if self.every is not None and self.jitter >= self.every:
            raise ScheduleError(
                f"'jitter' ({format_duration(self.jitter)}) must be shorter than "
                f"'every' ({format_duration(self.every)}), or runs could swap order"
            )

    def fingerprint(self) -> str:
        """Changes whenever anything that decides run times changes (and nothing else).

        What a run does (``command``, ``emit``) and ``catch_up`` are read at
        fire time, so editing them keeps the planned grid.
        """
        return _fingerprint(self.every, self.cron, self.jitter, self.window, str(self.tz))


@functools.lru_cache(maxsize=1024)
def _fingerprint(
    every: timedelta | None, cron: str | None, jitter: timedelta, window: Window | None, tz: str
) -> str:
    """:meth:`Schedule.fingerprint`, computed once per distinct input (every fire plans the next run)."""
    body: dict[str, Any] = {
        "every": every // ONE_MICROSECOND if every is not None else None,
        "cron": cron,
        "jitter": jitter // ONE_MICROSECOND,
        "window": [window.start.isoformat(), window.end.isoformat()] if window else None,
        "tz": tz,
    }
    raw = json.dumps(body, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(raw.encode()).hexdigest()[:16]


@attrs.frozen(kw_only=True)
class PlannedRun:
    """One row of the schedule index: the next run of one schedule."""

    key: str
    fingerprint: str
    #: Where the grid says the run belongs.
    nominal_at: datetime
    #: When it will actually run: nominal + jitter, kept inside the window.
    planned_at: datetime
    #: The jitter offset of this run (stored: never re-drawn). ``planned_at -
    #: nominal_at`` unless snapped; smaller than drawn when clamped to a window
    #: edge or to ``now``; the drawn offset when snapped.
    offset: timedelta
    #: True when the window moved the run to the start of a later window.
    snapped: bool = False


# --------------------------------------------------------------------------- the grid


def next_nominal(schedule: Schedule, after: datetime) -> datetime:
    """The grid point following the nominal time ``after``."""
    if schedule.every is not None:
        return after + schedule.every
    assert schedule.cron is not None
    return next(cron_fires(schedule.cron, after, schedule.tz))


def first_nominal(schedule: Schedule, now: datetime) -> datetime:
    """Where a newly seen schedule's grid starts.

    ``every``: ``now + jitter / 2`` (the anchor), so a new schedule runs
    within ``[now, now + jitter]`` of appearing and then every interval;
    ``cron``: the next fire after now.
    """
    if schedule.every is not None:
        return now + schedule.jitter / 2
    assert schedule.cron is not None
    return next(cron_fires(schedule.cron, now, schedule.tz))


def jitter_offset(jitter: timedelta, draw: float) -> timedelta:
    """``(draw - 0.5) * jitter`` for a draw in ``[0, 1)``: within ``±jitter / 2``."""
    check_draw(draw)
    return (jitter * (draw - 0.5)) if jitter else timedelta(0)


def place(
    schedule: Schedule, nominal: datetime, draw: float, *, not_before: datetime | None = None
) -> tuple[datetime, timedelta, bool]:
    """Planned instant, offset and snapped flag for a nominal time.

    ``not_before`` (at most ``nominal``) stops jitter from pulling the run
    earlier than it: used for a new schedule's first run, which may not lie in
    the past.
    """
    drawn = jitter_offset(schedule.jitter, draw)
    raw = nominal + drawn
    if not_before is not None:
        raw = max(raw, min(not_before, nominal))
    window, tz = schedule.window, schedule.tz
    if window is None:
        return raw, raw - nominal, False
    home = window.containing(nominal, tz)
    if home is not None:
        # Nominally inside: stay in this occurrence, moving toward the nominal time only.
        start, end = home
        planned = min(max(raw, start), max(nominal, end - ONE_SECOND))
        return planned, planned - nominal, False
    if window.contains(raw, tz):
        return raw, raw - nominal, False
    return window.next_start(raw, tz), drawn, True


def _earliest_useful(schedule: Schedule, floor: datetime) -> datetime:
    """No grid point before this can be placed after ``floor``.

    A point placed by jitter or clamping stays within ``jitter / 2`` of itself
    (so it needs ``nominal > floor - jitter / 2``); one snapped to a window
    start lands after ``floor`` only if no window opened between its jittered
    time and ``floor``, so its jittered time is at or after the end of the last
    window that opened at or before ``floor``.
    """
    base = floor
    if schedule.window is not None:
        last = schedule.window.last_occurrence(floor, schedule.tz)
        if last is not None and last[1] < base:
            base = last[1]
    return base - schedule.jitter / 2


def _grid(schedule: Schedule, after: datetime, lower: datetime) -> Iterator[datetime]:
    """Grid points strictly after the nominal time ``after`` and at or after ``lower``, increasing."""
    if schedule.every is not None:
        every = schedule.every
        steps = max(1, -((after - lower) // every))  # ceil((lower - after) / every), at least one
        nominal = after + steps * every
        while True:
            yield nominal
            nominal += every
    assert schedule.cron is not None
    yield from cron_fires(schedule.cron, max(after, lower - ONE_MICROSECOND), schedule.tz)


def plan_next(
    schedule: Schedule,
    *,
    key: str,
    previous: PlannedRun | None,
    now: datetime,
    draw: float,
) -> PlannedRun:
    """The next planned run of ``schedule``.

    ``previous`` is the run just fired (or skipped); when it is missing or
    belongs to another version of the schedule (fingerprint), the grid
    restarts at :func:`first_nominal` and the run is at or after ``now``.
    Otherwise the result is the earliest grid point after
    ``previous.nominal_at`` whose placed time is strictly after both
    ``previous.planned_at`` and ``now``.
    """
    require_aware(now, "now")
    fp = schedule.fingerprint()
    if previous is None or previous.fingerprint != fp:
        nominal = first_nominal(schedule, now)
        planned, offset, snapped = place(schedule, nominal, draw, not_before=now)
        return PlannedRun(
            key=key, fingerprint=fp, nominal_at=nominal, planned_at=planned, offset=offset, snapped=snapped
        )
    floor = max(now, previous.planned_at)
    for nominal in _grid(schedule, previous.nominal_at, _earliest_useful(schedule, floor)):
        planned, offset, snapped = place(schedule, nominal, draw)
        if planned > floor:
            return PlannedRun(
                key=key,
                fingerprint=fp,
                nominal_at=nominal,
                planned_at=planned,
                offset=offset,
                snapped=snapped,
            )
    raise AssertionError("unreachable: the grid is infinite")  # pragma: no cover


def preview(
    schedule: Schedule, entry: PlannedRun, start: datetime, end: datetime, *, limit: int = 1000
) -> list[PlannedRun]:
    """The stored run and the runs after it in ``[start, end)``, at most ``limit``.

    Later runs have no jitter drawn yet, so they are shown at their centre
    (draw 0.5); the window still applies. A range far after ``entry`` is
    reached in one step, not by walking the runs before it.
    """
    runs: list[PlannedRun] = []
    current = entry
    if current.planned_at < start:
        current = plan_next(schedule, key=entry.key, previous=current, now=start - ONE_MICROSECOND, draw=0.5)
    while current.planned_at < end and len(runs) < limit:
        if current.planned_at >= start:
            runs.append(current)
        current = plan_next(schedule, key=entry.key, previous=current, now=current.planned_at, draw=0.5)
    return runs
