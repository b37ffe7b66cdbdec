"""The read-only verbs over discovery and the store: plugins, queue, logs, job; and reset.

``ductile reset`` is here too: it closes a plugin's breakers, the one write
among them, and reads the same way.
"""

from __future__ import annotations

import argparse
from collections.abc import Collection, Mapping, Sequence
from typing import Any

from ductile.app.cli.context import (
    ALL_JOBS,
    EXIT_OK,
    Context,
    open_store_of,
    read_config,
    read_store,
    start_problems,
    unknown_plugin,
)
from ductile.app.cli.format import (
    cell,
    human_duration,
    indent,
    local_time,
    pretty_json,
    schedules_summary,
    table,
)
from ductile.app.cli.jsondoc import job_json, run_json, schedule_json, stdout_object
from ductile.app.views import shown_payload, utc
from ductile.domain.breaker import Breaker
from ductile.domain.config import Config
from ductile.domain.job import Job, JobStatus, Transition
from ductile.domain.outcome import signal_name
from ductile.domain.plugin import Discovery
from ductile.domain.schedule import DEFAULT_SCHEDULE_ID
from ductile.domain.settle import RunRecord

# =========================================================================== plugins


def plugins_doc(
    config: Config,
    discovery: Discovery,
    start_problems: Mapping[str, str] | None = None,
    pauses: Collection[tuple[str, str | None]] = (),
) -> dict[str, Any]:
    """What discovery found, as ``plugins --json`` prints it (``config check`` embeds it);
    ``start_problems``: why a loaded plugin would fail to start (``cannot_start``); ``pauses``:
    the stored (plugin, schedule id or None) pauses."""
    problems = start_problems or {}
    loaded = []
    for name, plugin in sorted(discovery.plugins.items()):
        whole = (name, None) in pauses
        manifest = plugin.manifest
        schedules = [
            schedule_json(s, paused=whole or (name, s.id) in pauses)
            for s in config.plugin(name).all_schedules
        ]
        loaded.append(
            {
                "name": name,
                "version": manifest.version,
                "description": manifest.description,
                "protocol": manifest.protocol,
                "uses": plugin.base if plugin.alias is not None else None,
                "concurrency_safe": manifest.concurrency_safe,
                "commands": sorted(manifest.commands),
                "directory": plugin.directory,
                "paused": whole,
                # ``schedule``: the ``default`` one, as before several schedules (null without it).
                "schedule": next((s for s in schedules if s["id"] == DEFAULT_SCHEDULE_ID), None),
                "schedules": schedules,
                "cannot_start": problems.get(name),
            }
        )
    return {
        "loaded": loaded,
        "refused": [
            {"name": r.name, "directory": r.directory, "reason": r.reason} for r in discovery.refused
        ],
        "disabled": list(discovery.disabled),
    }


async def cmd_plugins(ctx: Context, args: argparse.Namespace) -> int:
    import asyncio

    config = read_config(ctx, args, fallback=True)
    discovery = ctx.catalog().discover(config)
    problems = asyncio.ensure_future(start_problems(ctx, discovery))  # interpreters start meanwhile
    pauses: set[tuple[str, str | None]] = set()
    store = await open_store_of(ctx, config, create=False)  # quietly: no database, no pauses
    if store is not None:
        try:
            pauses = {(p.plugin, p.schedule_id) for p in await store.pauses()}
        finally:
            await store.close()
    doc = plugins_doc(config, discovery, await problems, pauses)
    if args.json:
        ctx.json(doc)
        return EXIT_OK
    print_plugins(ctx, config, doc)
    return EXIT_OK


def print_plugins(ctx: Context, config: Config, doc: Mapping[str, Any]) -> None:
    """The text form of :func:`plugins_doc`."""
    if not (doc["loaded"] or doc["refused"] or doc["disabled"]):
        ctx.print(f"no plugins in {config.plugins_dir}")
        return
    if doc["loaded"]:
        ctx.print(f"loaded ({len(doc['loaded'])}):")
        rows = [
            [
                p["name"] + (f" (uses {p['uses']})" if p["uses"] else ""),
                p["version"],
                ",".join(p["commands"]),
                _schedules_cell(config, p),
            ]
            for p in doc["loaded"]
        ]
        ctx.print(indent(table(["NAME", "VERSION", "COMMANDS", "SCHEDULES"], rows), "  "))
    cannot = [[p["name"], p["cannot_start"]] for p in doc["loaded"] if p.get("cannot_start")]
    if cannot:
        ctx.print(f"loaded, but cannot start ({len(cannot)}): every run would fail, and is not retried")
        ctx.print(indent(table(["NAME", "REASON"], cannot), "  "))
    if doc["refused"]:
        ctx.print(f"refused ({len(doc['refused'])}):")
        ctx.print(indent(table(["NAME", "REASON"], [[r["name"], r["reason"]] for r in doc["refused"]]), "  "))
    if doc["disabled"]:
        ctx.print(f"disabled ({len(doc['disabled'])}): {', '.join(doc['disabled'])}")


