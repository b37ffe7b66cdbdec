"""The report of ``ductile simulate``: a typed value built from a simulation's result.

:func:`build_report` reduces a :class:`~ductile.app.sim.SimulationResult` to
what the operator is shown: every plugin, every job on a timeline, the notable
events, the DST changes of the schedules' zones, the routed chains and the
per-plugin summary. :meth:`SimulateReport.to_json` is ``--json``'s document;
:mod:`ductile.app.cli.simulate_text` renders the same value as text.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any, Literal

import attrs

from ductile.app.cli.format import local_time, schedule_summary, zone_name
from ductile.app.runtime import Runtime
from ductile.app.sim import (
    Behaviour,
    JobReport,
    PluginStats,
    SimCatalog,
    SimEvent,
    SimulationResult,
    behaviour_for,
)
from ductile.app.views import utc
from ductile.domain.config import Config
from ductile.domain.job import Command, JobStatus
from ductile.domain.plugin import Discovery
from ductile.domain.routing import Route
from ductile.domain.schedule import Schedule, schedule_key

# =========================================================================== the values


@attrs.frozen(kw_only=True)
class PluginLine:
    """One plugin: its state as the simulated daemon saw it, its schedule, its behaviour."""

    name: str
    #: ``loaded``, ``unhealthy`` (its init failed), ``refused`` or ``disabled``.
    state: str
    reason: str | None
    #: Its schedules when it is enabled and has any (each with its id).
    schedules: tuple[Schedule, ...]
    #: Command -> the behaviour it was simulated with (compact syntax).
    behaviour: dict[str, str]
    #: Its poll's behaviour in words.
    described: str

    @property
    def schedule(self) -> Schedule | None:
        """Its first schedule (the one whose zone its timeline uses)."""
        return self.schedules[0] if self.schedules else None

    @property
    def summary(self) -> str | None:
        """Its schedules in one line: ``every 6h UTC`` (one), or ``morning: cron ...; hourly: ...``."""
        if not self.schedules:
            return None
        if len(self.schedules) == 1 and self.schedules[0].id == "default":
            return schedule_summary(self.schedules[0])
        return "; ".join(f"{s.id}: {schedule_summary(s)}" for s in self.schedules)

    @property
    def tz(self) -> tzinfo | None:
        """Its first schedule's zone."""
        return self.schedules[0].tz if self.schedules else None

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "state": self.state,
            "reason": self.reason,
            "schedule": self.summary,
            "timezone": zone_name(self.tz) if self.tz is not None else None,
            "behaviour": self.behaviour,
            "described": self.described,
        }


@attrs.frozen(kw_only=True)
class TimelineJob:
    """One job on the timeline, with what the report adds to the simulation's view of it."""

    job: JobReport
    #: The zone of its plugin's schedule (None: the plugin has no schedule).
    tz: tzinfo | None
    #: The children its success created.
    children: tuple[str, ...]
    #: The jobs its success would have created again, deduplicated.
    duplicates_of: tuple[str, ...]

    @property
    def at(self) -> datetime:
        """When it was planned (a scheduled job) or created (any other)."""
        return self.job.plan.planned_at if self.job.plan else self.job.created_at

    def to_json(self) -> dict[str, Any]:
        job, plan, tz = self.job, self.job.plan, self.tz
        return {
            "id": job.id,
            "plugin": job.plugin,
            "command": job.command,
            "submitted_by": job.submitted_by.value,
            "status": job.status.value,
            "attempts": len(job.runs),
            "max_attempts": job.max_attempts,
            "created_at": utc(job.created_at),
            "completed_at": utc(job.completed_at),
            "schedule": plan.schedule_id if plan else None,
            "planned_at": utc(plan.planned_at) if plan else None,
            "planned_local": local_time(plan.planned_at, tz) if plan and tz else None,
            "nominal_at": utc(plan.nominal_at) if plan else None,
            "nominal_local": local_time(plan.nominal_at, tz) if plan and tz else None,
            "offset_seconds": plan.offset.total_seconds() if plan else None,
            "snapped": plan.snapped if plan else None,
            "timezone": zone_name(tz) if plan and tz else None,
            "event_type": job.event_type,
            "dedupe_key": job.dedupe_key,
            "parent_job_id": job.parent_job_id,
            "children": list(self.children),
            "duplicates_of": list(self.duplicates_of),
            "queue_wait_seconds": job.waits[0] if job.waits else None,
            "last_error": job.last_error,
            "runs": [
                {
                    "attempt": r.attempt,
                    "started_at": utc(r.started_at),
                    "finished_at": utc(r.finished_at),
                    "duration_seconds": r.duration,
                    "result": r.result,
                    "error": r.error,
                }
                for r in job.runs
            ],
        }


