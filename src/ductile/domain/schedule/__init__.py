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

* **Several schedules per plugin.** Each has an ``id`` (``default`` for the
  ``schedule:`` shorthand) and its own row in the index, keyed
  ``<plugin>/<id>`` (:mod:`~ductile.domain.schedule.key`); every rule here
  holds per schedule.
* **One-shots.** ``at`` runs once at an instant; ``after`` once, that long
  after the daemon starts (or after the reload that adds it). Jitter and
  windows apply; once fired or skipped the run is *done* (planned at
  :data:`EXHAUSTED`, never due again) until its instant changes.
* **not_on.** Days of the week (in the schedule's zone) on which no run is
  planned: a grid point whose placed time falls on one is passed over.
* **Catch-up.** A run missed by more than the grace: ``skip`` (the default)
  plans the next future one, ``run_once`` fires one job, ``run_all`` one per
  missed run, at most :data:`RUN_ALL_CAP`.

Everything that walks time is bounded: planning after a year of downtime jumps
the grid (``every``) or restarts the cron search near ``now``, and visits only
the grid points that could land after ``now``.

The modules, in reading order: :mod:`~ductile.domain.schedule.plan` (the
:class:`Schedule` value and :func:`plan_next`), :mod:`~ductile.domain.schedule.fire`
(a run comes due), :mod:`~ductile.domain.schedule.window`,
:mod:`~ductile.domain.schedule.cron` (the only door to croniter) and
:mod:`~ductile.domain.schedule.wall` (wall time and instants across DST).
Import from the package: the names below are its surface.
"""

from __future__ import annotations

from ductile.domain.schedule.cron import cron_fires, validate_cron
from ductile.domain.schedule.days import SHORT_NAMES, excluded, parse_weekday, weekdays
from ductile.domain.schedule.fire import (
    RUN_ALL_CAP,
    FireDecision,
    due,
    missed_runs,
    on_due,
    poll_guard_allows,
    timer_event_id,
)
from ductile.domain.schedule.key import DEFAULT_SCHEDULE_ID, SCHEDULE_ID, schedule_key, split_key
from ductile.domain.schedule.plan import (
    EXHAUSTED,
    CatchUp,
    IfRunning,
    PlannedRun,
    Schedule,
    first_nominal,
    jitter_offset,
    next_nominal,
    place,
    plan_next,
    preview,
)
from ductile.domain.schedule.wall import ONE_MICROSECOND, ONE_SECOND, to_wall, wall_to_utc
from ductile.domain.schedule.window import Window

__all__ = [
    "DEFAULT_SCHEDULE_ID",
    "EXHAUSTED",
    "ONE_MICROSECOND",
    "ONE_SECOND",
    "RUN_ALL_CAP",
    "SCHEDULE_ID",
    "SHORT_NAMES",
    "CatchUp",
    "FireDecision",
    "IfRunning",
    "PlannedRun",
    "Schedule",
    "Window",
    "cron_fires",
    "due",
    "excluded",
    "first_nominal",
    "jitter_offset",
    "missed_runs",
    "next_nominal",
    "on_due",
    "parse_weekday",
    "place",
    "plan_next",
    "poll_guard_allows",
    "preview",
    "schedule_key",
    "split_key",
    "timer_event_id",
    "to_wall",
    "validate_cron",
    "wall_to_utc",
    "weekdays",
]
