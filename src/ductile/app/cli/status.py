"""``ductile status``: the daemon, the queue, every plugin, its breakers, and health checks run now.

What only the running daemon knows (its scheduler's failures) comes from its
status file (:mod:`ductile.adapters.status_file`), believed when its pid is
the lock holder's.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import attrs

from ductile.app.cli.context import (
    ALL_JOBS,
    EXIT_FAILURE,
    EXIT_OK,
    Context,
    db_path,
    read_config,
    read_store,
    running_pid,
    start_problems,
    store_location,
    survey,
)
from ductile.app.cli.format import human_duration, local_time, table
from ductile.app.cli.jsondoc import breaker_json
from ductile.app.runtime import PluginState, Runtime
from ductile.app.spawn import plugin_env, spawn_request
from ductile.app.views import utc
from ductile.domain.breaker import Breaker, reopens_at
from ductile.domain.classify import classify
from ductile.domain.config import Config
from ductile.domain.job import Job, JobEvent, JobStatus
from ductile.domain.plugin import Plugin
from ductile.ports.catalog import Catalog
from ductile.ports.spawner import Spawner
from ductile.ports.store import Store
from ductile.ports.store_values import ROUTE_DEPTH_DROPS

#: Most health checks ``status`` runs at once.
HEALTH_CONCURRENCY = 8


async def _health(
    ctx: Context,
    *,
    spawner: Spawner,
    catalog: Catalog,
    config: Config,
    plugin: Plugin,
    state: dict[str, Any],
) -> dict[str, Any]:
    """Run the plugin's ``health`` now; read-only (its state_updates are ignored)."""
    refused = catalog.verify(plugin)
    if refused is not None:
        return {"ok": False, "error": f"refused before spawn: {refused}", "duration_seconds": 0.0, "logs": []}
    settings = config.plugin(plugin.name)
    timeout = settings.timeouts.health
    request = spawn_request(
        plugin,
        "health",
        job_id=f"health-{ctx.new_id()}",
        attempt=1,
        settings=settings,
        state=state,
        now=ctx.now(),
        base_env=plugin_env(ctx.env),
        user=run_as[0] if (run_as := config.run_as(plugin.name)) is not None else None,
    )
    outcome = await spawner.run(request)
    verdict = classify(outcome, timeout, protocol=plugin.protocol)
    logs = verdict.response.logs if verdict.response is not None else ()
    return {
        "ok": verdict.event is JobEvent.SUCCEED,
        "error": verdict.error,
        "duration_seconds": outcome.duration,
        "logs": [{"level": line.level, "message": line.message} for line in logs],
    }


async def cmd_status(ctx: Context, args: argparse.Namespace) -> int:
    config = read_config(ctx, args, fallback=True)
    pid = running_pid(ctx, config)
    seen = await _observe(ctx, config)
    rows = _plugin_rows(config, seen)
    # The start checks and the health checks run at once: both mostly wait for interpreters.
    preflight = asyncio.ensure_future(start_problems(ctx, seen.runtime.discovery))
    if not args.no_health:
        await _health_checks(ctx, config, seen, rows)
    cannot_start = await preflight
    for row in rows:
        row["cannot_start"] = cannot_start.get(row["name"])
    scheduler = _scheduler_report(ctx, config, pid)
    problems = [] if pid is not None else ["the daemon is not running"]
    own = seen.database is not None and not config.store.shared  # a shared store: the nodes' own matter
    problems += _scheduler_problems(scheduler)
    refused = ctx.store_check(db_path(config)) if own else None
    if refused is not None:
        problems.append(f"the database refuses writes: {refused}")
    problems += _plugin_problems(rows)
    healthy = not problems
    if args.json:
        ctx.json(
            _status_doc(config, pid, seen, rows, problems=problems, scheduler=scheduler, refused=refused)
        )
    else:
        _print_status(ctx, config, pid, seen, rows=rows, problems=problems, scheduler=scheduler)
    return EXIT_OK if healthy else EXIT_FAILURE


def _status_doc(
    config: Config,
    pid: int | None,
    seen: _Observed,
    rows: list[dict[str, Any]],
    *,
    problems: list[str],
    scheduler: dict[str, Any] | None,
    refused: str | None,
) -> dict[str, Any]:
    """``ductile status --json``."""
    return {
        "healthy": not problems,
        "problems": problems,
        "daemon": {
            "running": pid is not None,
            "pid": pid,
            "state_dir": config.service.state_dir,
            "scheduler": scheduler,
        },
        "database": seen.database,
        "store": {"writable": refused is None, "problem": refused},
        "queue": {"queued": seen.queued, "running": seen.running},
        "running": [
            {
                "id": j.id,
                "plugin": j.plugin,
                "command": j.command,
                "node": j.node,
                "started_at": utc(j.started_at),
            }
            for j in seen.running_jobs
        ],
        "nodes": seen.nodes,
        "routing": {
            "max_route_depth": config.service.max_route_depth,
            "dropped_at_depth": seen.dropped_at_depth,
        },
        "plugins": [
            {k: r[k] for k in ("name", "state", "reason", "version", "cannot_start", "breakers", "health")}
            for r in rows
        ],
    }