@attrs.frozen(kw_only=True)
class DstChange:
    """A UTC-offset change of a schedule's zone within the run."""

    tz: tzinfo
    at: datetime
    before: timedelta
    after: timedelta

    def to_json(self) -> dict[str, Any]:
        return {
            "timezone": zone_name(self.tz),
            "at": utc(self.at),
            "from_offset": offset_text(self.before),
            "to_offset": offset_text(self.after),
        }


@attrs.frozen(kw_only=True)
class RouteChain:
    """What one route carried: its children, the duplicates dropped, how they ended."""

    route: Route
    children: int
    duplicates: int
    succeeded: int
    dead: int

    def to_json(self) -> dict[str, Any]:
        return {
            "from": self.route.source,
            "event_type": self.route.event_type,
            "to": self.route.target,
            "children": self.children,
            "duplicates": self.duplicates,
            "succeeded": self.succeeded,
            "dead": self.dead,
        }


@attrs.frozen(kw_only=True)
class SimulateReport:
    """Everything ``ductile simulate`` prints, as values."""

    config: str | None
    seed: int
    store: Literal["memory", "sqlite"]
    days: float
    start: datetime
    end: datetime
    finished: datetime
    plugins: tuple[PluginLine, ...]
    #: Every job, ordered by when it was planned (or created).
    timeline: tuple[TimelineJob, ...]
    events: tuple[SimEvent, ...]
    dst: tuple[DstChange, ...]
    routes: tuple[RouteChain, ...]
    summary: tuple[PluginStats, ...]
    checks: int
    crashes: int
    trace_hash: str

    def to_json(self) -> dict[str, Any]:
        """The ``--json`` document."""
        return {
            "config": self.config,
            "seed": self.seed,
            "store": self.store,
            "days": self.days,
            "start": utc(self.start),
            "end": utc(self.end),
            "finished": utc(self.finished),
            "plugins": [p.to_json() for p in self.plugins],
            "runs": [j.to_json() for j in self.timeline],
            "events": [
                {"at": utc(e.at), "kind": e.kind, "plugin": e.plugin, "detail": e.detail} for e in self.events
            ],
            "dst": [c.to_json() for c in self.dst],
            "routes": [r.to_json() for r in self.routes],
            "summary": [_stats_json(s) for s in self.summary],
            "invariants": {"ok": True, "checks": self.checks, "crashes": self.crashes},
            "trace_hash": self.trace_hash,
        }


def _stats_json(s: PluginStats) -> dict[str, Any]:
    return {
        "plugin": s.plugin,
        "jobs": s.jobs,
        "runs": s.runs,
        "successes": s.successes,
        "failures": s.failures,
        "retries": s.retries,
        "dead": s.dead,
        "mean_wait_seconds": s.mean_wait,
        "max_wait_seconds": s.max_wait,
        "lane_width": s.width,
        "lane_utilisation": s.utilisation,
    }


# =========================================================================== building it


def build_report(
    result: SimulationResult, catalog: SimCatalog, behaviours: Mapping[str, Behaviour], *, days: float
) -> SimulateReport:
    """The report of one simulation of the operator's config."""
    config = result.config
    zones = {p.name: p.all_schedules[0].tz for p in config.plugins.values() if p.all_schedules}
    # A scheduled job is shown in its own schedule's zone (a plugin's schedules may differ).
    zones |= {schedule_key(p.name, s.id): s.tz for p in config.plugins.values() for s in p.all_schedules}
    return SimulateReport(
        config=config.source,
        seed=result.seed,
        store="sqlite" if result.store == "sqlite" else "memory",
        days=days,
        start=result.start,
        end=result.end,
        finished=result.finished,
        plugins=_plugin_lines(config, catalog.discover(config), catalog, behaviours, result.events),
        timeline=_timeline(result.jobs, zones),
        events=result.events,
        dst=tuple(
            DstChange(tz=tz, at=at, before=before, after=after)
            for tz in dict.fromkeys(zones.values())
            for at, before, after in dst_changes(tz, result.start, result.end)
        ),
        routes=tuple(_route_chain(route, result.jobs) for route in dict.fromkeys(config.routes)),
        summary=result.stats,
        checks=result.checks,
        crashes=result.crashes,
        trace_hash=result.trace_hash,
    )


