"""Planning: a schedule, the previous planned run and a random draw give the next planned run.

The rules it follows (nominal grid, jitter, windows, DST, coalescing, the
one-shots ``at`` and ``after``, ``not_on`` days) are in the package
docstring, :mod:`ductile.domain.schedule`. Nothing here loops over time or
stores anything: the schedule index (a store concern) keeps the
:class:`PlannedRun` rows, and the runner (the app) fires what is due
(:mod:`ductile.domain.schedule.fire`).
"""

from __future__ import annotations

import enum
import functools
import hashlib
import json
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any

import attrs

from ductile.domain.draw import check_draw
from ductile.domain.errors import ScheduleError
from ductile.domain.protocol import EmittedEvent
from ductile.domain.quantities import format_duration
from ductile.domain.schedule.cron import cron_fires, validate_cron
from ductile.domain.schedule.days import excluded, next_allowed_day
from ductile.domain.schedule.key import DEFAULT_SCHEDULE_ID, SCHEDULE_ID, split_key
from ductile.domain.schedule.wall import ONE_MICROSECOND, ONE_SECOND, require_aware
from ductile.domain.schedule.window import Window

#: How many runs in a row may land on ``not_on`` days before a schedule is judged never to run.
MAX_DAY_JUMPS = 1000
#: Where a one-shot's planned run goes once it fired (or was skipped): never due again.
EXHAUSTED = datetime(9999, 12, 31, tzinfo=UTC)


class CatchUp(enum.StrEnum):
    SKIP = "skip"
    RUN_ONCE = "run_once"
    #: One job per missed run, at most :data:`~ductile.domain.schedule.fire.RUN_ALL_CAP`.
    RUN_ALL = "run_all"


class IfRunning(enum.StrEnum):
    """What a firing does while jobs of its schedule are still queued or running."""

    #: Enqueue nothing while one is queued or running.
    SKIP = "skip"
    #: Enqueue while fewer than ``max_outstanding_polls`` are queued or running (D21).
    QUEUE = "queue"
    #: Cancel the outstanding ones (queued: dead; running: stopped, then dead), then enqueue.
    CANCEL = "cancel"


def _aware_or_none(_: Any, attribute: attrs.Attribute[Any], value: datetime | None) -> None:
    if value is not None:
        require_aware(value, attribute.name)


