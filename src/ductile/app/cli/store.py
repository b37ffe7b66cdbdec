"""``ductile store copy``: move a SQLite store's contents into an empty PostgreSQL database.

With every daemon stopped: the source's instance lock must be free (no daemon
runs on it) and no job may be running in it. Jobs keep their ids, history,
order and claim tokens; plugin states, breakers and the schedule index come
along; ``init`` records do not (each host runs ``init`` at its first start
on the new store). The target must be empty (it is migrated first).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from ductile.app.cli.context import EXIT_OK, Context, UsageError

SQLITE_PREFIX = "sqlite:"


def _sqlite_path(text: str) -> Path:
    if text.startswith(("postgresql://", "postgres://")):
        raise UsageError(
            "--from must be a SQLite database (sqlite:PATH): the copy goes from SQLite to PostgreSQL"
        )
    path = Path(text.removeprefix(SQLITE_PREFIX)).expanduser()
    if path.is_dir():
        path = path / "ductile.db"  # a state directory
    return path.absolute()


def _postgres_url(text: str) -> str:
    if not text.startswith(("postgresql://", "postgres://")):
        raise UsageError("--to must be a postgresql:// URL")
    return text


async def cmd_store(ctx: Context, args: argparse.Namespace) -> int:
    source = _sqlite_path(args.source)
    target = _postgres_url(args.target)
    pid = ctx.daemon_pid(os.path.dirname(source))
    if pid is not None:
        return ctx.fail(f"a daemon (pid {pid}) is running on {source.parent}: stop it before copying")
    from ductile.adapters.postgres import require_driver

    require_driver()
    from ductile.adapters.postgres.load import load
    from ductile.adapters.postgres.schema import redact
    from ductile.adapters.sqlite.dump import dump

    contents = dump(source)
    loaded = load(target, contents)
    ctx.print(
        f"copied {loaded.jobs} job(s) ({loaded.transitions} transitions, {loaded.runs} runs), "
        f"{loaded.states} plugin state(s), {loaded.breakers} breaker(s), {loaded.planned} planned run(s) "
        f"from {source} to {redact(target)}"
    )
    ctx.note("init runs again on each host at its first start on the new store; set store.url in the config")
    return EXIT_OK
