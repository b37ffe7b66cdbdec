"""The operator's verbs: jobs, retry, cancel, version; and following the activity log.

``ductile jobs``, ``retry`` and ``cancel`` call the same service functions as
the HTTP API (:mod:`ductile.app.operations`) on the daemon's database; a
change wakes the running daemon at once through its FIFO (ADR 0024). Job ids
may be given as an unambiguous prefix of at least 8 characters.
"""

from __future__ import annotations

import argparse
from collections.abc import Awaitable, Callable
from typing import Any

from ductile.app import operations
from ductile.app.cli.context import (
    EXIT_FAILURE,
    EXIT_OK,
    Context,
    open_store_of,
    read_config,
    read_store,
    survey,
)
from ductile.app.cli.format import local_time, table
from ductile.app.cli.jsondoc import job_json
from ductile.app.intake import EnqueueRefusedError
from ductile.domain.activity import Entry
from ductile.domain.config import Config
from ductile.domain.errors import UnitError
from ductile.domain.job import Actor, Job, JobStatus, SubmittedBy
from ductile.domain.quantities import parse_duration
from ductile.ports.store import JobQuery, Store

#: How often a follower (``run --wait``, ``reload``, ``logs -f``) reads the store.
FOLLOW_EVERY = 0.05

OPERATION_ERRORS = (operations.NotFoundError, operations.AmbiguousIdError, operations.ConflictError)


def waker(config: Config) -> Callable[[], None]:
    """Wake the daemon of ``config`` (if one runs) after a change to its store."""
    from ductile.adapters.wake import wake

    state_dir = config.service.state_dir

    def notify() -> None:
        wake(state_dir)

    return notify


# =========================================================================== jobs


def _query(ctx: Context, args: argparse.Namespace) -> JobQuery:
    from ductile.app.cli.context import UsageError

    since = None
    if args.since is not None:
        try:
            since = ctx.now() - parse_duration(args.since)
        except UnitError:
            from ductile.app.cli.format import parse_time

            since = parse_time(args.since, now=ctx.now(), tz=ctx.tz)
    if args.text is not None and not args.text:
        raise UsageError("--text cannot be empty")
    return JobQuery(
        statuses=frozenset(JobStatus(s) for s in args.status) if args.status else None,
        plugin=args.plugin,
        command=args.command,
        since=since,
        text=args.text,
        limit=args.limit,
    )


async def cmd_jobs(ctx: Context, args: argparse.Namespace) -> int:
    config = read_config(ctx, args)
    query = _query(ctx, args)
    store = await read_store(ctx, config)
    jobs: tuple[Job, ...] = ()
    if store is not None:
        try:
            jobs = (await operations.list_jobs(store, query)).jobs
        finally:
            await store.close()
    if args.json:
        ctx.json({"jobs": [job_json(j) for j in jobs]})
        return EXIT_OK
    if not jobs:
        ctx.print("no jobs match")
        return EXIT_OK
    rows = [
        [j.id, j.plugin, j.command, j.status.value, f"{j.attempt}/{j.max_attempts}", j.submitted_by.value,
         local_time(j.created_at, ctx.tz), (j.last_error or "")[:60]]
        for j in jobs
    ]  # fmt: skip
    ctx.print(table(["ID", "PLUGIN", "COMMAND", "STATUS", "ATTEMPT", "BY", "CREATED", "LAST ERROR"], rows))
    return EXIT_OK


# =========================================================================== retry and cancel


async def cmd_retry(ctx: Context, args: argparse.Namespace) -> int:
    config = read_config(ctx, args)
    store = await read_store(ctx, config)
    if store is None:
        return ctx.fail(f"no job with id {args.job_id!r}")
    try:
        runtime, _, _ = await survey(ctx, config, store)
        old, result = await operations.retry_job(
            store,
            runtime,
            args.job_id,
            submitted_by=SubmittedBy.CLI,
            now=ctx.now(),
            new_id=ctx.new_id,
            notify=waker(config),
        )
    except OPERATION_ERRORS as e:
        return ctx.fail(str(e))
    except EnqueueRefusedError as e:
        return ctx.fail(f"cannot retry: {e}")
    finally:
        await store.close()
    if args.json:
        ctx.json({"job_id": result.job_id, "retry_of": old.id})
    else:
        ctx.print(result.job_id)
    return EXIT_OK