def _scheduler_report(ctx: Context, config: Config, pid: int | None) -> dict[str, Any] | None:
    """The running daemon's scheduler report (see the module's docs); None when unknown."""
    if pid is None:
        return None
    doc = ctx.daemon_report(config.service.state_dir)
    if doc is None or doc.get("pid") != pid or not isinstance(doc.get("scheduler"), dict):
        return None
    report: dict[str, Any] = doc["scheduler"]
    return report


def _scheduler_problems(report: Mapping[str, Any] | None) -> list[str]:
    if report is None or report.get("ok", True):
        return []
    if report.get("tick_error"):
        return [f"scheduler ticks are failing: {report['tick_error']}"]
    failing = report.get("failing_schedules") or {}
    return [f"schedule '{key}' cannot fire: {error}" for key, error in sorted(failing.items())]


@attrs.frozen(kw_only=True)
class _Observed:
    """What the store and discovery say, read once (the store is closed again)."""

    runtime: Runtime
    catalog: Catalog
    #: Plugins whose ``init`` has not run for their current manifest and config.
    pending: set[str]
    queued: int
    running: int
    breakers: list[Breaker]
    states: dict[str, dict[str, Any]]
    #: The database's path, None when there is none yet.
    database: str | None
    #: The jobs running now (on a shared store: on any node), oldest first.
    running_jobs: list[Job] = attrs.field(factory=list)
    #: A shared store's nodes (id, instance, lease, leading); empty for SQLite.
    nodes: list[dict[str, Any]] = attrs.field(factory=list)
    #: Events not routed because their chain hit ``service.max_route_depth``, ever.
    dropped_at_depth: int = 0


async def cluster_nodes(store: Store | None) -> list[dict[str, Any]]:
    """The nodes of a shared store, as ``status`` shows them (none for SQLite)."""
    if store is None or not hasattr(store, "nodes"):
        return []
    return [
        {
            "id": n.id,
            "instance": n.instance,
            "leading": n.leading,
            "lease_seconds": n.lease_left.total_seconds(),
            "started_at": utc(n.started_at),
        }
        for n in await store.nodes()
    ]


async def _observe(ctx: Context, config: Config) -> _Observed:
    store = await read_store(ctx, config)
    try:
        runtime, catalog, pending = await survey(ctx, config, store)
        queued = await store.queue_depth() if store is not None else 0
        running_jobs = (
            list(reversed(await store.list_jobs(statuses=[JobStatus.RUNNING], limit=ALL_JOBS)))
            if store is not None
            else []
        )
        nodes = await cluster_nodes(store)
        breakers = await store.breakers() if store is not None else []
        states = {
            name: (await store.get_state(name) if store is not None else {}) for name in runtime.plugins
        }
        counts = await store.counts() if store is not None else {}
    finally:
        if store is not None:
            await store.close()
    return _Observed(
        runtime=runtime,
        catalog=catalog,
        pending=pending,
        queued=queued,
        running=len(running_jobs),
        running_jobs=running_jobs,
        nodes=nodes,
        breakers=breakers,
        states=states,
        database=store_location(config) if store is not None else None,
        dropped_at_depth=counts.get(ROUTE_DEPTH_DROPS, 0),
    )


def _plugin_rows(config: Config, seen: _Observed) -> list[dict[str, Any]]:
    """One row per plugin, by name: loaded (maybe init pending), unhealthy, refused or
    disabled, with its open breakers; health is filled in later."""
    runtime = seen.runtime
    names = set(runtime.plugins) | {r.name for r in runtime.refused} | set(runtime.discovery.disabled)
    rows: list[dict[str, Any]] = []
    for name in names:
        status = runtime.status_of(name)
        reason = status.reason
        if status.state is PluginState.LOADED and name in seen.pending:
            reason = "init pending: it runs when the daemon starts or reloads"
        plugin = runtime.plugins.get(name)
        version = plugin.manifest.version if plugin is not None else None
        rows.append({"name": name, "state": str(status.state), "reason": reason, "version": version})
    rows.sort(key=lambda r: str(r["name"]))
    for row in rows:
        policy = config.plugin(row["name"]).circuit_breaker
        row["breakers"] = [
            breaker_json(b, reopens_at(b, policy))
            for b in seen.breakers
            if b.plugin == row["name"] and b.is_open
        ]
        row["health"] = None
    return rows