@attrs.frozen(kw_only=True)
class Schedule:
    """One schedule of a plugin, as configured (values already parsed)."""

    tz: tzinfo
    every: timedelta | None = None
    cron: str | None = None
    #: A one-shot at this instant.
    at: datetime | None = attrs.field(default=None, validator=_aware_or_none)
    #: A one-shot this long after the daemon starts (or after the reload that adds it).
    after: timedelta | None = None
    jitter: timedelta = timedelta(0)
    window: Window | None = None
    #: Python weekday numbers (Monday 0) on which no run is planned, in ``tz``.
    not_on: frozenset[int] = frozenset()
    catch_up: CatchUp = CatchUp.SKIP
    if_running: IfRunning = IfRunning.QUEUE
    #: The command a fire enqueues (``poll`` unless configured).
    command: str = "poll"
    #: The job's payload (a v2 plugin receives it as the request's ``payload``).
    payload: Mapping[str, Any] = attrs.field(factory=dict)
    #: A timer trigger: fire this event into the router instead of a command.
    emit: EmittedEvent | None = None
    #: Unique among the plugin's schedules; ``default`` for the ``schedule:`` shorthand.
    id: str = DEFAULT_SCHEDULE_ID

    def __attrs_post_init__(self) -> None:
        kinds = [k for k in ("every", "cron", "at", "after") if getattr(self, k) is not None]
        if len(kinds) != 1:
            raise ScheduleError("a schedule needs exactly one of 'every', 'cron', 'at' or 'after'")
        if not SCHEDULE_ID.fullmatch(self.id):
            raise ScheduleError(
                f"schedule id {self.id[:40]!r} must be letters, digits, '_' and '-' (at most 64), "
                "starting with a letter or digit"
            )
        if self.every is not None and self.every <= timedelta(0):
            raise ScheduleError("'every' must be longer than zero")
        if self.after is not None and self.after < timedelta(0):
            raise ScheduleError("'after' cannot be negative")
        if self.cron is not None:
            object.__setattr__(self, "cron", validate_cron(self.cron))
        if self.jitter < timedelta(0):
            raise ScheduleError("'jitter' cannot be negative")
        if self.every is not None and self.jitter >= self.every:
            raise ScheduleError(
                f"'jitter' ({format_duration(self.jitter)}) must be shorter than "
                f"'every' ({format_duration(self.every)}), or runs could swap order"
            )
        if self.not_on and self.one_shot:
            raise ScheduleError("'not_on' is for recurring schedules ('every' or 'cron'), not one-shots")
        if len(self.not_on) >= 7:
            raise ScheduleError("'not_on' excludes every day of the week: the schedule would never run")

    @property
    def one_shot(self) -> bool:
        """``at`` or ``after``: one run, then the schedule is done."""
        return self.at is not None or self.after is not None

    def fingerprint(self) -> str:
        """Changes whenever anything that decides run times changes (and nothing else).

        What a run does (``command``, ``payload``, ``emit``), ``catch_up`` and
        ``if_running`` are read at fire time, so editing them keeps the planned
        grid. A schedule that uses none of ``at``, ``after`` and ``not_on`` has
        the fingerprint it had before they existed.
        """
        extra = (
            self.at.astimezone(UTC).isoformat() if self.at is not None else None,
            self.after // ONE_MICROSECOND if self.after is not None else None,
            tuple(sorted(self.not_on)),
        )
        return _fingerprint((self.every, self.cron, self.jitter, self.window, str(self.tz)), extra)


@functools.lru_cache(maxsize=1024)
def _fingerprint(
    grid: tuple[timedelta | None, str | None, timedelta, Window | None, str],
    extra: tuple[str | None, int | None, tuple[int, ...]],
) -> str:
    """:meth:`Schedule.fingerprint`, computed once per distinct input (every fire plans the next run)."""
    every, cron, jitter, window, tz = grid
    body: dict[str, Any] = {
        "every": every // ONE_MICROSECOND if every is not None else None,
        "cron": cron,
        "jitter": jitter // ONE_MICROSECOND,
        "window": [window.start.isoformat(), window.end.isoformat()] if window else None,
        "tz": tz,
    }
    at, after, not_on = extra
    if at is not None:
        body["at"] = at
    if after is not None:
        body["after"] = after
    if not_on:
        body["not_on"] = list(not_on)
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

    @property
    def plugin(self) -> str:
        """The plugin whose schedule this is (see :mod:`~ductile.domain.schedule.key`)."""
        return split_key(self.key)[0]

    @property
    def schedule_id(self) -> str:
        return split_key(self.key)[1]

    @property
    def done(self) -> bool:
        """A one-shot that fired (or was skipped): never due again."""
        return self.planned_at >= EXHAUSTED


# --------------------------------------------------------------------------- the grid


def next_nominal(schedule: Schedule, after: datetime) -> datetime:
    """The grid point following the nominal time ``after`` (a one-shot has none: :data:`EXHAUSTED`)."""
    if schedule.every is not None:
        return after + schedule.every
    if schedule.one_shot:
        return EXHAUSTED
    assert schedule.cron is not None
    return next(cron_fires(schedule.cron, after, schedule.tz))


