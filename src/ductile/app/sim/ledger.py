"""The monitor's ledger: what it knows of each job (:class:`JobTrack`) and each run
(:class:`RunNote`), and the notable events it saw (:class:`SimEvent`).

Built only from what the ports returned, never from the engine's own bookkeeping.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

import attrs

from ductile.app.sim.invariants import Expectation
from ductile.app.sim.trace import ref, stamp
from ductile.domain.job import Job, JobStatus, Transition
from ductile.domain.schedule import PlannedRun
from ductile.domain.settle import Settlement


@attrs.frozen(kw_only=True)
class RunNote:
    """One run (attempt) of a job, as observed."""

    attempt: int
    started_at: datetime | None
    finished_at: datetime
    duration: float
    #: succeeded, failed, timed out, interrupted, not run
    result: str
    error: str | None
    status_after: JobStatus


@attrs.define(eq=False)
class JobTrack:
    """Everything the monitor knows about one job."""

    job: Job
    log: list[Transition]
    deleted: bool = False
    spawns: dict[int, int] = attrs.Factory(dict)
    expected: dict[int, Expectation] = attrs.Factory(dict)
    settled: set[int] = attrs.Factory(set)
    plan: PlannedRun | None = None
    children: list[str] = attrs.Factory(list)
    waits: list[float] = attrs.Factory(list)
    runs: list[RunNote] = attrs.Factory(list)


@attrs.frozen(kw_only=True)
class SimEvent:
    """Something notable for the report: a breaker opening, a skipped run, a crash..."""

    at: datetime
    kind: str
    plugin: str | None
    detail: str


def settled_run(before: Job, s: Settlement, *, spawned: bool) -> tuple[RunNote, str]:
    """The note of a settled run of ``before``, and its trace line."""
    if s.succeeded:
        result_text = "succeeded"
    elif s.run.timed_out:
        result_text = "timed out"
    elif not spawned:
        result_text = "not run"
    else:
        result_text = "failed"
    note = RunNote(
        attempt=before.attempt,
        started_at=before.started_at,
        finished_at=s.run.finished_at,
        duration=s.run.duration,
        result=result_text,
        error=s.run.error,
        status_after=s.job.status,
    )
    status = s.job.status.value
    if s.job.status is JobStatus.QUEUED and s.job.next_retry_at is not None:
        status += f" retry {stamp(s.job.next_retry_at)}"
    elif s.job.status is JobStatus.DEAD:
        status += f": {s.run.error or s.job.last_error}"
    return note, f"settle {ref(before.id)} {result_text} -> {status}"


def ledger_differences(jobs: Mapping[str, JobTrack], stored: Mapping[str, Job]) -> list[str]:
    """I1 against the store: every job the ledger knows is stored as the ledger last saw it,
    and a job retention deleted is gone."""
    problems: list[str] = []
    for job_id, track in jobs.items():
        job = stored.get(job_id)
        if track.deleted:
            if job is not None:
                problems.append(f"job {job_id} was deleted by retention but is still there")
        elif job is None:
            problems.append(
                f"job {job_id} ({track.job.plugin}.{track.job.command}, {track.job.status}) is lost"
            )
        elif job != track.job:
            problems.append(f"job {job_id} changed without the store reporting it: {track.job} -> {job}")
    return problems
