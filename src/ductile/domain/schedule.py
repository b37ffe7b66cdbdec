"""Schedule math (D17): the first of three layers, and the only pure one.

Given a schedule, the previous planned run and a random draw, decide the next
planned run. Nothing here loops over time or stores anything: the schedule
*index* (a store concern) keeps the planned runs; the *runner* (the app)
asks it what is due and enqueues.

Rules, each written down in ``docs/adr``:

* **Nominal grid.** ``every`` runs sit on ``anchor + k * interval`` in
  elapsed (UTC) time, the anchor being the moment the schedule was first
  planned (``now + jitter / 2``); ``cron`` runs sit on the expression's fire
  times in the schedule's zone. Jitter is an offset from the nominal time,
  drawn once per planned run, so runs never drift as a random walk.
* **Jitter** is ``(draw - 0.5) * jitter``: ``|offset| <= jitter / 2``.
* **Windows** are hard. A window is a daily span of wall time; each day it
  opens at the first instant the clock reads ``start`` and closes at the first
  instant it reads ``end`` (so, like cron, it follows the first occurrence of
  a repeated hour, and a day whose whole window falls into a spring-forward
  gap has no window). A run whose *nominal* time is inside a window stays in
  that window: if jitter pushed it out, it is clamped to the window's edge.
  A run whose nominal time is outside every window runs at its jittered time
  if that is inside a window, else it snaps to the start of the next window.
  Overnight windows (22:00-06:00) work.
* **DST.** Cron and windows are evaluated in wall time of the zone; instants
  are UTC. A wall time in a spring-forward gap runs at the end of the gap (the
  transition instant); a wall time in a fall-back overlap runs once, at its
  first occurrence.
* **Coalescing.** Runs never go backwards or repeat: the next planned time is
  strictly after the previous planned time and after ``now`` (nominal times
  that would land on or before either are skipped, however many). A newly seen
  schedule (no previous run, or a changed fingerprint) starts a new grid; its
  first run may be ``now`` itself but never earlier: when jitter would put the
  first cron fire in the past, it runs at ``now``.

Everything that walks time is bounded: planning after a year of downtime jumps
the grid (``every``) or restarts the cron search near ``now``, and visits only
the grid points that could land after ``now``.
"""

from __future__ import annotations

import copy
import enum
import functools
import hashlib
import json
import re
from collections.abc import Iterable, Iterator
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from typing import Any

import attrs
from croniter import croniter

from ductile.domain.errors import ScheduleError
from ductile.domain.protocol import EmittedEvent
from ductile.domain.quantities import format_duration
from ductile.domain.routing import event_id_for

ONE_SECOND = timedelta(seconds=1)
ONE_MICROSECOND = timedelta(microseconds=1)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
#: How many wall times in a row may map onto an already-yielded fire (a fall-back
#: overlap of a minutely cron costs 60) before the cron search gives up.
_CRON_SEARCH_LIMIT = 5000
#: Where :func:`validate_cron` looks for a first fire (croniter searches 50 years on).
_CRON_REFERENCE = datetime(2000, 1, 1)  # noqa: DTZ001 - a wall time, naive on purpose
#: How many days a window search looks at; a window is missing on a DST day at most.
_WINDOW_SEARCH_DAYS = 8


class CatchUp(enum.StrEnum):
    SKIP = "skip"
    RUN_ONCE = "run_once"


def _require_aware(at: datetime, what: str) -> None:
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError(f"{what} must be a timezone-aware instant, got naive {at!r}")


# --------------------------------------------------------------------------- wall time


def wall_to_utc(wall: datetime, tz: tzinfo) -> datetime:
    """The UTC instant of a naive wall time in ``tz``: the first instant the clock reads ``wall`` or later.

    An overlap (fall-back) resolves to the first occurrence (``fold=0``); a
    wall time that does not exist (spring-forward gap) resolves to the end of
    the gap, the transition instant. The result is non-decreasing in ``wall``.
    """
    if wall.tzinfo is not None:
        raise ValueError(f"wall_to_utc takes a naive wall time, got {wall!r}")
    wall = wall.replace(fold=0)
    first = wall.replace(tzinfo=tz).astimezone(UTC)
    if to_wall(first, tz) == wall:
        return first
    second = wall.replace(tzinfo=tz, fold=1).astimezone(UTC)
    if to_wall(second, tz) == wall:  # pragma: no cover - only odd tzinfo classes get here
        return second
    # A gap: the wall time read at ``lo`` is before ``wall``, at ``hi`` after it.
    lo, hi = min(first, second), max(first, second)
    while hi - lo > ONE_MICROSECOND:
        mid = lo + (hi - lo) // 2
        if to_wall(mid, tz) >= wall:
            hi = mid
        else:
            lo = mid
    return hi


