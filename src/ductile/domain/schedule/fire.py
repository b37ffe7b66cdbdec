"""A planned run comes due: which runs are due, fire or skip, catch-up, the poll guard, the timer's event id.

The runner (the app) asks the schedule index what is due, decides each run
here, fires it through the store's fire unit and plans the next one with
:func:`~ductile.domain.schedule.plan.plan_next`.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

from ductile.domain.routing import event_id_for
from ductile.domain.schedule.plan import CatchUp, PlannedRun, Schedule, plan_next
from ductile.domain.schedule.wall import ONE_SECOND, require_aware

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
#: ``catch_up: run_all`` makes at most this many jobs for one stretch of downtime.
RUN_ALL_CAP = 100


def due(entries: Iterable[PlannedRun], start: datetime, end: datetime) -> list[PlannedRun]:
    """Planned runs in ``[start, end)``, earliest first: the index's one question."""
    return sorted((e for e in entries if start <= e.planned_at < end), key=lambda e: (e.planned_at, e.key))


class FireDecision(enum.StrEnum):
    FIRE = "fire"
    #: Missed by more than the grace while ductile was down; catch_up: skip.
    SKIP_MISSED = "skip_missed"
    #: Missed by more than the grace; catch_up: run_all: one job per missed run (:func:`missed_runs`).
    CATCH_UP = "catch_up"


def on_due(schedule: Schedule, entry: PlannedRun, *, now: datetime, grace: timedelta) -> FireDecision:
    """A due run: fire it, skip it (missed long ago and ``catch_up: skip``), or catch up.

    ``run_once`` fires one job for however many runs were missed: the
    following plan starts after ``now``. ``run_all`` fires one job for each
    missed run, at most :data:`RUN_ALL_CAP`.
    """
    if now - entry.planned_at <= grace or schedule.catch_up is CatchUp.RUN_ONCE:
        return FireDecision.FIRE
    if schedule.catch_up is CatchUp.RUN_ALL:
        return FireDecision.CATCH_UP
    return FireDecision.SKIP_MISSED


def missed_runs(
    schedule: Schedule, entry: PlannedRun, *, now: datetime, cap: int = RUN_ALL_CAP
) -> tuple[list[PlannedRun], bool]:
    """``entry`` and the runs that followed it up to ``now``, oldest first, at most ``cap``;
    and whether more were missed than that.

    Later runs are placed with the jitter at its centre (their jitter was never
    drawn); ``not_on`` days and windows apply as they would have. Walks at most
    ``cap`` runs, however long the downtime.
    """
    require_aware(now, "now")
    runs = [entry]
    current = entry
    while len(runs) <= cap:
        following = plan_next(schedule, key=entry.key, previous=current, now=current.planned_at, draw=0.5)
        if following.done or following.planned_at > now:
            return runs, False
        runs.append(following)
        current = following
    return runs[:cap], True


def poll_guard_allows(outstanding: int, max_outstanding: int) -> bool:
    """D21: no new poll while ``max_outstanding`` polls are queued or running."""
    return outstanding < max_outstanding


def timer_event_id(key: str, nominal_at: datetime) -> str:
    """A timer trigger's event id: stable for one nominal run of one schedule.

    Keyed by the whole seconds of the nominal time since the epoch.
    """
    require_aware(nominal_at, "nominal_at")
    return event_id_for(f"timer:{key}", (nominal_at - _EPOCH) // ONE_SECOND)
