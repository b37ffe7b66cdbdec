"""``ductile simulate``: the operator's own config through the deterministic simulation.

The verb reads the config, the manifests in its plugins directory (never running
anything), the behaviours given on the command line, and runs a
:class:`~ductile.app.sim.Simulation`; then it prints the report: as one JSON
document (:func:`build_report`) or as text (:func:`render_text`).
"""

from __future__ import annotations

import argparse
from collections.abc import Collection, Mapping, Sequence
from datetime import UTC, datetime, timedelta, tzinfo
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from ductile.app.catalog import FilesystemCatalog
from ductile.app.cli.context import EXIT_FAILURE, EXIT_OK, Context, UsageError, read_config
from ductile.app.cli.format import human_duration, local_time, parse_time, schedule_summary, table, zone_name
from ductile.app.sim import (
    Arrivals,
    Behaviour,
    BehaviourError,
    Faults,
    InvariantError,
    SimCatalog,
    Simulation,
    SimulationResult,
    behaviour_for,
    parse_assignment,
    parse_behaviour,
    split_key,
)
from ductile.domain.config import Config
from ductile.domain.job import Command, JobStatus
from ductile.domain.protocol import iso_utc


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


def _offset_text(value: timedelta) -> str:
    minutes = int(value.total_seconds() // 60)
    sign = "+" if minutes >= 0 else "-"
    return f"{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"


def disk_catalog(config: Config, behaviours: Mapping[str, Behaviour]) -> tuple[SimCatalog, str | None]:
    """The simulated catalog for an operator's config: the manifests and refusals the
    real plugins directory gives (read only: nothing is executed), or, when there is
    no such directory, every configured plugin with the default simulated manifest."""
    if not Path(config.plugins_dir).is_dir():
        note = f"plugins_dir {config.plugins_dir} does not exist: every configured plugin is simulated as is"
        return SimCatalog(behaviours), note
    found = FilesystemCatalog().discover(config)
    manifests = {name: plugin.manifest for name, plugin in found.plugins.items()}
    refusals = {r.name: r.reason for r in found.refused}
    return SimCatalog(behaviours, manifests=manifests, refusals=refusals), None


def _behaviours_from_args(
    assignments: Sequence[str], failures: Sequence[str], known: Collection[str]
) -> dict[str, Behaviour]:
    """``--behaviour KEY=B`` and ``--fail PLUGIN=RATE`` (sugar for ``PLUGIN=flaky:RATE``)."""
    out: dict[str, Behaviour] = {}
    given = [(text, "--behaviour") for text in assignments] + [(text, "--fail") for text in failures]
    for text, flag in given:
        if flag == "--fail":
            plugin, eq, rate = text.partition("=")
            if not eq:
                raise BehaviourError(f"--fail {text!r}: write PLUGIN=RATE, e.g. --fail notify=0.3")
            key, behaviour = plugin.strip(), parse_behaviour(f"flaky:{rate.strip()}")
        else:
            key, behaviour = parse_assignment(text)
        plugin, _ = split_key(key)
        if plugin not in known:
            names = ", ".join(sorted(known)) or "none"
            raise BehaviourError(f"{flag} {text!r}: no plugin '{plugin}' in this config (plugins: {names})")
        if key in out:
            raise BehaviourError(f"{flag} {text!r}: '{key}' is given a behaviour twice")
        out[key] = behaviour
    return out


def _crash_faults(days: float) -> Faults:
    """``--check``: a few crashes at random port calls, spread over the run."""
    crashes = max(3, round(2 * days))
    return Faults(
        crash_rate=0.02,
        max_crashes=crashes,
        downtime=timedelta(minutes=2),
        spacing=timedelta(days=days) / (crashes + 1),
    )


async def cmd_simulate(ctx: Context, args: argparse.Namespace) -> int:
    """``ductile simulate``: the operator's own config through the simulator."""
    config = read_config(ctx, args)
    if not 0 < args.days <= 366:
        raise UsageError(f"--days must be more than 0 and at most 366, not {args.days:g}")
    if args.webhooks_per_day < 0:
        raise UsageError(f"--webhooks-per-day cannot be negative ({args.webhooks_per_day:g})")
    start = parse_time(args.start, now=ctx.now(), tz=ctx.tz).replace(microsecond=0)
    catalog, note = disk_catalog(config, {})
    known = set(config.plugins) | set(catalog.manifests) | set(catalog.refusals)
    try:
        behaviours = _behaviours_from_args(args.behaviour or (), args.fail or (), known)
    except BehaviourError as e:
        raise UsageError(str(e)) from None
    catalog.behaviours = behaviours
    if note is not None:
        ctx.note(note)
    replay = " ".join(
        [
            "ductile simulate",
            f"--config {config.source}",
            f"--seed {args.seed}",
            f"--start {start.astimezone(UTC).isoformat()}",
            f"--days {args.days:g}",
            *(f"--behaviour {b}" for b in args.behaviour or ()),
            *(f"--fail {f}" for f in args.fail or ()),
            *([f"--webhooks-per-day {args.webhooks_per_day:g}"] if args.webhooks_per_day else []),
            *([f"--store {args.store}"] if args.store != "memory" else []),
            *(["--check"] if args.check else []),
        ]
    )
    sim = Simulation(
        config,
        seed=args.seed,
        behaviours=behaviours,
        store="indexed" if args.store == "memory" else args.store,
        faults=_crash_faults(args.days) if args.check else Faults(),
        arrivals=Arrivals(webhooks_per_day=args.webhooks_per_day),
        catalog=catalog,
        start=start,
        replay=replay,
    )
    try:
        result = await sim.run(timedelta(days=args.days))
    except InvariantError as e:
        ctx.note(str(e))
        return EXIT_FAILURE
    report = build_report(result, catalog, behaviours, days=args.days)
    if args.json:
        ctx.json(report)
    else:
        render_text(ctx, report, show=args.show, tz=ctx.tz)
    return EXIT_OK


def _iso(at: datetime | None) -> str | None:
    if at is None:
        return None

    return iso_utc(at)


def build_report(
    result: SimulationResult, catalog: SimCatalog, behaviours: Mapping[str, Behaviour], *, days: float
) -> dict[str, Any]:
    """What ``ductile simulate --json`` prints (and the text output is drawn from)."""
    config = result.config
    discovery = catalog.discover(config)
    routes_of: dict[str, tuple[str, ...]] = {}
    for route in config.routes:
        routes_of.setdefault(route.source, ())
        if route.event_type not in routes_of[route.source]:
            routes_of[route.source] += (route.event_type,)
    plugins = []
    unhealthy = {e.plugin: e.detail for e in result.events if e.kind == "unhealthy"}
    for name in sorted(set(config.plugins) | set(discovery.plugins) | {r.name for r in discovery.refused}):
        settings = config.plugin(name)
        refusal = next((r.reason for r in discovery.refused if r.name == name), None)
        if name in discovery.disabled:
            state, reason = "disabled", None
        elif refusal is not None:
            state, reason = "refused", refusal
        elif name in unhealthy:
            state, reason = "unhealthy", unhealthy[name]
        else:
            state, reason = "loaded", None
        schedule = settings.schedule if settings.enabled else None
        commands = sorted(catalog.manifest(name).commands)
        shown = {c: str(behaviour_for(behaviours, name, c)) for c in commands if c != Command.HEALTH}
        plugins.append(
            {
                "name": name,
                "state": state,
                "reason": reason,
                "schedule": schedule_summary(schedule) if schedule is not None else None,
                "timezone": zone_name(schedule.tz) if schedule is not None else None,
                "behaviour": shown,
                "described": behaviour_for(behaviours, name, Command.POLL).describe(routes_of.get(name, ())),
            }
        )
    zones = {p.name: p.schedule.tz for p in config.plugins.values() if p.schedule is not None}
    by_id = {j.id: j for j in result.jobs}
    runs = []
    for job in sorted(
        result.jobs, key=lambda j: (j.plan.planned_at if j.plan else j.created_at, j.created_at, j.id)
    ):
        tz = zones.get(job.plugin)
        plan = job.plan
        runs.append(
            {
                "id": job.id,
                "plugin": job.plugin,
                "command": job.command,
                "submitted_by": job.submitted_by.value,
                "status": job.status.value,
                "attempts": len(job.runs),
                "max_attempts": job.max_attempts,
                "created_at": _iso(job.created_at),
                "completed_at": _iso(job.completed_at),
                "planned_at": _iso(plan.planned_at) if plan else None,
                "planned_local": local_time(plan.planned_at, tz) if plan and tz else None,
                "nominal_at": _iso(plan.nominal_at) if plan else None,
                "nominal_local": local_time(plan.nominal_at, tz) if plan and tz else None,
                "offset_seconds": plan.offset.total_seconds() if plan else None,
                "snapped": plan.snapped if plan else None,
                "timezone": zone_name(tz) if plan and tz else None,
                "event_type": job.event_type,
                "dedupe_key": job.dedupe_key,
                "parent_job_id": job.parent_job_id,
                "children": [c for c in job.children if c in by_id and by_id[c].parent_job_id == job.id],
                "duplicates_of": [
                    c for c in job.children if not (c in by_id and by_id[c].parent_job_id == job.id)
                ],
                "queue_wait_seconds": job.waits[0] if job.waits else None,
                "last_error": job.last_error,
                "runs": [
                    {
                        "attempt": r.attempt,
                        "started_at": _iso(r.started_at),
                        "finished_at": _iso(r.finished_at),
                        "duration_seconds": r.duration,
                        "result": r.result,
                        "error": r.error,
                    }
                    for r in job.runs
                ],
            }
        )
    chains = []
    for route in dict.fromkeys(config.routes):
        children = [
            j
            for j in result.jobs
            if j.parent_job_id is not None
            and j.plugin == route.target
            and j.event_type == route.event_type
            and j.parent_job_id in by_id
            and by_id[j.parent_job_id].plugin == route.source
        ]
        duplicates = sum(
            1
            for parent in result.jobs
            if parent.plugin == route.source
            for c in parent.children
            if c in by_id and by_id[c].plugin == route.target and by_id[c].parent_job_id != parent.id
        )
        chains.append(
            {
                "from": route.source,
                "event_type": route.event_type,
                "to": route.target,
                "children": len(children),
                "duplicates": duplicates,
                "succeeded": sum(1 for j in children if j.status is JobStatus.SUCCEEDED),
                "dead": sum(1 for j in children if j.status is JobStatus.DEAD),
            }
        )
    dst = [
        {
            "timezone": zone_name(tz),
            "at": _iso(at),
            "from_offset": _offset_text(a),
            "to_offset": _offset_text(b),
        }
        for tz in dict.fromkeys(zones.values())
        for at, a, b in dst_changes(tz, result.start, result.end)
    ]
    return {
        "config": config.source,
        "seed": result.seed,
        "store": "sqlite" if result.store == "sqlite" else "memory",
        "days": days,
        "start": _iso(result.start),
        "end": _iso(result.end),
        "finished": _iso(result.finished),
        "plugins": plugins,
        "runs": runs,
        "events": [
            {"at": _iso(e.at), "kind": e.kind, "plugin": e.plugin, "detail": e.detail} for e in result.events
        ],
        "dst": dst,
        "routes": chains,
        "summary": [
            {
                "plugin": s.plugin,
                "jobs": s.jobs,
                "runs": s.runs,
                "successes": s.successes,
                "failures": s.failures,
                "retries": s.retries,
                "dead": s.dead,
                "mean_wait_seconds": s.mean_wait,
            }
            for s in result.stats
        ],
        "invariants": {"ok": True, "checks": result.checks, "crashes": result.crashes},
        "trace_hash": result.trace_hash,
    }


def _parse_iso(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def render_text(ctx: Context, report: Mapping[str, Any], *, show: int, tz: tzinfo | None) -> None:
    """The human form of :func:`build_report`."""

    def zone(name: str | None) -> tzinfo | None:
        return ZoneInfo(name) if name else tz

    start, end = _parse_iso(report["start"]), _parse_iso(report["end"])
    ctx.print(f"ductile simulate: {report['config']}")
    store = "in-memory" if report["store"] == "memory" else "SQLite"
    span = f"{local_time(start, tz)} to {local_time(end, tz)}"
    ctx.print(f"  {report['days']:g} day(s) from {span}, seed {report['seed']}, {store} store")
    ctx.print("  nothing real was run: the plugins are simulated and the state directory is not touched")
    ctx.print()
    ctx.print("plugins:")
    rows = [
        [
            p["name"],
            p["state"] if p["reason"] is None else f"{p['state']}: {p['reason']}",
            p["schedule"],
            p["described"],
        ]
        for p in report["plugins"]
    ]
    ctx.print("  " + table(["PLUGIN", "STATE", "SCHEDULE", "BEHAVIOUR"], rows).replace("\n", "\n  "))
    dst_by_zone: dict[str, list[Mapping[str, Any]]] = {}
    for change in report["dst"]:
        dst_by_zone.setdefault(change["timezone"], []).append(change)
    index = {r["id"]: r for r in report["runs"]}
    runs_by_plugin: dict[str, list[Mapping[str, Any]]] = {}
    for run in report["runs"]:
        runs_by_plugin.setdefault(run["plugin"], []).append(run)
    for plugin in report["plugins"]:
        name = plugin["name"]
        jobs = runs_by_plugin.get(name, [])
        if not jobs:
            continue
        ptz = zone(plugin["timezone"])
        ctx.print()
        ctx.print(f"{name}: {plugin['schedule'] or 'no schedule'} ({len(jobs)} job(s))")
        days: dict[str, list[Mapping[str, Any]]] = {}
        for job in jobs:
            at = _parse_iso(job["planned_at"] or job["created_at"])
            day = (at.astimezone(ptz) if ptz is not None else at.astimezone()).strftime("%Y-%m-%d %a")
            days.setdefault(day, []).append(job)
        notes: dict[str, str] = {}
        for change in dst_by_zone.get(plugin["timezone"] or "", []):
            at = _parse_iso(change["at"]).astimezone(ptz)
            notes[at.strftime("%Y-%m-%d %a")] = (
                f"DST: {change['from_offset']} -> {change['to_offset']} at {at:%H:%M}"
            )
        rows = []
        for day, group in days.items():
            attempts = [r for j in group for r in j["runs"]]
            rows.append(
                [
                    day,
                    len(group),
                    len(attempts),
                    sum(1 for r in attempts if r["result"] == "succeeded"),
                    sum(1 for r in attempts if r["result"] != "succeeded"),
                    sum(1 for j in group if j["status"] == "dead"),
                    notes.get(day, ""),
                ]
            )
        ctx.print(
            "  " + table(["DAY", "JOBS", "RUNS", "OK", "FAILED", "DEAD", "NOTE"], rows).replace("\n", "\n  ")
        )
        if show:
            first = jobs[:show]
            rows = []
            for job in first:
                planned = _parse_iso(job["planned_at"] or job["created_at"])
                nominal = _parse_iso(job["nominal_at"]) if job["nominal_at"] else None
                offset = job["offset_seconds"]
                runs_text = f"{job['attempts']} run(s)" if job["attempts"] != 1 else "1 run"
                result = f"{job['status']} ({runs_text})"
                if job["status"] == "dead" and job["last_error"]:
                    result += f": {job['last_error']}"
                routed = sorted({index[i]["plugin"] for i in job["children"] if i in index})
                rows.append(
                    [
                        local_time(planned, ptz),
                        local_time(nominal, ptz)[11:19] if nominal else job["submitted_by"],
                        ("+" if offset > 0 else "") + human_duration(offset) if offset else "-",
                        "yes" if job["snapped"] else "-",
                        result,
                        ", ".join(routed) or "-",
                    ]
                )
            ctx.print(f"  first {len(first)} of {len(jobs)}:")
            header = [
                "PLANNED" if plugin["schedule"] else "CREATED",
                "NOMINAL",
                "JITTER",
                "SNAPPED",
                "RESULT",
                "ROUTED TO",
            ]
            ctx.print("    " + table(header, rows).replace("\n", "\n    "))
    notable = [e for e in report["events"] if e["kind"] not in ("skipped_breaker", "skipped_poll_guard")]
    skipped: dict[tuple[str, str], int] = {}
    for e in report["events"]:
        if e["kind"] in ("skipped_breaker", "skipped_poll_guard"):
            skipped[(e["plugin"], e["kind"])] = skipped.get((e["plugin"], e["kind"]), 0) + 1
    if notable or skipped or report["dst"]:
        ctx.print()
        ctx.print("events:")
        rows = [[local_time(_parse_iso(e["at"]), tz), e["plugin"] or "-", e["detail"]] for e in notable]
        rows += [
            [
                local_time(_parse_iso(c["at"]), zone(c["timezone"])),
                c["timezone"],
                f"DST: {c['from_offset']} -> {c['to_offset']}",
            ]
            for c in report["dst"]
        ]
        rows.sort(key=lambda r: _parse_iso(str(r[0])))
        if rows:
            ctx.print("  " + table(["TIME", "PLUGIN", "WHAT"], rows).replace("\n", "\n  "))
        for (plugin_name, kind), count in sorted(skipped.items()):
            why = (
                "its circuit breaker was open"
                if kind == "skipped_breaker"
                else "a poll was still outstanding"
            )
            ctx.print(f"  {plugin_name}: {count} scheduled run(s) skipped because {why}")
    if report["routes"]:
        ctx.print()
        ctx.print("routes:")
        rows = [
            [r["from"], r["event_type"], r["to"], r["children"], r["duplicates"], r["succeeded"], r["dead"]]
            for r in report["routes"]
        ]
        ctx.print(
            "  "
            + table(["FROM", "EVENT", "TO", "CHILDREN", "DEDUPED", "SUCCEEDED", "DEAD"], rows).replace(
                "\n", "\n  "
            )
        )
    ctx.print()
    ctx.print("summary:")
    rows = [
        [
            s["plugin"],
            s["jobs"],
            s["runs"],
            s["successes"],
            s["failures"],
            s["retries"],
            s["dead"],
            human_duration(s["mean_wait_seconds"]) if s["mean_wait_seconds"] is not None else "-",
        ]
        for s in report["summary"]
    ]
    ctx.print(
        "  "
        + table(
            ["PLUGIN", "JOBS", "RUNS", "SUCCEEDED", "FAILED", "RETRIES", "DEAD", "MEAN WAIT"], rows
        ).replace("\n", "\n  ")
    )
    inv = report["invariants"]
    crashes = f", through {inv['crashes']} simulated crash(es)" if inv["crashes"] else ""
    ctx.print()
    ctx.print(f"invariants: all held ({inv['checks']} checks{crashes}); trace {report['trace_hash'][:16]}")
