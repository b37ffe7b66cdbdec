"""I11 in the simulation: ductile's lifecycle events, one per death, none about a notifier's own jobs.

The store units insert the jobs of the routes ``from: ductile`` in the same
commit as the change (a death, an orphan re-queued, a breaker opening...), so
they never pass through an enqueue the monitor sees. After every unit that
can make them (settle, recover, cancel, fire), :meth:`AlertLedger.adopt`
reads the queued jobs of the lifecycle targets the ledger does not know yet:
each must have come from a lifecycle event (anything else appeared
unannounced, I2), must not be about a job that itself came from one, and no
two may tell the same news to the same target (I11). :meth:`check_every_death`
holds the other half: every dead job the ledger knows (a notifier's excepted)
was told to every target of a ``job.dead`` route.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ductile.domain.job import JobStatus
from ductile.domain.lifecycle import SOURCE, is_lifecycle_job

if TYPE_CHECKING:
    from ductile.app.sim.monitor import Monitor

#: Enough for any queue the simulation builds.
_ALL = 10**9


class AlertLedger:
    def __init__(self, monitor: Monitor) -> None:
        self._monitor = monitor
        #: (event type, what it is about, target) -> the job that tells it.
        self.told: dict[tuple[str, str, str], str] = {}

    def _targets(self, event_type: str | None = None) -> list[str]:
        routes = self._monitor.sim.config.routes
        return sorted({r.target for r in routes if r.source == SOURCE and event_type in (None, r.event_type)})

    async def adopt(self) -> None:
        """Take the lifecycle jobs the last unit made into the ledger, checking each."""
        monitor = self._monitor
        for target in self._targets():
            for job in await monitor.store.list_jobs(statuses=[JobStatus.QUEUED], plugin=target, limit=_ALL):
                if job.id in monitor.jobs:
                    continue
                if not is_lifecycle_job(job):
                    monitor.require("I2", [f"job {job.id} ({job.plugin}.{job.command}) appeared unannounced"])
                await monitor.refresh(job.id, new=True)
                monitor.ack(job.id, "lifecycle")
                self._check(job.id, job.payload)

    def _check(self, job_id: str, event: dict[str, Any]) -> None:
        monitor = self._monitor
        payload = event.get("payload") or {}
        about = str(payload.get("job_id") or event.get("event_id"))
        subject = monitor.jobs.get(about)
        if subject is not None and is_lifecycle_job(subject.job):
            monitor.require("I11", [f"{event['type']} about {about}, a job made from a lifecycle event"])
        target = monitor.jobs[job_id].job.plugin
        key = (str(event["type"]), about, target)
        first = self.told.setdefault(key, job_id)
        if first != job_id:
            monitor.require("I11", [f"{key[0]} of {about} told to {target} twice: {first} and {job_id}"])
        monitor.event("alert", target, f"{key[0]} of {about}")

    def check_every_death(self) -> None:
        monitor = self._monitor
        targets = self._targets("job.dead")
        missing = [
            f"job {job_id} ({track.job.plugin}) died untold to {target}"
            for job_id, track in monitor.jobs.items()
            if track.job.status is JobStatus.DEAD and not track.deleted and not is_lifecycle_job(track.job)
            for target in targets
            if ("job.dead", job_id, target) not in self.told
        ]
        monitor.require("I11", missing)
