"""The text form of ``ductile simulate``'s report: plugins, a timeline per plugin, events,
routes, a summary, and the invariants' verdict.

Times are shown in the zone of the plugin's schedule (the timeline) or in the
operator's zone (the header and the events); see
:mod:`ductile.app.cli.simulate_report` for the value rendered.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, tzinfo

from ductile.app.cli.context import Context
from ductile.app.cli.format import human_duration, local_time, table, zone_name
from ductile.app.cli.simulate_report import (
    DstChange,
    PluginLine,
    SimulateReport,
    TimelineJob,
    offset_text,
)
from ductile.domain.job import JobStatus
from ductile.domain.schedule import PlannedRun

#: Events the text form counts per plugin instead of listing one by one.
SKIP_KINDS = ("skipped_breaker", "skipped_poll_guard")


def render_text(ctx: Context, report: SimulateReport, *, show: int, tz: tzinfo | None) -> None:
    """Print the report for people; ``show``: how many jobs of each plugin to list."""
    _header(ctx, report, tz)
    by_plugin: dict[str, list[TimelineJob]] = {}
    for entry in report.timeline:
        by_plugin.setdefault(entry.job.plugin, []).append(entry)
    plugins = {entry.job.id: entry.job.plugin for entry in report.timeline}
    for plugin in report.plugins:
        jobs = by_plugin.get(plugin.name, [])
        if jobs:
            _plugin_days(ctx, plugin, jobs, report.dst, tz)
            if show:
                _first_jobs(ctx, plugin, jobs, plugins, show=show, tz=tz)
    _events(ctx, report, tz)
    _routes(ctx, report)
    _summary(ctx, report)


def _indented(text: str, prefix: str = "  ") -> str:
    return prefix + text.replace("\n", "\n" + prefix)


def _header(ctx: Context, report: SimulateReport, tz: tzinfo | None) -> None:
    ctx.print(f"ductile simulate: {report.config}")
    store = "in-memory" if report.store == "memory" else "SQLite"
    span = f"{local_time(report.start, tz)} to {local_time(report.end, tz)}"
    ctx.print(f"  {report.days:g} day(s) from {span}, seed {report.seed}, {store} store")
    ctx.print("  nothing real was run: the plugins are simulated and the state directory is not touched")
    ctx.print()
    ctx.print("plugins:")
    rows = [
        [p.name, p.state if p.reason is None else f"{p.state}: {p.reason}", p.summary, p.described]
        for p in report.plugins
    ]
    ctx.print(_indented(table(["PLUGIN", "STATE", "SCHEDULE", "BEHAVIOUR"], rows)))


def _day(at: datetime, tz: tzinfo | None) -> str:
    return (at.astimezone(tz) if tz is not None else at.astimezone()).strftime("%Y-%m-%d %a")


def _plugin_days(
    ctx: Context, plugin: PluginLine, jobs: Sequence[TimelineJob], dst: Sequence[DstChange], tz: tzinfo | None
) -> None:
    """One plugin's jobs per day (in its schedule's zone), with the DST changes on their day."""
    ptz = plugin.tz if plugin.tz is not None else tz
    ctx.print()
    ctx.print(f"{plugin.name}: {plugin.summary or 'no schedule'} ({len(jobs)} job(s))")
    days: dict[str, list[TimelineJob]] = {}
    for entry in jobs:
        days.setdefault(_day(entry.at, ptz), []).append(entry)
    notes: dict[str, str] = {}
    if plugin.tz is not None:
        for change in dst:
            if zone_name(change.tz) == zone_name(plugin.tz):
                at = change.at.astimezone(ptz)
                text = f"DST: {offset_text(change.before)} -> {offset_text(change.after)} at {at:%H:%M}"
                notes[_day(at, ptz)] = text
    rows = []
    for day, group in days.items():
        results = [r.result for entry in group for r in entry.job.runs]
        ok = sum(1 for result in results if result == "succeeded")
        dead = sum(1 for entry in group if entry.job.status is JobStatus.DEAD)
        rows.append([day, len(group), len(results), ok, len(results) - ok, dead, notes.get(day, "")])
    ctx.print(_indented(table(["DAY", "JOBS", "RUNS", "OK", "FAILED", "DEAD", "NOTE"], rows)))


def _first_jobs(
    ctx: Context,
    plugin: PluginLine,
    jobs: Sequence[TimelineJob],
    plugins: dict[str, str],
    *,
    show: int,
    tz: tzinfo | None,
) -> None:
    """The first ``show`` jobs of a plugin: when, jitter, window snap, result, where it routed."""
    ptz = plugin.tz if plugin.tz is not None else tz
    first = jobs[:show]
    rows = []
    for entry in first:
        job, plan = entry.job, entry.job.plan
        offset = plan.offset.total_seconds() if plan else None
        runs_text = f"{len(job.runs)} run(s)" if len(job.runs) != 1 else "1 run"
        result = f"{job.status.value} ({runs_text})"
        if job.status is JobStatus.DEAD and job.last_error:
            result += f": {job.last_error}"
        routed = sorted({plugins[child] for child in entry.children if child in plugins})
        rows.append(
            [
                local_time(entry.at, entry.tz or ptz),
                _nominal(plan, entry.tz or ptz, several=len(plugin.schedules) > 1)
                if plan
                else job.submitted_by.value,
                ("+" if offset > 0 else "") + human_duration(offset) if offset else "-",
                "yes" if plan and plan.snapped else "-",
                result,
                ", ".join(routed) or "-",
            ]
        )
    ctx.print(f"  first {len(first)} of {len(jobs)}:")
    header = [
        "PLANNED" if plugin.schedule else "CREATED",
        "NOMINAL",
        "JITTER",
        "SNAPPED",
        "RESULT",
        "ROUTED TO",
    ]
    ctx.print(_indented(table(header, rows), "    "))


def _nominal(plan: PlannedRun, tz: tzinfo | None, *, several: bool) -> str:
    """A job's nominal time of day, after its schedule's id when the plugin has several."""
    clock = local_time(plan.nominal_at, tz)[11:19]
    return f"{plan.schedule_id} {clock}" if several else clock


def _events(ctx: Context, report: SimulateReport, tz: tzinfo | None) -> None:
    """Breakers, crashes, reloads, missed runs and DST changes in time order; skipped runs counted."""
    notable = [e for e in report.events if e.kind not in SKIP_KINDS]
    skipped: dict[tuple[str, str], int] = {}
    for e in report.events:
        if e.kind in SKIP_KINDS and e.plugin is not None:  # a skipped run always names its plugin
            skipped[(e.plugin, e.kind)] = skipped.get((e.plugin, e.kind), 0) + 1
    if not (notable or skipped or report.dst):
        return
    ctx.print()
    ctx.print("events:")
    timed: list[tuple[datetime, list[object]]] = [
        (e.at, [local_time(e.at, tz), e.plugin or "-", e.detail]) for e in notable
    ]
    timed += [
        (
            c.at,
            [
                local_time(c.at, c.tz),
                zone_name(c.tz),
                f"DST: {offset_text(c.before)} -> {offset_text(c.after)}",
            ],
        )
        for c in report.dst
    ]
    timed.sort(key=lambda pair: pair[0].replace(microsecond=0))  # to the second, as shown
    if timed:
        ctx.print(_indented(table(["TIME", "PLUGIN", "WHAT"], [row for _, row in timed])))
    for (plugin_name, kind), count in sorted(skipped.items()):
        why = "its circuit breaker was open" if kind == "skipped_breaker" else "a poll was still outstanding"
        ctx.print(f"  {plugin_name}: {count} scheduled run(s) skipped because {why}")


def _routes(ctx: Context, report: SimulateReport) -> None:
    if not report.routes:
        return
    ctx.print()
    ctx.print("routes:")
    rows = [
        [c.route.source, c.route.event_type, c.route.target, c.children, c.duplicates, c.succeeded, c.dead]
        for c in report.routes
    ]
    header = ["FROM", "EVENT", "TO", "CHILDREN", "DEDUPED", "SUCCEEDED", "DEAD"]
    ctx.print(_indented(table(header, rows)))


def _summary(ctx: Context, report: SimulateReport) -> None:
    ctx.print()
    ctx.print("summary:")
    rows = [
        [
            s.plugin,
            s.jobs,
            s.runs,
            s.successes,
            s.failures,
            s.retries,
            s.dead,
            human_duration(s.mean_wait) if s.mean_wait is not None else "-",
            human_duration(s.max_wait) if s.max_wait is not None else "-",
            s.width,
            f"{s.utilisation:.0%}",
        ]
        for s in report.summary
    ]
    header = ["PLUGIN", "JOBS", "RUNS", "SUCCEEDED", "FAILED", "RETRIES", "DEAD", "MEAN WAIT", "MAX WAIT"]
    header += ["LANE", "BUSY"]
    ctx.print(_indented(table(header, rows)))
    crashes = f", through {report.crashes} simulated crash(es)" if report.crashes else ""
    ctx.print()
    ctx.print(f"invariants: all held ({report.checks} checks{crashes}); trace {report.trace_hash[:16]}")