async def cmd_cancel(ctx: Context, args: argparse.Namespace) -> int:
    import getpass

    config = read_config(ctx, args)
    store = await read_store(ctx, config)
    if store is None:
        return ctx.fail(f"no job with id {args.job_id!r}")
    try:
        who = ctx.env.get("USER") or getpass.getuser()
        # The daemon's plugins are not known here: the configured ones stand for them.
        alerts = config.alerts(set(config.plugins))
        job = await operations.cancel_job(
            store, args.job_id, who=f"{who} (cli)", actor=Actor.CLI, now=ctx.now(), alerts=alerts
        )
    except OPERATION_ERRORS as e:
        return ctx.fail(str(e))
    finally:
        await store.close()
    waker(config)()
    if args.json:
        ctx.json({"job": job_json(job)})
    else:
        ctx.print(f"cancelled {job.id} ({job.plugin} {job.command})")
    return EXIT_OK


# =========================================================================== version


async def cmd_version(ctx: Context, args: argparse.Namespace) -> int:
    ctx.print(f"ductile {version()}")
    return EXIT_OK


def version() -> str:
    from importlib import metadata

    try:
        return metadata.version("ductile")
    except metadata.PackageNotFoundError:  # pragma: no cover - a source tree without metadata
        return "unknown"


# =========================================================================== following the log


async def follow(
    ctx: Context,
    store: Store,
    after: int,
    *,
    until: Callable[[Entry], bool],
    timeout: float | None,
    on_entry: Callable[[Entry], Awaitable[None]] | None = None,
) -> Entry | None:
    """Read the activity log after ``after`` every :data:`FOLLOW_EVERY` seconds until an entry
    satisfies ``until`` (returned) or ``timeout`` passes (None). ``on_entry`` sees every entry."""
    deadline = None if timeout is None else ctx.monotonic() + timeout
    while True:
        for entry in await store.activity(after, limit=500):
            after = entry.id
            if on_entry is not None:
                await on_entry(entry)
            if until(entry):
                return entry
        if deadline is not None and ctx.monotonic() >= deadline:
            return None
        await ctx.sleep(FOLLOW_EVERY)


def reload_outcome(entry: Entry | None) -> tuple[int, dict[str, Any]]:
    """The exit code and document of ``ductile reload`` from the daemon's log entry."""
    if entry is None:
        return EXIT_FAILURE, {"reloaded": None, "error": "the daemon did not report the reload in time"}
    data = dict(entry.activity.data)
    if entry.activity.kind.value == "config.rejected":
        return EXIT_FAILURE, {"reloaded": False, "error": data.get("error")}
    return EXIT_OK, data


async def store_of(ctx: Context, config: Config) -> Store | None:
    """The daemon's store, if it exists (never created)."""
    return await open_store_of(ctx, config, create=False)


# =========================================================================== logs -f

PrintRuns = Callable[..., None]


async def follow_runs(ctx: Context, store: Store, args: argparse.Namespace, print_runs: PrintRuns) -> int:
    """``ductile logs -f``: the recent runs, then each run as it ends, until interrupted.
    With ``--json``: one JSON document ``{"job", "run"}`` per line."""
    from ductile.app.cli.jsondoc import run_json
    from ductile.domain.activity import Kind

    after = await store.last_activity_id()
    recent = list(reversed(await store.recent_runs(plugin=args.plugin, limit=args.limit)))
    shown: set[tuple[str, int]] = set()

    def show(job: Any, run: Any, first: bool) -> None:
        shown.add((job.id, run.attempt))
        if args.json:
            import json

            ctx.print(json.dumps({"job": job_json(job), "run": run_json(run)}, ensure_ascii=False))
        else:
            print_runs(ctx, [(job, run)], header=first)
        ctx.out.flush()

    for i, view in enumerate(recent):
        show(view.job, view.run, i == 0)
    first = not recent

    async def on_entry(entry: Entry) -> None:
        nonlocal first
        a = entry.activity
        if a.kind not in (Kind.JOB_SUCCEEDED, Kind.JOB_FAILED) or a.job_id is None:
            return
        if args.plugin is not None and a.plugin != args.plugin:
            return
        job, runs = await store.get_job(a.job_id), await store.runs(a.job_id)
        attempt = a.data.get("attempt")
        run = next((r for r in reversed(runs) if r.attempt == attempt), runs[-1] if runs else None)
        if job is None or run is None or (job.id, run.attempt) in shown:
            return
        show(job, run, first)
        first = False

    await follow(ctx, store, after, until=lambda entry: False, timeout=None, on_entry=on_entry)
    return EXIT_OK  # pragma: no cover - follows until interrupted
