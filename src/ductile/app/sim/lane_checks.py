"""The invariants of lanes (D14 [A2]): I9 and I10, and I2's "nothing runs unseen" with lanes.

Pure functions, like :mod:`~ductile.app.sim.invariants`; the monitor calls them
at every claim (the only moment a lane fills) and between steps.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

from ductile.domain.job import Command, Job
from ductile.domain.lanes import Lanes, identity


def _lane_jobs(running: Sequence[Job]) -> list[Job]:
    """The running jobs the lanes count: ``init`` runs outside them, by the start or reload itself."""
    return [job for job in running if job.command != Command.INIT]


def check_lanes(claimed: Job, running: Sequence[Job], lanes: Lanes, max_workers: int) -> list[str]:
    """I9 — D14 [A2]: just after ``claimed`` was claimed, no more than its lane's width of
    its plugin's jobs run (the width the claim was given), no two of them in one slot,
    and no more than ``service.max_workers`` jobs run in all."""
    if claimed.command == Command.INIT:
        return []
    jobs = _lane_jobs(running)
    problems: list[str] = []
    mine = [j for j in jobs if j.plugin == claimed.plugin]
    width = lanes.width(claimed.plugin)
    if width is not None and len(mine) > width:
        ids = ", ".join(sorted(j.id for j in mine))
        problems.append(f"{len(mine)} jobs of {claimed.plugin} run at once, its lane is {width} wide: {ids}")
    slots = [j.slot for j in mine if j.slot is not None]
    if len(slots) != len(set(slots)):
        problems.append(f"two running jobs of {claimed.plugin} hold one slot: {sorted(slots)}")
    if len(jobs) > max_workers:
        problems.append(f"{len(jobs)} jobs run at once with service.max_workers {max_workers}")
    return problems


def check_identities(running: Sequence[Job]) -> list[str]:
    """I10 — D1/D14 [A2]: two runs of one dedupe identity (plugin, command, key) never overlap."""
    seen: dict[tuple[str, str, str], str] = {}
    problems: list[str] = []
    for job in running:
        key = identity(job)
        if key is None:
            continue
        if key in seen:
            problems.append(f"jobs {seen[key]} and {job.id} of the identity {key} run at once")
        seen[key] = job.id
    return problems


def check_in_flight(running: Collection[str], in_flight: Collection[str]) -> list[str]:
    """I2 — D6 with lanes: between steps, every running job is a run in flight (none is
    left running by a run that ended or was lost: recovery has settled those)."""
    unseen = sorted(set(running) - set(in_flight))
    if unseen:
        return [f"{len(unseen)} job(s) running with no run in flight: {', '.join(unseen[:3])}"]
    return []
