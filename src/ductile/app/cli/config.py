"""``ductile config check``: the config and everything it refers to, every problem named."""

from __future__ import annotations

import argparse
from typing import Any

from ductile.app.cli.context import EXIT_FAILURE, EXIT_OK, Context, read_config, start_problems
from ductile.app.cli.format import indent, schedule_summary, table
from ductile.app.cli.inspect import plugins_doc, print_plugins
from ductile.app.runtime import PluginState, Runtime
from ductile.domain.config import Config
from ductile.domain.lifecycle import SOURCE as LIFECYCLE_SOURCE
from ductile.domain.plugin import Discovery


def check_references(config: Config, discovery: Discovery) -> dict[str, Any]:
    """Routes, endpoints and schedules against the loaded plugins; every problem named."""
    why = _Why(config, discovery)
    routes, problems = _check_routes(config, why)
    webhooks, endpoint_problems = _check_webhooks(config, why)
    schedules, schedule_problems = _check_schedules(config, why)
    problems += endpoint_problems + schedule_problems
    problems += [f"plugin '{refusal.name}' refused: {refusal.reason}" for refusal in discovery.refused]
    return {"routes": routes, "webhooks": webhooks, "schedules": schedules, "problems": problems}


class _Why:
    """Why a plugin named in the config cannot take a job (None: it can), from
    :meth:`Runtime.status_of`, the one place that says what state a plugin is in."""

    def __init__(self, config: Config, discovery: Discovery) -> None:
        self.config = config
        self.discovery = discovery
        self.runtime = Runtime(config=config, discovery=discovery)

    def absent(self, name: str) -> str:
        state = self.runtime.status_of(name).state
        if state is PluginState.ABSENT:
            return f"plugin '{name}' is not loaded"
        return f"plugin '{name}' is {state}"

    def lacks(self, name: str, command: str) -> str | None:
        plugin = self.discovery.plugins.get(name)
        if plugin is None:
            return self.absent(name)
        if not plugin.supports(command):
            return f"plugin '{name}' does not support '{command}'"
        return None


def _check_routes(config: Config, why: _Why) -> tuple[list[dict[str, Any]], list[str]]:
    routes, problems = [], []
    for i, route in enumerate(config.routes):
        problem = None
        if route.source == LIFECYCLE_SOURCE:
            if (lacking := why.lacks(route.target, route.command)) is not None:
                problem = f"to: {lacking}"
        elif route.source not in why.discovery.plugins:
            problem = f"from: {why.absent(route.source)}"
        elif (lacking := why.lacks(route.target, route.command)) is not None:
            problem = f"to: {lacking}"
        if problem is not None:
            problems.append(f"routes[{i}]: {problem}")
        routes.append(
            {
                "from": route.source,
                "event_type": route.event_type,
                "to": route.target,
                "command": route.command,
                "problem": problem,
            }
        )
    return routes, problems


def _check_webhooks(config: Config, why: _Why) -> tuple[dict[str, Any] | None, list[str]]:
    if config.webhooks is None:
        return None, []
    endpoints, problems = [], []
    for i, ep in enumerate(config.webhooks.endpoints):
        problem = why.lacks(ep.plugin, "handle")
        if problem is not None:
            problems.append(f"webhooks.endpoints[{i}] ({ep.path}): {problem}")
        endpoints.append(
            {"path": ep.path, "plugin": ep.plugin, "event_type": ep.event_type, "problem": problem}
        )
    return {"listen": f"{config.webhooks.host}:{config.webhooks.port}", "endpoints": endpoints}, problems


def _check_schedules(config: Config, why: _Why) -> tuple[list[dict[str, Any]], list[str]]:
    schedules, problems = [], []
    for name, settings in sorted(config.plugins.items()):
        if not settings.enabled:
            continue
        if settings.schedule is not None:
            entries = [(f"plugins.{name}.schedule", settings.schedule)]
        else:
            entries = [
                (f"plugins.{name}.schedules[{i}]", entry) for i, entry in enumerate(settings.schedules)
            ]
        for where, schedule in entries:
            problem = None
            if name not in why.discovery.plugins:
                problem = why.absent(name)
            elif schedule.emit is None:
                problem = why.lacks(name, schedule.command)
            if problem is not None:
                problems.append(f"{where}: {problem}")
            summary = schedule_summary(schedule)
            schedules.append(
                {"plugin": name, "schedule": schedule.id, "summary": summary, "problem": problem}
            )
    return schedules, problems


async def cmd_config(ctx: Context, args: argparse.Namespace) -> int:
    # ``config`` has one action, ``check`` (argparse requires it).
    config = read_config(ctx, args)
    discovery = ctx.catalog().discover(config)
    refs = check_references(config, discovery)
    cannot_start = await start_problems(ctx, discovery)
    refs["problems"] += [f"plugin '{name}' cannot start: {why}" for name, why in cannot_start.items()]
    doc = {
        "ok": not refs["problems"],
        "config": config.source,
        "state_dir": config.service.state_dir,
        "plugins_dir": config.plugins_dir,
        "plugins": plugins_doc(config, discovery, cannot_start),
        **refs,
        "warnings": list(config.advisories()),
    }
    if args.json:
        ctx.json(doc)
        return EXIT_OK if doc["ok"] else EXIT_FAILURE
    ctx.print(f"config {config.source}: valid")
    ctx.print(f"  state_dir    {config.service.state_dir}")
    ctx.print(f"  plugins_dir  {config.plugins_dir}")
    ctx.print()
    print_plugins(ctx, config, doc["plugins"])
    _print_references(ctx, refs)
    ctx.print()
    if doc["warnings"]:
        ctx.print(f"{len(doc['warnings'])} warning(s), not errors:")
        for warning in doc["warnings"]:
            ctx.print(f"  - {warning}")
        ctx.print()
    if refs["problems"]:
        ctx.print(f"{len(refs['problems'])} problem(s):")
        for problem in refs["problems"]:
            ctx.print(f"  - {problem}")
        return EXIT_FAILURE
    ctx.print("no problems found")
    return EXIT_OK


def _print_references(ctx: Context, refs: dict[str, Any]) -> None:
    if refs["routes"]:
        ctx.print()
        ctx.print(f"routes ({len(refs['routes'])}):")
        rows = [[r["from"], r["event_type"], r["to"], r["problem"] or "ok"] for r in refs["routes"]]
        ctx.print(indent(table(["FROM", "EVENT", "TO", "CHECK"], rows), "  "))
    if refs["webhooks"] is not None:
        hooks = refs["webhooks"]
        ctx.print()
        ctx.print(f"webhooks on {hooks['listen']} ({len(hooks['endpoints'])} endpoint(s)):")
        if hooks["endpoints"]:
            rows = [
                [e["path"], e["plugin"], e["event_type"], e["problem"] or "ok"] for e in hooks["endpoints"]
            ]
            ctx.print(indent(table(["PATH", "PLUGIN", "EVENT", "CHECK"], rows), "  "))
    if refs["schedules"]:
        ctx.print()
        ctx.print(f"schedules ({len(refs['schedules'])}):")
        rows = [[s["plugin"], s["schedule"], s["summary"], s["problem"] or "ok"] for s in refs["schedules"]]
        ctx.print(indent(table(["PLUGIN", "ID", "SCHEDULE", "CHECK"], rows), "  "))
