"""``ductile run``: queue one job of a plugin, and with ``--wait`` follow it to its end."""

from __future__ import annotations

import argparse
from typing import Any

from ductile.app import intake
from ductile.app.cli.context import (
    EXIT_FAILURE,
    EXIT_OK,
    Context,
    UsageError,
    open_store_of,
    read_config,
    running_pid,
    survey,
)
from ductile.app.cli.format import human_duration
from ductile.app.cli.operate import waker
from ductile.app.cli.parser import DEFAULT_WAIT_SECONDS, NOT_RUNNABLE_COMMANDS
from ductile.app.intake import EnqueueRefusedError, Manual
from ductile.app.runtime import Runtime
from ductile.domain.config import Config
from ductile.domain.errors import ProtocolError
from ductile.domain.job import JobStatus, SubmittedBy
from ductile.domain.protocol import decode_json_object
from ductile.ports.store import Store

#: How often ``run --wait`` looks at the job: one read by primary key, so ``run --wait``
#: returns within this long of the job's end (the daemon itself is woken at once, ADR 0024).
WAIT_POLL = 0.05


def _payload(text: str) -> dict[str, Any]:
    try:
        return decode_json_object(text.encode("utf-8", "surrogatepass"), what="--payload")
    except ProtocolError as e:
        raise UsageError(f"{e} (--payload must be one JSON object, e.g. '{{\"id\": 42}}')") from None
    except UnicodeError:
        raise UsageError("--payload is not valid text") from None


async def cmd_run(ctx: Context, args: argparse.Namespace) -> int:
    _check_arguments(args)
    config = read_config(ctx, args)
    store = await open_store_of(ctx, config, create=False)  # not created before the job is known runnable
    try:
        runtime, _, _ = await survey(ctx, config, store)
        reason = runtime.why_not_runnable(args.plugin, args.command)
        if reason is not None:
            return ctx.fail(f"cannot run: {reason}")
        payload = _payload(args.payload) if args.payload is not None else None
        invalid = intake.payload_refusal(runtime, args.plugin, args.command, payload)
        if invalid is not None:
            return ctx.fail(f"cannot run: {invalid}")
        plugin = runtime.plugins[args.plugin]
        if args.payload is not None and args.command != "handle" and plugin.speaks_v1:
            ctx.note(
                f"plugin '{args.plugin}' speaks protocol 1: the payload is kept with the job, "
                "but the plugin does not receive it"
            )
        pid = running_pid(ctx, config)
        if pid is None and args.wait and not config.store.shared:  # shared: another host may run it
            return ctx.fail(
                f"no ductile daemon is running for state dir {config.service.state_dir}, "
                "so --wait would wait forever; nothing was queued "
                "(start the daemon with `ductile start`, or queue without --wait)"
            )
        if store is None:
            store = await open_store_of(ctx, config, create=True)
            assert store is not None
        try:
            code, doc = await _queue(ctx, args, runtime, store, pid)
        except EnqueueRefusedError as e:  # the plugin changed between the survey and the enqueue
            return ctx.fail(f"cannot run: {e}")
    finally:
        if store is not None:
            await store.close()
    if args.json:
        ctx.json(doc)
    return code


def _check_arguments(args: argparse.Namespace) -> None:
    """Usage errors, before the config is read."""
    if args.command in NOT_RUNNABLE_COMMANDS:
        why = "it runs with `ductile status`" if args.command == "health" else "it runs on start and reload"
        raise UsageError(f"--command {args.command} cannot be queued: {why}")
    if not args.command.strip():
        raise UsageError("--command cannot be empty")
    if args.command != "handle" and args.event_type is not None:
        raise UsageError("--event-type is for --command handle only")
    if args.dedupe_key is not None and not args.dedupe_key.strip():
        raise UsageError("--dedupe-key cannot be empty")
    if args.timeout is not None and not args.wait:
        raise UsageError("--timeout only applies with --wait")
    if args.event_type is not None and not args.event_type.strip():
        raise UsageError("--event-type cannot be empty")
    if args.payload is not None:
        _payload(args.payload)  # a bad payload is a usage error, before the config is read


async def _queue(
    ctx: Context, args: argparse.Namespace, runtime: Runtime, store: Store, pid: int | None
) -> tuple[int, dict[str, Any]]:
    """Queue the job through the one intake path, say so, and with ``--wait`` follow it:
    (exit code, the JSON document). The daemon's dispatcher notices it by itself."""
    config = runtime.config
    manual = Manual(
        plugin=args.plugin,
        command=args.command,
        payload=_payload(args.payload) if args.payload is not None else None,
        event_type=args.event_type,
        dedupe_key=args.dedupe_key,
        submitted_by=SubmittedBy.CLI,
    )
    result = await intake.enqueue(
        manual, runtime=runtime, store=store, now=ctx.now(), new_id=ctx.new_id, notify=waker(config)
    )
    doc: dict[str, Any] = {
        "job_id": result.job_id,
        "created": result.created,
        "duplicate_of": None if result.created else result.job_id,
        "daemon_pid": pid,
        "outcome": None,
    }
    if not args.json:
        ctx.print(result.job_id if result.created else f"duplicate of {result.job_id}")
        ctx.out.flush()
    if pid is None and result.created:
        ctx.note("queued; no daemon is running — it will run when `ductile start` runs")
    code = EXIT_OK
    if args.wait:
        timeout = args.timeout if args.timeout is not None else DEFAULT_WAIT_SECONDS
        code, outcome = await _wait(ctx, store, config, result.job_id, timeout, quiet=args.json)
        doc["outcome"] = outcome
    return code, doc


async def _wait(
    ctx: Context, store: Store, config: Config, job_id: str, timeout: float, *, quiet: bool
) -> tuple[int, dict[str, Any] | None]:
    """Follow a job until it is terminal; (exit code, outcome document)."""
    deadline = ctx.monotonic() + timeout
    while True:
        job = await store.get_job(job_id)
        if job is None:
            return ctx.fail(f"job {job_id} disappeared while waiting (deleted by retention?)"), None
        if job.terminal:
            runs = await store.runs(job_id)
            ran = sum(r.duration for r in runs)
            outcome: dict[str, Any] = {
                "status": job.status.value,
                "attempt": job.attempt,
                "max_attempts": job.max_attempts,
                "last_error": job.last_error,
                "duration_seconds": ran,
                "elapsed_seconds": (
                    (job.completed_at - job.created_at).total_seconds() if job.completed_at else None
                ),
            }
            if not quiet:
                attempts = f"{job.attempt} attempt{'s' if job.attempt != 1 else ''}"
                line = f"{job.status.value} after {attempts} (of {job.max_attempts})"
                line += f", ran {human_duration(ran)}"
                if job.status is not JobStatus.SUCCEEDED and job.last_error:
                    line += f": {job.last_error}"
                ctx.print(line)
            return (EXIT_OK if job.status is JobStatus.SUCCEEDED else EXIT_FAILURE), outcome
        left = deadline - ctx.monotonic()
        if left <= 0:
            return (
                ctx.fail(
                    f"gave up waiting after {human_duration(timeout)}: job {job_id} is still "
                    f"{job.status.value} (attempt {job.attempt} of {job.max_attempts}); it carries on"
                ),
                None,
            )
        if running_pid(ctx, config) is None and not config.store.shared:
            return (
                ctx.fail(
                    f"the daemon stopped while waiting: job {job_id} is {job.status.value}; "
                    "it will go on when `ductile start` runs"
                ),
                None,
            )
        await ctx.sleep(min(WAIT_POLL, left))
