"""What a simulation reports: every job as observed, per-plugin figures, the trace and its hash."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime

import attrs

from ductile.app.sim.ledger import JobTrack, RunNote, SimEvent
from ductile.domain.config import Config
from ductile.domain.job import Command, JobStatus, SubmittedBy
from ductile.domain.schedule import PlannedRun


@attrs.frozen(kw_only=True)
class JobReport:
    """One job as the simulation saw it, for the timeline."""

    id: str
    plugin: str
    command: str
    submitted_by: SubmittedBy
    status: JobStatus
    attempt: int
    max_attempts: int
    created_at: datetime
    completed_at: datetime | None
    last_error: str | None
    dedupe_key: str | None
    parent_job_id: str | None
    #: ``handle`` jobs: the type of the event they handle.
    event_type: str | None
    #: Scheduler jobs: the planned run that fired them.
    plan: PlannedRun | None
    runs: tuple[RunNote, ...]
    #: Ids of the children its success routed (new or the duplicates they matched).
    children: tuple[str, ...]
    #: Seconds each claim waited after the job became runnable.
    waits: tuple[float, ...]
    deleted: bool


@attrs.frozen(kw_only=True)
class PluginStats:
    plugin: str
    jobs: int
    runs: int
    successes: int
    failures: int
    retries: int
    dead: int
    #: Seconds a claim waited after its job became runnable: on average, and at most.
    mean_wait: float | None
    max_wait: float | None = None
    #: The plugin's lane width (D14 [A2]: its parallelism within service.max_workers).
    width: int = 1
    #: Share of the lane's capacity (width x the simulated span) its runs used, 0..1.
    utilisation: float = 0.0


@attrs.frozen(kw_only=True)
class SimulationResult:
    seed: int
    store: str
    start: datetime
    #: Where the main phase ended (the ``until`` of :meth:`Simulation.run`).
    end: datetime
    #: When the drain (no faults, no arrivals) left every job finished.
    finished: datetime
    trace: tuple[str, ...] = attrs.field(repr=False)
    trace_hash: str
    jobs: tuple[JobReport, ...] = attrs.field(repr=False)
    events: tuple[SimEvent, ...] = attrs.field(repr=False)
    stats: tuple[PluginStats, ...]
    crashes: int
    checks: int
    calls: int
    config: Config = attrs.field(repr=False)


def plugin_stats(
    jobs: Sequence[JobReport], widths: Mapping[str, int] | None = None, span: float = 0.0
) -> tuple[PluginStats, ...]:
    """Per plugin: jobs, runs and their results, queue waits, and (given the lane widths and
    the simulated span in seconds) how much of its lane its runs kept busy."""
    by_plugin: dict[str, list[JobReport]] = {}
    for job in jobs:
        by_plugin.setdefault(job.plugin, []).append(job)
    out = []
    for plugin, own in sorted(by_plugin.items()):
        runs = [r for j in own for r in j.runs]
        waits = [w for j in own for w in j.waits]
        width = (widths or {}).get(plugin, 1)
        busy = sum(r.duration for r in runs)
        successes = sum(1 for r in runs if r.result == "succeeded")
        out.append(
            PluginStats(
                plugin=plugin,
                jobs=len(own),
                runs=len(runs),
                successes=successes,
                failures=len(runs) - successes,
                retries=sum(1 for r in runs if r.status_after is JobStatus.QUEUED),
                dead=sum(1 for j in own if j.status is JobStatus.DEAD),
                mean_wait=sum(waits) / len(waits) if waits else None,
                max_wait=max(waits) if waits else None,
                width=width,
                utilisation=min(1.0, busy / (width * span)) if span > 0 else 0.0,
            )
        )
    return tuple(out)


def job_report(track: JobTrack) -> JobReport:
    """One job of the ledger as the report shows it."""
    job = track.job
    return JobReport(
        id=job.id,
        plugin=job.plugin,
        command=job.command,
        submitted_by=job.submitted_by,
        status=job.status,
        attempt=job.attempt,
        max_attempts=job.max_attempts,
        created_at=job.created_at,
        completed_at=job.completed_at,
        last_error=job.last_error,
        dedupe_key=job.dedupe_key,
        parent_job_id=job.parent_job_id,
        event_type=job.payload.get("type") if job.command == Command.HANDLE else None,
        plan=track.plan,
        runs=tuple(track.runs),
        children=tuple(track.children),
        waits=tuple(track.waits),
        deleted=track.deleted,
    )