def _schedules_cell(config: Config, loaded: Mapping[str, Any]) -> str | None:
    name = loaded["name"]
    paused = {s["id"] for s in loaded["schedules"] if s["paused"]}
    summary = schedules_summary(config.plugin(name).all_schedules, paused)
    if loaded["paused"]:
        return f"(paused) {summary}" if summary else "(paused)"
    return summary


# =========================================================================== queue


async def cmd_queue(ctx: Context, args: argparse.Namespace) -> int:
    config = read_config(ctx, args, fallback=True)
    store = await read_store(ctx, config)
    jobs: list[Job] = []
    if store is not None:
        try:
            # list_jobs is newest first; the dispatcher takes the oldest first: read them all.
            running = await store.list_jobs(statuses=[JobStatus.RUNNING], limit=ALL_JOBS)
            queued = await store.list_jobs(statuses=[JobStatus.QUEUED], limit=ALL_JOBS)
        finally:
            await store.close()
        jobs = (list(reversed(running)) + list(reversed(queued)))[: args.limit]
    if args.json:
        ctx.json({"jobs": [job_json(j) for j in jobs]})
        return EXIT_OK
    if not jobs:
        ctx.print("the queue is empty")
        return EXIT_OK
    rows = []
    for j in jobs:
        if j.status is JobStatus.RUNNING:
            when = f"started {local_time(j.started_at, ctx.tz)}"
            if j.node is not None:
                when += f" on {j.node}"
        elif j.next_retry_at is not None:
            when = f"retry at {local_time(j.next_retry_at, ctx.tz)}"
        else:
            when = "next"
        rows.append(
            [j.id, j.plugin, j.command, j.status.value, f"{j.attempt}/{j.max_attempts}",
             local_time(j.created_at, ctx.tz), when]
        )  # fmt: skip
    ctx.print(table(["ID", "PLUGIN", "COMMAND", "STATUS", "ATTEMPT", "CREATED", "WHEN"], rows))
    return EXIT_OK


# =========================================================================== logs


async def cmd_logs(ctx: Context, args: argparse.Namespace) -> int:
    config = read_config(ctx, args, fallback=True)
    store = await read_store(ctx, config)
    if args.follow:
        if store is None:
            return ctx.fail("nothing to follow yet: start the daemon first")
        from ductile.app.cli.operate import follow_runs

        try:
            return await follow_runs(ctx, store, args, print_runs)
        finally:
            await store.close()
    pairs: list[tuple[Job, RunRecord]] = []
    history = False
    if store is not None:
        try:
            pairs = [(v.job, v.run) for v in await store.recent_runs(plugin=args.plugin, limit=args.limit)]
            history = bool(pairs) or bool(args.plugin and await store.list_jobs(plugin=args.plugin, limit=1))
        finally:
            await store.close()
    if args.plugin is not None and not history:
        # A removed plugin's history is still shown; a name that means nothing is an error.
        unknown = unknown_plugin(config, args.plugin)
        if unknown is not None:
            return ctx.fail(unknown)
    if args.json:
        ctx.json({"runs": [{"job": job_json(j), "run": run_json(r)} for j, r in pairs]})
        return EXIT_OK
    if not pairs:
        ctx.print("no finished runs" + (f" of {args.plugin}" if args.plugin else ""))
        return EXIT_OK
    print_runs(ctx, pairs)
    return EXIT_OK


def print_runs(ctx: Context, pairs: Sequence[tuple[Job, RunRecord]], *, header: bool = True) -> None:
    """Runs as ``ductile logs`` shows them: a table row each, then the error and the log lines."""
    lines = table(
        ["FINISHED", "PLUGIN", "COMMAND", "JOB", "ATTEMPT", "RESULT", "TOOK"],
        [
            [local_time(run.finished_at, ctx.tz), job.plugin, job.command, job.id,
             f"{run.attempt}/{job.max_attempts}", _run_result(run), human_duration(run.duration)]
            for job, run in pairs
        ],
    ).splitlines()  # fmt: skip
    if header:
        ctx.print(lines[0])
    for line, (_, run) in zip(lines[1:], pairs, strict=True):
        ctx.print(line)
        if run.error:
            ctx.print(f"    error: {cell(run.error)}")
        for entry in run.logs:
            ctx.print(f"    [{entry.level}] {cell(entry.message)}")


def _run_result(run: RunRecord) -> str:
    if run.error is None:
        return "ok"
    if run.timed_out:
        return "timed out"
    return "failed"


# =========================================================================== reset