async def _health_checks(ctx: Context, config: Config, seen: _Observed, rows: list[dict[str, Any]]) -> None:
    """Run the ``health`` command of every loaded plugin that has one, at most
    :data:`HEALTH_CONCURRENCY` at a time (so the wait is the slowest few, not their sum)."""
    plugins = seen.runtime.plugins
    checks = [r["name"] for r in rows if r["name"] in plugins and plugins[r["name"]].supports("health")]
    if not checks:
        return
    spawner = ctx.spawner()
    bound = asyncio.Semaphore(HEALTH_CONCURRENCY)

    async def check(name: str) -> dict[str, Any]:
        async with bound:
            return await _health(
                ctx,
                spawner=spawner,
                catalog=seen.catalog,
                config=config,
                plugin=plugins[name],
                state=seen.states.get(name, {}),
            )

    results = await asyncio.gather(*(check(name) for name in checks))
    by_name = dict(zip(checks, results, strict=True))
    for row in rows:
        row["health"] = by_name.get(row["name"])


def _plugin_problems(rows: list[dict[str, Any]]) -> list[str]:
    problems = []
    for r in rows:
        if r["state"] in ("refused", "unhealthy"):
            problems.append(f"plugin '{r['name']}' is {r['state']}")
        if r.get("cannot_start"):
            problems.append(f"plugin '{r['name']}' cannot start")
        problems += [
            f"the circuit breaker of {r['name']} {b['command']} is {b['status'].replace('_', '-')}"
            for b in r["breakers"]
        ]
        if r["health"] is not None and not r["health"]["ok"]:
            problems.append(f"the health check of {r['name']} failed")
    return problems


def _print_status(
    ctx: Context,
    config: Config,
    pid: int | None,
    seen: _Observed,
    *,
    rows: list[dict[str, Any]],
    problems: list[str],
    scheduler: Mapping[str, Any] | None,
) -> None:
    where = f"state dir {config.service.state_dir}"
    ctx.print(f"daemon: running (pid {pid}), {where}" if pid is not None else f"daemon: not running, {where}")
    if scheduler is not None and scheduler.get("failed_ticks"):
        last = scheduler.get("last_error_at")
        shown = local_time(datetime.fromisoformat(last.replace("Z", "+00:00")), ctx.tz) if last else "?"
        state = "ok now" if scheduler.get("ok") else "FAILING"
        ctx.print(
            f"scheduler: {state}; {scheduler['failed_ticks']} failed tick(s), the last at {shown}: "
            f"{scheduler.get('last_error')}"
        )
    ctx.print(f"queue: {seen.queued} queued, {seen.running} running")
    for job in seen.running_jobs:
        on = f" on {job.node}" if job.node is not None else ""
        ctx.print(
            f"  running {job.id} {job.plugin}.{job.command} since {local_time(job.started_at, ctx.tz)}{on}"
        )
    if seen.nodes:
        ctx.print("nodes:")
        rows_ = [
            [n["id"], n["instance"], "leader" if n["leading"] else "", f"lease {n['lease_seconds']:.0f} s"]
            for n in seen.nodes
        ]
        ctx.print("  " + table(["NODE", "INSTANCE", "ROLE", "LEASE"], rows_).replace("\n", "\n  "))
    if seen.dropped_at_depth:
        ctx.print(
            f"routing: {seen.dropped_at_depth} event(s) not routed: their chain reached "
            f"service.max_route_depth ({config.service.max_route_depth}); see the router's warnings"
        )
    ctx.print()
    if rows:
        ctx.print(
            table(
                ["PLUGIN", "STATE", "BREAKER", "HEALTH", "TOOK", "DETAIL"],
                [_status_row(ctx, r) for r in rows],
            )
        )
    else:
        ctx.print(f"no plugins in {config.plugins_dir}")
    ctx.print()
    ctx.print("NOT healthy: " + "; ".join(problems) if problems else "all healthy")


def _status_row(ctx: Context, row: Mapping[str, Any]) -> list[object]:
    breakers = []
    for b in row["breakers"]:
        if b["status"] == "open":
            until = b["reopens_at"]
            shown = local_time(datetime.fromisoformat(until), ctx.tz) if until else "?"
            breakers.append(f"{b['command']}: open until {shown}")
        else:
            breakers.append(f"{b['command']}: half-open")
    breaker = "; ".join(breakers) if breakers else ("closed" if row["state"] != "refused" else None)
    health = row["health"]
    details = [row["reason"]] if row["reason"] else []
    if row.get("cannot_start"):
        details.append(f"cannot start: {row['cannot_start']}")
    if health is None:
        shown_health, took = None, None
    else:
        shown_health = "ok" if health["ok"] else "error"
        took = human_duration(health["duration_seconds"])
        if health["error"]:
            details.append(f"health: {health['error']}")
    return [row["name"], row["state"], breaker, shown_health, took, "; ".join(details) or None]