def first_nominal(schedule: Schedule, now: datetime) -> datetime:
    """Where a newly seen schedule's grid starts.

    ``every``: ``now + jitter / 2`` (the anchor), so a new schedule runs
    within ``[now, now + jitter]`` of appearing and then every interval;
    ``cron``: the next fire after now; ``at``: its instant (past or not);
    ``after``: ``now + after``.
    """
    if schedule.every is not None:
        return now + schedule.jitter / 2
    if schedule.at is not None:
        return schedule.at
    if schedule.after is not None:
        return now + schedule.after
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
    ``previous.planned_at`` and ``now``. Either way a run whose placed time
    falls on a ``not_on`` day is passed over. A one-shot is planned once:
    after ``previous`` it is done (:data:`EXHAUSTED`).
    """
    require_aware(now, "now")
    fp = schedule.fingerprint()
    fresh = previous is None or previous.fingerprint != fp
    if schedule.one_shot:
        return _plan_one_shot(
            schedule, key=key, fp=fp, previous=None if fresh else previous, now=now, draw=draw
        )
    if fresh:
        nominal = first_nominal(schedule, now)
        planned, offset, snapped = place(schedule, nominal, draw, not_before=now)
        if not excluded(planned, schedule.tz, schedule.not_on):
            return PlannedRun(
                key=key,
                fingerprint=fp,
                nominal_at=nominal,
                planned_at=planned,
                offset=offset,
                snapped=snapped,
            )
        after, floor = nominal, now
    else:
        assert previous is not None
        after, floor = previous.nominal_at, max(now, previous.planned_at)
    return _next_on_grid(schedule, key=key, fp=fp, after=after, floor=floor, draw=draw)


def _plan_one_shot(
    schedule: Schedule, *, key: str, fp: str, previous: PlannedRun | None, now: datetime, draw: float
) -> PlannedRun:
    """A one-shot's run: its instant (``at``, or ``now + after``) when new, else done.

    An ``at`` in the past stays in the past: the runner's catch-up rule decides
    whether it still runs.
    """
    if previous is not None:
        return PlannedRun(
            key=key,
            fingerprint=fp,
            nominal_at=previous.nominal_at,
            planned_at=EXHAUSTED,
            offset=timedelta(0),
            snapped=False,
        )
    nominal = first_nominal(schedule, now)
    not_before = now if schedule.after is not None else None
    planned, offset, snapped = place(schedule, nominal, draw, not_before=not_before)
    return PlannedRun(
        key=key, fingerprint=fp, nominal_at=nominal, planned_at=planned, offset=offset, snapped=snapped
    )


def _next_on_grid(
    schedule: Schedule, *, key: str, fp: str, after: datetime, floor: datetime, draw: float
) -> PlannedRun:
    """The first grid point after the nominal ``after`` placed strictly after ``floor`` and not on a
    ``not_on`` day. A point placed on an excluded day moves the search to the next allowed day, so
    at most a week's worth of days is looked at whatever the interval."""
    lower = _earliest_useful(schedule, floor)
    for _ in range(MAX_DAY_JUMPS):
        for nominal in _grid(schedule, after, lower):
            planned, offset, snapped = place(schedule, nominal, draw)
            if planned <= floor:
                continue
            if excluded(planned, schedule.tz, schedule.not_on):
                day = next_allowed_day(planned, schedule.tz, schedule.not_on)
                after, lower = nominal, max(lower, _earliest_useful(schedule, day - ONE_MICROSECOND))
                break
            return PlannedRun(
                key=key,
                fingerprint=fp,
                nominal_at=nominal,
                planned_at=planned,
                offset=offset,
                snapped=snapped,
            )
    raise ScheduleError(
        "no run of this schedule falls outside its 'not_on' days "
        f"({MAX_DAY_JUMPS} runs in a row landed on one)"
    )


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
    if current.done:
        return runs
    if current.planned_at < start:
        current = plan_next(schedule, key=entry.key, previous=current, now=start - ONE_MICROSECOND, draw=0.5)
    while current.planned_at < end and len(runs) < limit:
        if current.planned_at >= start:
            runs.append(current)
        current = plan_next(schedule, key=entry.key, previous=current, now=current.planned_at, draw=0.5)
    return runs