async def cmd_reset(ctx: Context, args: argparse.Namespace) -> int:
    config = read_config(ctx, args)
    unknown = unknown_plugin(config, args.plugin)
    store = await open_store_of(ctx, config, create=False)
    reset: list[Breaker] = []
    if store is not None:
        try:
            reset = await store.reset_breakers(args.plugin)
        finally:
            await store.close()
    if not reset and unknown is not None:
        return ctx.fail(unknown)
    if args.json:
        ctx.json(
            {
                "plugin": args.plugin,
                "reset": [
                    {
                        "command": b.command,
                        "status": b.status.value,
                        "failures": b.failures,
                        "opened_at": utc(b.opened_at),
                    }
                    for b in reset
                ],
            }
        )
        return EXIT_OK
    if not reset:
        ctx.print(f"no breaker of {args.plugin} was open")
    for b in reset:
        since = f" since {local_time(b.opened_at, ctx.tz)}" if b.opened_at else ""
        ctx.print(
            f"closed the breaker of {args.plugin} {b.command} "
            f"(was {b.status.value.replace('_', '-')}{since}, {b.failures} failure(s))"
        )
    return EXIT_OK


# =========================================================================== job


async def cmd_job(ctx: Context, args: argparse.Namespace) -> int:
    from ductile.app import operations

    config = read_config(ctx, args, fallback=True)
    store = await read_store(ctx, config)
    if store is None:
        return ctx.fail(f"no job with id {args.job_id}")
    try:
        job_id = await operations.resolve_job_id(store, args.job_id)
        job = await store.get_job(job_id)
        transitions = await store.transitions(job_id) if job is not None else []
        runs = await store.runs(job_id) if job is not None else []
        doc = await operations.show_job(store, job_id) if args.json and job is not None else None
    except (operations.NotFoundError, operations.AmbiguousIdError) as e:
        return ctx.fail(str(e))
    finally:
        await store.close()
    if job is None:
        return ctx.fail(f"no job with id {args.job_id}")
    if doc is not None:
        ctx.json(doc)
        return EXIT_OK
    _print_job(ctx, job, transitions, runs)
    return EXIT_OK


def _claim_text(job: Job) -> str:
    """The last claim: its token (the fence), lane slot and node (a shared store's)."""
    text = f"#{job.claim_token}"
    if job.slot is not None:
        text += f", slot {job.slot}"
    if job.node is not None:
        text += f", node {job.node}"
    return text


def _print_job(ctx: Context, job: Job, transitions: Sequence[Transition], runs: Sequence[RunRecord]) -> None:
    t = ctx.tz
    fields = [
        ("plugin", job.plugin),
        ("command", job.command),
        ("status", job.status.value),
        ("attempt", f"{job.attempt} of {job.max_attempts}"),
        ("submitted by", job.submitted_by.value),
        ("dedupe key", job.dedupe_key),
        ("created", local_time(job.created_at, t)),
        ("started", local_time(job.started_at, t)),
        ("completed", local_time(job.completed_at, t)),
        ("next retry", local_time(job.next_retry_at, t)),
        ("last error", job.last_error),
        ("parent job", job.parent_job_id),
        ("source event", job.source_event_id),
        ("schedule", job.schedule_id),
        ("route depth", job.route_depth or None),
        ("claim", _claim_text(job) if job.claim_token else None),
        ("retry of", job.retry_of),
    ]
    ctx.print(f"job {job.id}")
    ctx.print(indent(table(["FIELD", "VALUE"], fields).split("\n", 1)[1], "  "))
    ctx.print("  payload:")
    ctx.print(indent(pretty_json(shown_payload(job))))
    ctx.print()
    ctx.print("transitions:")
    ctx.print(
        indent(
            table(
                ["TIME", "FROM", "TO", "ACTOR", "REASON"],
                [
                    [local_time(x.at, t), x.from_status.value if x.from_status else "(new)",
                     x.to_status.value, x.actor.value, x.reason]
                    for x in transitions
                ],
            ),
            "  ",
        )
    )  # fmt: skip
    for run in runs:
        _print_run(ctx, run)


def _print_run(ctx: Context, run: RunRecord) -> None:
    """One run of ``ductile job``: its facts, then its logs, stderr tail and stdout head."""
    t = ctx.tz
    ctx.print()
    ctx.print(f"run of attempt {run.attempt}:")
    rows = [
        ("started", local_time(run.started_at, t)),
        ("finished", local_time(run.finished_at, t)),
        ("took", human_duration(run.duration)),
        ("exit", _exit_text(run)),
        ("error", run.error),
        ("result", run.result),
    ]
    ctx.print(indent(table(["FIELD", "VALUE"], rows).split("\n", 1)[1], "  "))
    if run.logs:
        ctx.print("  logs:")
        for line in run.logs:
            ctx.print(f"    [{line.level}] {cell(line.message)}")
    if run.stderr_tail:
        ctx.print("  stderr (tail):")
        ctx.print(indent(run.stderr_tail.decode("utf-8", "replace").rstrip("\n")))
    if run.stdout_head:
        ctx.print("  stdout (head):")
        parsed = stdout_object(run.stdout_head)
        text = pretty_json(parsed) if parsed is not None else run.stdout_head.decode("utf-8", "replace")
        ctx.print(indent(text.rstrip("\n")))


def _exit_text(run: RunRecord) -> str:
    if run.timed_out:
        return "timed out"
    if run.signal is not None:
        return f"killed by {signal_name(run.signal)}"
    if run.exit_code is not None:
        return f"exit code {run.exit_code}"
    return "did not run"
