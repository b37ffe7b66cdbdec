"""The wall clock stepped back: what every pending instant becomes.

An NTP correction or a VM restored from a snapshot can move the wall clock
back. Every instant ductile waits for is stored as wall time (a planned run, a
retry's ``next_retry_at``, an open breaker's ``opened_at``), so after a step of
one hour each of them would come an hour late: every schedule and every retry
stalled for the size of the step. (A forward step needs nothing: what became
due runs, and missed runs follow ``catch_up``.)

The rule (ADR 0045): **each pending instant keeps the real time it had left**.
It moves back by the step:

- an ``every`` schedule's run: its nominal time and its planned time (the grid
  is elapsed time, so its anchor moves with it);
- a ``cron`` schedule's run moves back, then forward again to the first fire
  time of the expression at or after that (wall time is what cron means). So a
  frequent cron keeps its cadence (``*/5``: the next run 5 minutes after the
  last, on the new clock's grid), and a daily one does not fire twice (07:30
  fired, the clock steps back 15 minutes: the next run is tomorrow's 07:30,
  not today's again);
- a window still applies: a run moved out of its window snaps to the next
  window's start;
- one-shots: an ``after`` run (elapsed time since the start) moves back like
  an ``every`` run; an ``at`` run names a wall instant, which it keeps (as a
  cron run does); a one-shot that is done stays done;
- a run that moving back would put on a ``not_on`` day keeps its wall time
  (it comes late by the step: it never runs on a day it may not);
- a retry's ``next_retry_at`` and an open breaker's ``opened_at`` (and a
  half-open one's ``probe_at``) move back by the step.

A run that was already due and not yet fired stays due. Nothing is fired
twice: each planned run is replaced, not added to.
"""

from __future__ import annotations

from datetime import timedelta

import attrs

from ductile.domain.breaker import Breaker
from ductile.domain.job import Job
from ductile.domain.schedule import ONE_MICROSECOND, PlannedRun, Schedule, cron_fires, excluded, place


def _draw_of(schedule: Schedule, entry: PlannedRun) -> float:
    """The draw that places a run at its stored jitter offset (the offset is what was kept)."""
    if not schedule.jitter:
        return 0.5
    draw = entry.offset / schedule.jitter + 0.5
    return min(max(draw, 0.0), 1.0 - 1e-9)


def planned_run(schedule: Schedule, entry: PlannedRun, step: timedelta) -> PlannedRun:
    """``entry`` after the wall clock stepped back by ``step`` (see the module's docs)."""
    if step <= timedelta(0) or entry.done or schedule.at is not None:
        return entry
    if entry.fingerprint != schedule.fingerprint():
        return entry  # another version of the schedule: the next tick re-plans it anyway
    nominal = entry.nominal_at - step
    if schedule.cron is not None:
        nominal = next(cron_fires(schedule.cron, nominal - ONE_MICROSECOND, schedule.tz))
    planned, offset, snapped = place(schedule, nominal, _draw_of(schedule, entry))
    if schedule.not_on and excluded(planned, schedule.tz, schedule.not_on):
        return entry
    return attrs.evolve(entry, nominal_at=nominal, planned_at=planned, offset=offset, snapped=snapped)


def retry(job: Job, step: timedelta) -> Job:
    """A queued job's retry time, moved back by ``step`` (unchanged when it has none)."""
    if job.next_retry_at is None or step <= timedelta(0):
        return job
    return attrs.evolve(job, next_retry_at=job.next_retry_at - step)


def breaker(current: Breaker, step: timedelta) -> Breaker:
    """An open or half-open breaker's instants, moved back by ``step``."""
    if step <= timedelta(0):
        return current
    return attrs.evolve(
        current,
        opened_at=current.opened_at - step if current.opened_at is not None else None,
        probe_at=current.probe_at - step if current.probe_at is not None else None,
    )
