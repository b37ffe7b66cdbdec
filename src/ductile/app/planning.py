"""A schedule's runs in a time range: the stored plan first, then the grid projected from it.

``ductile schedule``, ``GET /schedule`` and the dashboard's overview and
schedule pages show the same runs, so all take them from here (:func:`runs_in`
for every schedule of the runtime). Each run has a kind: ``planned`` (the
schedule index's row: its jitter is drawn and kept), ``not_yet_planned`` (no
row yet, or one of another version of the schedule: placed with the middle
draw), ``overdue`` (a stored run already past, not yet fired) or ``projected``
(later runs, placed with the middle draw: their jitter is not drawn yet). A
one-shot that already fired has no runs. :func:`paused_keys` tells whether a
schedule is paused, itself or through its plugin.
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime, timedelta
from typing import Any

from ductile.app.runtime import Runtime
from ductile.app.views import utc
from ductile.domain.schedule import PlannedRun, Schedule, plan_next, preview, split_key
from ductile.ports.store import Store


def schedule_runs(
    schedule: Schedule,
    *,
    key: str,
    stored: PlannedRun | None,
    now: datetime,
    start: datetime,
    end: datetime,
    limit: int,
) -> list[tuple[PlannedRun, str]]:
    """The runs of one schedule in ``[start, end)`` with their kind (see the module docs)."""

    if stored is not None and stored.fingerprint == schedule.fingerprint():
        first, kind = stored, "planned"
    else:
        first, kind = plan_next(schedule, key=key, previous=None, now=now, draw=0.5), "not_yet_planned"
    if first.done:
        return []
    runs: list[tuple[PlannedRun, str]] = []
    if first.planned_at < now:
        if start <= first.planned_at < end:
            runs.append((first, "overdue"))
        first, kind = plan_next(schedule, key=key, previous=first, now=now, draw=0.5), "projected"
    if first.planned_at < start and not first.done:  # jump to the range instead of walking to it
        first = plan_next(schedule, key=key, previous=first, now=start - timedelta(microseconds=1), draw=0.5)
        kind = "projected"
    for i, run in enumerate(preview(schedule, first, start, end, limit=max(limit - len(runs), 0))):
        runs.append((run, kind if i == 0 and run is first else "projected"))
    return runs[:limit]


def paused_keys(pauses: Collection[tuple[str, str | None]], key: str) -> bool:
    """Is the schedule ``key`` paused, itself or through its plugin?"""
    plugin, schedule_id = split_key(key)
    return (plugin, None) in pauses or (plugin, schedule_id) in pauses


async def runs_in(
    store: Store, runtime: Runtime, *, now: datetime, start: datetime, end: datetime, limit: int
) -> tuple[list[dict[str, Any]], list[str]]:
    """Every schedule's runs in ``[start, end)`` as ``ductile schedule`` shows them (stored, then
    projected), earliest first; and the schedules cut at ``limit`` runs."""
    found: list[dict[str, Any]] = []
    cut = []
    pauses = {(p.plugin, p.schedule_id) for p in await store.pauses()}
    for key, schedule in sorted(runtime.schedules().items()):
        stored = await store.planned(key)
        runs = schedule_runs(schedule, key=key, stored=stored, now=now, start=start, end=end, limit=limit)
        if len(runs) >= limit:
            cut.append(key)
        plugin, schedule_id = split_key(key)
        paused = paused_keys(pauses, key)
        found += [
            {
                "schedule": key,
                "plugin": plugin,
                "schedule_id": schedule_id,
                "paused": paused,
                "kind": kind,
                "planned_at": utc(run.planned_at),
                "nominal_at": utc(run.nominal_at),
                "offset_seconds": run.offset.total_seconds(),
                "snapped": run.snapped,
                "target": f"event {schedule.emit.type}" if schedule.emit is not None else schedule.command,
                "zone": str(schedule.tz),
                "at": run.planned_at,
            }
            for run, kind in runs
        ]
    found.sort(key=lambda doc: (doc["at"], doc["schedule"]))
    return found, cut