def to_wall(at: datetime, tz: tzinfo) -> datetime:
    """The naive wall time of an (aware) instant in ``tz``."""
    _require_aware(at, "an instant")
    return at.astimezone(tz).replace(tzinfo=None)


# --------------------------------------------------------------------------- windows


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


# --------------------------------------------------------------------------- schedules


def validate_cron(expr: str) -> str:
    """A 5-field cron expression that fires at least once, normalized; raises :class:`ScheduleError`."""
    if not isinstance(expr, str):
        raise ScheduleError(
            f"cron must be a string of 5 fields (minute hour day month weekday), not {expr!r}"
        )
    fields = expr.split()
    if len(fields) != 5:
        raise ScheduleError(
            f"cron must have exactly 5 fields (minute hour day month weekday), {expr!r} has {len(fields)}"
        )
    normalized = " ".join(fields)
    try:
        ok = bool(croniter.is_valid(normalized))
    except Exception:  # croniter raises several kinds on odd input
        ok = False
    if not ok:
        raise ScheduleError(f"cron expression {expr!r} is not valid")
    try:
        croniter(normalized, _CRON_REFERENCE).get_next(datetime)
    except Exception as e:  # e.g. '0 0 31 2 *': no date ever matches
        raise ScheduleError(f"cron expression {expr!r} never fires: no date matches it") from e
    return normalized


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


@functools.lru_cache(maxsize=256)
def _parsed_cron(expr: str) -> Any:
    """A croniter for ``expr``, parsed once (parsing costs far more than a step)."""
    try:
        return croniter(expr, _CRON_REFERENCE)
    except Exception as e:
        raise ScheduleError(f"cron expression {expr!r} is not valid") from e


def _cron_iterator(expr: str, start: datetime) -> Any:
    """A fresh croniter over naive wall time, positioned at ``start`` (excluded)."""
    it = copy.copy(_parsed_cron(expr))
    it.set_current(start, force=True)
    return it


def cron_fires(expr: str, after: datetime, tz: tzinfo) -> Iterator[datetime]:
    """Fire instants of ``expr`` in ``tz`` strictly after ``after``, increasing.

    Each wall time fires once: at its first occurrence in a fall-back overlap,
    at the end of the gap in a spring-forward gap (once, however many wall
    times of the gap match, and not again for the wall time the gap ends at).
    """
    it = _cron_iterator(expr, to_wall(after, tz))
    last = after
    misses = 0
    while True:
        try:
            wall = it.get_next(datetime)
        except Exception as e:  # e.g. '0 0 31 2 *' never fires
            raise ScheduleError(f"cron expression {expr!r} has no next fire time") from e
        at = wall_to_utc(wall, tz)
        if at > last:
            misses = 0
            last = at
            yield at
            landed = to_wall(at, tz)
            if landed > wall:
                # ``wall`` was in a gap: every wall time up to ``landed`` maps onto ``at`` too.
                it = _cron_iterator(expr, landed)
        else:
            # A wall time repeated by a fall-back overlap, already passed.
            misses += 1
            if misses > _CRON_SEARCH_LIMIT:  # pragma: no cover - defensive
                raise ScheduleError(f"cron expression {expr!r} does not advance")


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
    if not 0.0 <= draw < 1.0:
        raise ValueError(f"a random draw must be in [0, 1), got {draw!r}")
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
    _require_aware(now, "now")
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


# --------------------------------------------------------------------------- due / fire decisions


def due(entries: Iterable[PlannedRun], start: datetime, end: datetime) -> list[PlannedRun]:
    """Planned runs in ``[start, end)``, earliest first: the index's one question."""
    return sorted((e for e in entries if start <= e.planned_at < end), key=lambda e: (e.planned_at, e.key))


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


class FireDecision(enum.StrEnum):
    FIRE = "fire"
    #: Missed by more than the grace while ductile was down; catch_up: skip.
    SKIP_MISSED = "skip_missed"


def on_due(schedule: Schedule, entry: PlannedRun, *, now: datetime, grace: timedelta) -> FireDecision:
    """A due run: fire it, or (missed long ago and ``catch_up: skip``) skip it.

    ``run_once`` fires one job for however many runs were missed: the
    following plan starts after ``now``.
    """
    if now - entry.planned_at <= grace or schedule.catch_up is CatchUp.RUN_ONCE:
        return FireDecision.FIRE
    return FireDecision.SKIP_MISSED


def poll_guard_allows(outstanding: int, max_outstanding: int) -> bool:
    """D21: no new poll while ``max_outstanding`` polls are queued or running."""
    return outstanding < max_outstanding


def timer_event_id(key: str, nominal_at: datetime) -> str:
    """A timer trigger's event id: stable for one nominal run of one schedule.

    Keyed by the whole seconds of the nominal time since the epoch.
    """
    _require_aware(nominal_at, "nominal_at")
    return event_id_for(f"timer:{key}", (nominal_at - _EPOCH) // ONE_SECOND)