def _plugin_lines(
    config: Config,
    discovery: Discovery,
    catalog: SimCatalog,
    behaviours: Mapping[str, Behaviour],
    events: Sequence[SimEvent],
) -> tuple[PluginLine, ...]:
    """Every plugin the config names or the catalog found, by name."""
    routes_of: dict[str, tuple[str, ...]] = {}
    for route in config.routes:
        routes_of.setdefault(route.source, ())
        if route.event_type not in routes_of[route.source]:
            routes_of[route.source] += (route.event_type,)
    unhealthy = {e.plugin: e.detail for e in events if e.kind == "unhealthy" and e.plugin is not None}
    runtime = Runtime(config=config, discovery=discovery, unhealthy=unhealthy)
    lines = []
    for name in sorted(set(config.plugins) | set(discovery.plugins) | {r.name for r in discovery.refused}):
        settings = config.plugin(name)
        status = runtime.status_of(name)
        state, reason = str(status.state), status.reason
        commands = sorted(catalog.manifest(name).commands)
        lines.append(
            PluginLine(
                name=name,
                state=state,
                reason=reason,
                schedules=settings.all_schedules if settings.enabled else (),
                behaviour={
                    c: str(behaviour_for(behaviours, name, c)) for c in commands if c != Command.HEALTH
                },
                described=behaviour_for(behaviours, name, Command.POLL).describe(routes_of.get(name, ())),
            )
        )
    return tuple(lines)


def _timeline(jobs: Sequence[JobReport], zones: Mapping[str, tzinfo]) -> tuple[TimelineJob, ...]:
    """Every job by when it was planned (or created); its routed children split into the
    ones it created and the duplicates its events were folded into."""
    by_id = {j.id: j for j in jobs}

    def own(job: JobReport, child: str) -> bool:
        return child in by_id and by_id[child].parent_job_id == job.id

    ordered = sorted(jobs, key=lambda j: (j.plan.planned_at if j.plan else j.created_at, j.created_at, j.id))
    return tuple(
        TimelineJob(
            job=job,
            tz=zones.get(job.plan.key, zones.get(job.plugin)) if job.plan else zones.get(job.plugin),
            children=tuple(c for c in job.children if own(job, c)),
            duplicates_of=tuple(c for c in job.children if not own(job, c)),
        )
        for job in ordered
    )


def _route_chain(route: Route, jobs: Sequence[JobReport]) -> RouteChain:
    by_id = {j.id: j for j in jobs}
    children = [
        j
        for j in jobs
        if j.parent_job_id is not None
        and j.plugin == route.target
        and j.event_type == route.event_type
        and j.parent_job_id in by_id
        and by_id[j.parent_job_id].plugin == route.source
    ]
    duplicates = sum(
        1
        for parent in jobs
        if parent.plugin == route.source
        for c in parent.children
        if c in by_id and by_id[c].plugin == route.target and by_id[c].parent_job_id != parent.id
    )
    return RouteChain(
        route=route,
        children=len(children),
        duplicates=duplicates,
        succeeded=sum(1 for j in children if j.status is JobStatus.SUCCEEDED),
        dead=sum(1 for j in children if j.status is JobStatus.DEAD),
    )


# =========================================================================== time zones


def dst_changes(tz: tzinfo, start: datetime, end: datetime) -> list[tuple[datetime, timedelta, timedelta]]:
    """UTC-offset changes of ``tz`` in ``[start, end)``: (instant, offset before, offset after),
    to the minute."""
    out: list[tuple[datetime, timedelta, timedelta]] = []
    hour = timedelta(hours=1)

    def offset(at: datetime) -> timedelta:
        return at.astimezone(tz).utcoffset() or timedelta(0)

    at = start.astimezone(UTC)
    before = offset(at)
    while at < end:
        nxt = min(at + hour, end)
        after = offset(nxt)
        if after != before:
            lo, hi = at, nxt
            while hi - lo > timedelta(minutes=1):
                mid = lo + (hi - lo) / 2
                if offset(mid) == before:
                    lo = mid
                else:
                    hi = mid
            change = hi.replace(second=0, microsecond=0)
            if offset(change) == before:  # pragma: no cover - offsets change on whole minutes
                change += timedelta(minutes=1)
            out.append((change, before, after))
            before = after
        at = nxt
    return out


def offset_text(value: timedelta) -> str:
    """A UTC offset as ``+01:00``."""
    minutes = int(value.total_seconds() // 60)
    sign = "+" if minutes >= 0 else "-"
    return f"{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"
