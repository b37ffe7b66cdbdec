"""``main()``: parse the command line, run the verb, map every error to an exit code.

A verb's module is imported only when that verb runs (:data:`VERBS`), so
``ductile --help`` loads nothing but argparse, os and sys.

The console script starts with Python's cyclic garbage collector off
(:func:`console`), and :func:`main` turns it back on unless the verb is one
of :data:`SHORT_VERBS`. A read verb spends ~90% of its time importing the
config reader, the store and asyncio: thousands of functions, classes and
dicts that all live until the process ends, so each of the ~70 collections
those imports trigger walks a growing heap and frees nothing (~20 ms of a
~260 ms ``ductile queue``, docs/benchmarks.md §23). What such a verb leaves
behind (its rows, freed by reference counting, and a few cycles of asyncio's)
is bounded by what it prints; the process then ends. Every verb that can run
long (``start``, ``run --wait``, ``logs --follow``, ``simulate``...) collects
as usual from its first step.
"""

from __future__ import annotations

import argparse
import os
import sys

from ductile.app.cli.context import (
    EXIT_FAILURE,
    EXIT_INTERRUPTED,
    EXIT_USAGE,
    Context,
    UsageError,
)
from ductile.app.cli.parser import build_parser, parse_args

#: ``typing`` alone costs ~7 ms to import; the type checkers treat this name as true.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine, Sequence
    from typing import Any, TypeAlias

    Handler: TypeAlias = Callable[[Context, argparse.Namespace], Coroutine[Any, Any, int]]

#: Each verb's module and handler, imported only when the verb runs.
VERBS: dict[str, tuple[str, str]] = {
    "start": ("daemon", "cmd_start"),
    "run": ("run", "cmd_run"),
    "status": ("status", "cmd_status"),
    "reload": ("daemon", "cmd_reload"),
    "plugins": ("inspect", "cmd_plugins"),
    "queue": ("inspect", "cmd_queue"),
    "logs": ("inspect", "cmd_logs"),
    "reset": ("inspect", "cmd_reset"),
    "job": ("inspect", "cmd_job"),
    "jobs": ("operate", "cmd_jobs"),
    "retry": ("operate", "cmd_retry"),
    "cancel": ("operate", "cmd_cancel"),
    "version": ("operate", "cmd_version"),
    "config": ("config", "cmd_config"),
    "schedule": ("schedule", "cmd_schedule"),
    "simulate": ("simulate", "cmd_simulate"),
    "pause": ("control", "cmd_pause"),
    "resume": ("control", "cmd_resume"),
    "facts": ("facts", "cmd_facts"),
    "store": ("store", "cmd_store"),
    "init": ("scaffold", "cmd_init"),
    "new": ("scaffold", "cmd_new"),
    "selfcheck": ("storage", "cmd_selfcheck"),
    "backup": ("storage", "cmd_backup"),
}


#: Verbs that read, print and end (``logs`` unless it follows): run with the collector off.
SHORT_VERBS = frozenset({"plugins", "queue", "job", "jobs", "logs", "status", "version"})


def collects_garbage(args: argparse.Namespace) -> bool:
    """Whether the verb runs with the cyclic garbage collector on (see the module's docs)."""
    return args.verb not in SHORT_VERBS or bool(getattr(args, "follow", False))


def _collect_if_long(args: argparse.Namespace) -> None:
    """Turn the collector (off in :func:`console`) on for a verb that can run long."""
    if collects_garbage(args):
        import gc

        gc.enable()


def handler_of(verb: str) -> Handler:
    """The verb's handler, importing its module (and what that module needs) now."""
    import importlib

    module_name, function = VERBS[verb]
    module = importlib.import_module(f"{__package__}.{module_name}")
    handler: Handler = getattr(module, function)
    return handler


def _config_message(ctx: Context, args: argparse.Namespace, error: Exception) -> str:
    message = str(error)
    try:
        from ductile.adapters.config import resolve_config_path

        path = str(resolve_config_path(getattr(args, "config", None), ctx.env))
    except Exception:  # pragma: no cover - resolving a path does not fail in practice
        return message
    if path in message:
        if not os.path.exists(path):
            message += " (give one with --config PATH or $DUCTILE_CONFIG)"
        return message
    return f"{path}: {message}"


def console() -> None:
    """The ``ductile`` script: :func:`main`, then exit at once.

    Everything a verb opened is closed when it returns; what is left is the
    interpreter's own teardown, ~100 ms on a loaded 2-core machine (module
    finalization, garbage collection), which would make ``ductile run --wait``
    return long after the job's end. So the streams are flushed, logging is shut
    down, and the process ends with ``os._exit`` (ADR 0024).
    """
    import gc

    gc.disable()  # main() enables it again unless the verb is short
    code = main()
    for stream in (sys.stdout, sys.stderr):
        try:  # noqa: SIM105 - contextlib.suppress would import contextlib for this alone
            stream.flush()
        except (OSError, ValueError):  # a closed or broken pipe: nothing more to say
            pass
    logging = sys.modules.get("logging")  # a verb that never logged did not import it
    if logging is not None:
        logging.shutdown()
    os._exit(code)


def main(argv: Sequence[str] | None = None, *, context: Context | None = None) -> int:
    """Run one ``ductile`` command; returns the exit code (the console script exits with it)."""
    ctx = context or Context()
    parser = build_parser()
    try:
        args = parse_args(parser, sys.argv[1:] if argv is None else argv)
    except SystemExit as e:  # --help (0) or a usage error (2, message already printed)
        return e.code if isinstance(e.code, int) else EXIT_USAGE
    if args.version:
        args.verb = "version"
    if args.verb is None:
        parser.print_usage(ctx.err)
        ctx.note("a verb is required (see `ductile --help`)")
        return EXIT_USAGE
    _collect_if_long(args)
    debug = bool(args.debug) or ctx.env.get("DUCTILE_DEBUG", "") not in ("", "0")
    try:
        import asyncio

        from ductile.domain.errors import ConfigError, DuctileError

        handler = handler_of(args.verb)
        try:
            return asyncio.run(handler(ctx, args))
        except UsageError as e:
            ctx.note(str(e))
            return EXIT_USAGE
        except ConfigError as e:
            ctx.note(_config_message(ctx, args, e))
            return EXIT_USAGE
        except DuctileError as e:
            ctx.note(str(e))
            return EXIT_FAILURE
    except KeyboardInterrupt:
        ctx.note("interrupted")
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader went away (`ductile queue | head`): say nothing more, and keep
        # the interpreter from complaining while flushing stdout at exit.
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, sys.stdout.fileno())
        except (OSError, ValueError):  # a stdout without a descriptor (tests)
            pass
        finally:
            os.close(devnull)
        return EXIT_FAILURE
    except Exception as e:
        ctx.note(f"internal error: {type(e).__name__}: {e}")
        if debug:
            import traceback

            ctx.err.write("".join(traceback.format_exception(e)))
        else:
            ctx.err.write("(run with --debug or DUCTILE_DEBUG=1 for the traceback)\n")
        return EXIT_FAILURE
