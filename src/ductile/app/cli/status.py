"""``ductile status``: the daemon, the queue, every plugin, its breakers, and health checks run now."""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from ductile.app.catalog import Catalog
from ductile.app.cli.context import (
    ALL_JOBS,
    EXIT_FAILURE,
    EXIT_OK,
    Context,
    db_path,
    read_config,
    read_store,
    running_pid,
    survey,
)
from ductile.app.cli.format import human_duration, local_time, table
from ductile.app.cli.jsondoc import breaker_json
from ductile.app.engine import plugin_env
from ductile.domain.breaker import reopens_at
from ductile.domain.config import KILL_GRACE, Config
from ductile.domain.job import JobEvent, JobStatus
from ductile.domain.plugin import Plugin
from ductile.domain.protocol import build_request
from ductile.domain.settle import classify
from ductile.ports.spawner import Spawner, SpawnRequest


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
    job_id = f"health-{ctx.new_id()}"
    request = build_request(
        job_id=job_id,
        command="health",
        config=dict(settings.config),
        state=state,
        deadline_at=ctx.now() + timeout,
    )
    env = plugin_env(ctx.env)
    env.update(
        DUCTILE_PLUGIN=plugin.name, DUCTILE_COMMAND="health", DUCTILE_JOB_ID=job_id, DUCTILE_ATTEMPT="1"
    )
    outcome = await spawner.run(
        SpawnRequest(
            executable=plugin.executable,
            cwd=plugin.directory,
            stdin=request,
            env=env,
            timeout=timeout.total_seconds(),
            grace=KILL_GRACE.total_seconds(),
        )
    )
    verdict = classify(outcome, timeout)
    logs = verdict.response.logs if verdict.response is not None else ()
    return {
        "ok": verdict.event is JobEvent.SUCCEED,
        "error": verdict.error,
        "duration_seconds": outcome.duration,
        "logs": [{"level": line.level, "message": line.message} for line in logs],
    }


async def cmd_status(ctx: Context, args: argparse.Namespace) -> int:

    config = read_config(ctx, args)
    pid = running_pid(ctx, config)
    store = await read_store(ctx, config)
    try:
        runtime, catalog, pending = await survey(ctx, config, store)
        queued = await store.queue_depth() if store is not None else 0
        running = (
            len(await store.list_jobs(statuses=[JobStatus.RUNNING], limit=ALL_JOBS))
            if store is not None
            else 0
        )
        breakers = await store.breakers() if store is not None else []
        states = {
            name: (await store.get_state(name) if store is not None else {}) for name in runtime.plugins
        }
    finally:
        if store is not None:
            await store.close()
    discovery = runtime.discovery
    rows: list[dict[str, Any]] = []
    for name, plugin in discovery.plugins.items():
        state, reason = "loaded", None
        if name in runtime.unhealthy:
            state, reason = "unhealthy", runtime.unhealthy[name]
        elif name in pending:
            reason = "init pending: it runs when the daemon starts or reloads"
        rows.append({"name": name, "state": state, "reason": reason, "version": plugin.manifest.version})
    rows += [
        {"name": r.name, "state": "refused", "reason": r.reason, "version": None} for r in discovery.refused
    ]
    rows += [{"name": n, "state": "disabled", "reason": None, "version": None} for n in discovery.disabled]
    rows.sort(key=lambda r: str(r["name"]))
    for row in rows:
        policy = config.plugin(row["name"]).circuit_breaker
        row["breakers"] = [
            breaker_json(b, reopens_at(b, policy)) for b in breakers if b.plugin == row["name"] and b.is_open
        ]
        row["health"] = None

    checks = [
        r["name"]
        for r in rows
        if r["name"] in runtime.plugins and runtime.plugins[r["name"]].supports("health")
    ]
    if checks and not args.no_health:
        spawner = ctx.spawner()
        results = await asyncio.gather(
            *(
                _health(
                    ctx,
                    spawner=spawner,
                    catalog=catalog,
                    config=config,
                    plugin=runtime.plugins[name],
                    state=states.get(name, {}),
                )
                for name in checks
            )
        )
        by_name = dict(zip(checks, results, strict=True))
        for row in rows:
            row["health"] = by_name.get(row["name"])

    problems = [] if pid is not None else ["the daemon is not running"]
    for r in rows:
        if r["state"] in ("refused", "unhealthy"):
            problems.append(f"plugin '{r['name']}' is {r['state']}")
        problems += [
            f"the circuit breaker of {r['name']} {b['command']} is {b['status'].replace('_', '-')}"
            for b in r["breakers"]
        ]
        if r["health"] is not None and not r["health"]["ok"]:
            problems.append(f"the health check of {r['name']} failed")
    healthy = not problems
    doc = {
        "healthy": healthy,
        "problems": problems,
        "daemon": {"running": pid is not None, "pid": pid, "state_dir": config.service.state_dir},
        "database": str(db_path(config)) if store is not None else None,
        "queue": {"queued": queued, "running": running},
        "plugins": [
            {k: r[k] for k in ("name", "state", "reason", "version", "breakers", "health")} for r in rows
        ],
    }
    if args.json:
        ctx.json(doc)
    else:
        where = f"state dir {config.service.state_dir}"
        ctx.print(
            f"daemon: running (pid {pid}), {where}" if pid is not None else f"daemon: not running, {where}"
        )
        ctx.print(f"queue: {queued} queued, {running} running")
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
        ctx.print("all healthy" if healthy else "NOT healthy: " + "; ".join(problems))
    return EXIT_OK if healthy else EXIT_FAILURE


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
    if health is None:
        shown_health, took = None, None
    else:
        shown_health = "ok" if health["ok"] else "error"
        took = human_duration(health["duration_seconds"])
        if health["error"]:
            details.append(f"health: {health['error']}")
    return [row["name"], row["state"], breaker, shown_health, took, "; ".join(details) or None]
