"""``ductile selfcheck`` (is the state directory sound?) and ``ductile backup`` (an online copy).

Both work whether the daemon runs or not: they only read the database,
through SQLite (never by copying the file), and never create it.

* ``selfcheck`` prints one line per check — the state directory's owner and
  modes (:mod:`ductile.adapters.statedir`), the instance lock (a stale lock
  file is harmless; a daemon whose lock file was deleted is worth a word),
  then the database (:func:`ductile.adapters.sqlite.selfcheck.inspect`:
  the file, ``integrity_check`` in full, the schema version, the write-ahead
  log, the free space) — and exits 1 when one of them failed.
* ``backup --to FILE`` copies the database with SQLite's online backup API
  into a new, standalone, checked file (mode 0600), refusing to overwrite.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from ductile.app.cli.context import EXIT_FAILURE, EXIT_OK, Context, db_path, read_config, running_pid

_MARK = {"ok": "ok  ", "warn": "WARN", "fail": "FAIL"}


async def cmd_selfcheck(ctx: Context, args: argparse.Namespace) -> int:
    from ductile.adapters.pidlock import LOCK_NAME, LockError, lock_report
    from ductile.adapters.sqlite.selfcheck import FAIL, OK, WARN, Finding, inspect
    from ductile.adapters.statedir import DB_FILES, StateDirError, prepare

    config = read_config(ctx, args)
    state_dir = config.service.state_dir
    path = db_path(config)
    findings: list[Finding] = []
    try:
        exists = prepare(state_dir, (LOCK_NAME, *DB_FILES), create=False)
    except StateDirError as e:
        findings.append(Finding("state dir", FAIL, str(e)))
        exists = False
    else:
        detail = "private: owned by this user, writable by no one else" if exists else "none yet"
        findings.append(Finding("state dir", OK, f"{state_dir}: {detail}"))
    pid = running_pid(ctx, config) if exists else None
    if exists:
        try:
            well, said = lock_report(state_dir)
        except LockError as e:
            well, said = False, str(e)
        findings.append(Finding("instance lock", OK if well else WARN, said))
        if not any(f.status == FAIL for f in findings):
            findings += inspect(path, daemon_running=pid is not None)
    healthy = all(f.status != FAIL for f in findings)
    if args.json:
        ctx.json(
            {
                "healthy": healthy,
                "state_dir": state_dir,
                "database": str(path),
                "daemon_pid": pid,
                "checks": [{"check": f.check, "status": f.status, "detail": f.detail} for f in findings],
            }
        )
    else:
        width = max(len(f.check) for f in findings)
        for f in findings:
            ctx.print(f"{_MARK.get(f.status, f.status)}  {f.check.ljust(width)}  {f.detail}")
        warned = sum(f.status == WARN for f in findings)
        failed = sum(f.status == FAIL for f in findings)
        ctx.print(f"\n{'healthy' if healthy else 'NOT healthy'}: {failed} failed, {warned} to look at")
    return EXIT_OK if healthy else EXIT_FAILURE


async def cmd_backup(ctx: Context, args: argparse.Namespace) -> int:
    from ductile.adapters.pidlock import LOCK_NAME
    from ductile.adapters.sqlite.selfcheck import backup
    from ductile.adapters.statedir import DB_FILES, prepare

    config = read_config(ctx, args)
    source = db_path(config)
    target = Path(os.path.abspath(args.to))  # noqa: ASYNC240 - a short command
    if not prepare(config.service.state_dir, (LOCK_NAME, *DB_FILES), create=False):
        return ctx.fail(f"no database at {source} (ductile has not run here): nothing to back up")
    done = backup(source, target)
    doc: dict[str, Any] = {
        "database": str(source),
        "backup": str(done.path),
        "bytes": done.size,
        "schema_version": done.schema_version,
        "jobs": done.jobs,
    }
    if args.json:
        ctx.json(doc)
    else:
        ctx.print(
            f"backed up {source} to {done.path}: {done.size} bytes, schema version {done.schema_version}, "
            f"{done.jobs} job(s); integrity_check ok"
        )
    return EXIT_OK
