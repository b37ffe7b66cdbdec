"""``ductile start`` (run the daemon in the foreground) and ``ductile reload`` (signal it, then
print what the daemon reports in its activity log: what changed, or why it refused)."""

from __future__ import annotations

import argparse
import signal
from typing import Any

from ductile.adapters.config import resolve_config_path
from ductile.adapters.logs import configure_logging
from ductile.app.cli.context import EXIT_OK, Context, read_config, running_pid
from ductile.app.cli.operate import follow, reload_outcome, store_of
from ductile.app.cli.parser import DEFAULT_RELOAD_WAIT
from ductile.domain.activity import Entry, Kind


async def cmd_start(ctx: Context, args: argparse.Namespace) -> int:
    from ductile.app.bootstrap import Ductile  # the daemon's modules: only for start, not reload

    config = read_config(ctx, args)  # a bad config exits 2 before anything else happens
    configure_logging(config.service.log_level.value, stream=ctx.out, log_format=args.log_format)
    _raise_open_file_limit()
    path = resolve_config_path(args.config, ctx.env)
    try:
        async with Ductile(path, environ=ctx.env) as d:
            await d.serve(install_signal_handlers=True)
    except OSError as e:  # e.g. the webhook port is taken (when the listener does not wrap it)
        return ctx.fail(f"cannot start: {e.strerror or e}")
    return EXIT_OK


def _raise_open_file_limit() -> None:
    """The daemon's soft RLIMIT_NOFILE up to the hard limit (issue 19, item 11)."""
    from ductile.adapters.fdlimit import raise_soft_limit
    from ductile.log import Log

    before, after = raise_soft_limit()
    if after != before:
        Log("daemon").info(f"open-file limit raised from {before} to {after}")


async def cmd_reload(ctx: Context, args: argparse.Namespace) -> int:
    config = read_config(ctx, args)  # an invalid config exits 2 here: the daemon is not disturbed
    pid = running_pid(ctx, config)
    if pid is None:
        return ctx.fail(f"no ductile daemon is running for state dir {config.service.state_dir}")
    store = await store_of(ctx, config)
    try:
        after = await store.last_activity_id() if store is not None else 0
        try:
            ctx.send_signal(pid, signal.SIGHUP)
        except ProcessLookupError:
            return ctx.fail(f"the daemon (pid {pid}) exited before it could be asked to reload")
        except PermissionError:
            return ctx.fail(f"not allowed to signal the daemon (pid {pid}): run as the user that runs it")
        if not args.json:
            ctx.print(f"reload requested (pid {pid})")
            ctx.out.flush()
        if store is None:  # nothing to follow: the daemon has no database yet
            if args.json:
                ctx.json({"pid": pid})
            return EXIT_OK
        timeout = args.timeout if args.timeout is not None else DEFAULT_RELOAD_WAIT
        entry = await follow(ctx, store, after, until=_is_reload, timeout=timeout)
    finally:
        if store is not None:
            await store.close()
    code, doc = reload_outcome(entry)
    if args.json:
        ctx.json({"pid": pid, **doc})
    else:
        _print_reload(ctx, doc)
    return code


def _is_reload(entry: Entry) -> bool:
    return entry.activity.kind in (Kind.CONFIG_RELOADED, Kind.CONFIG_REJECTED)


def _print_reload(ctx: Context, doc: dict[str, Any]) -> None:
    if doc.get("reloaded") is None:
        ctx.note(str(doc["error"]))
        return
    if doc["reloaded"] is False:
        ctx.note(f"the daemon refused the config and keeps the old one: {doc['error']}")
        return
    parts = [f"{what}: {', '.join(doc[what])}" for what in ("added", "removed", "changed") if doc.get(what)]
    cancelled = {name: ids for name, ids in (doc.get("cancelled") or {}).items() if ids}
    parts += [f"cancelled {len(ids)} queued job(s) of {name}" for name, ids in sorted(cancelled.items())]
    parts += [f"unhealthy: {name} ({why})" for name, why in sorted((doc.get("unhealthy") or {}).items())]
    parts += [f"{key} changed: it applies at the next restart" for key in doc.get("restart_needed") or []]
    ctx.print("reloaded" + ("; " + "; ".join(parts) if parts else ": nothing changed"))
