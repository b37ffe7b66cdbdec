"""The JSON shapes the verbs print for schedules (jobs, runs and breakers: :mod:`ductile.app.views`).

The shapes are listed in the package's docs (:mod:`ductile.app.cli`) and in
docs/cli.md: times are UTC ISO-8601 strings, durations seconds as numbers.
"""

from __future__ import annotations

from typing import Any

from ductile.app.cli.format import schedule_summary, zone_name
from ductile.app.views import breaker_json, job_json, run_json, stdout_object, transition_json, utc
from ductile.domain.schedule import SHORT_NAMES, Schedule

__all__ = ["breaker_json", "job_json", "run_json", "schedule_json", "stdout_object", "transition_json"]


def schedule_json(schedule: Schedule, *, paused: bool = False) -> dict[str, Any]:
    return {
        "id": schedule.id,
        "summary": schedule_summary(schedule),
        "paused": paused,
        "every_seconds": schedule.every.total_seconds() if schedule.every is not None else None,
        "cron": schedule.cron,
        "at": utc(schedule.at),
        "after_seconds": schedule.after.total_seconds() if schedule.after is not None else None,
        "not_on": [SHORT_NAMES[d] for d in sorted(schedule.not_on)],
        "jitter_seconds": schedule.jitter.total_seconds(),
        "window": (
            {"start": f"{schedule.window.start:%H:%M}", "end": f"{schedule.window.end:%H:%M}"}
            if schedule.window is not None
            else None
        ),
        "timezone": zone_name(schedule.tz),
        "catch_up": schedule.catch_up.value,
        "if_running": schedule.if_running.value,
        "command": schedule.command if schedule.emit is None else None,
        "emit": schedule.emit.type if schedule.emit is not None else None,
    }
