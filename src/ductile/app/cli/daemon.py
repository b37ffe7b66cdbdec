"""``ductile start`` (run the daemon in the foreground) and ``ductile reload`` (signal it)."""

from __future__ import annotations

import argparse
import signal

from ductile.adapters.config import resolve_config_path
from ductile.adapters.logs import configure_logging
from ductile.app.cli.context import EXIT_OK, Context, read_config, running_pid


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
    try:
        ctx.send_signal(pid, signal.SIGHUP)
    except ProcessLookupError:
        return ctx.fail(f"the daemon (pid {pid}) exited before it could be asked to reload")
    except PermissionError:
        return ctx.fail(f"not allowed to signal the daemon (pid {pid}): run as the user that runs it")
    if args.json:
        ctx.json({"pid": pid})
    else:
        ctx.print(f"reload requested (pid {pid})")
    return EXIT_OK
