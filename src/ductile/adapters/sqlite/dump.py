"""Reading a whole SQLite store out, for ``ductile store copy`` (its other half is the target's load).

Read-only (``mode=ro``), one transaction, so the dump is one consistent
picture; refused while a job is running (stop the daemon first: a running
job's process belongs to a host, and its claim cannot be carried over).
"""

# Statements assembled from module constants (column lists) only.
# ruff: noqa: S608

from __future__ import annotations

import json
import sqlite3
from contextlib import closing
from pathlib import Path

from ductile.adapters.sqlite.errors import StoreError
from ductile.adapters.sqlite.rows import breaker_of, job_of, planned_of, run_of, transition_of
from ductile.adapters.sqlite.sql import JOB_FIELDS, RUN_COLS
from ductile.ports.store_values import StoreDump

_TRANSITION_COLS = "job_id, from_status, to_status, reason, actor, at"


def dump(path: Path) -> StoreDump:
    """Everything the SQLite database at ``path`` keeps (see :class:`StoreDump`)."""
    if not path.exists():
        raise StoreError(f"{path}: no such database")
    with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10.0)) as conn:
        conn.execute("BEGIN")
        running = conn.execute("SELECT count(*) FROM jobs WHERE status = 'running'").fetchone()[0]
        if running:
            raise StoreError(
                f"{path}: {running} job(s) are running: stop the daemon (its jobs settle) before copying"
            )
        jobs = tuple(
            job_of(r) for r in conn.execute(f"SELECT {', '.join(JOB_FIELDS)} FROM jobs ORDER BY seq")
        )
        transitions = tuple(
            transition_of(r) for r in conn.execute(f"SELECT {_TRANSITION_COLS} FROM transitions ORDER BY seq")
        )
        runs = tuple(
            (run_of(r[:-1]), str(r[-1]))
            for r in conn.execute(f"SELECT {RUN_COLS}, plugin FROM runs ORDER BY seq")
        )
        states = {str(p): json.loads(s) for p, s in conn.execute("SELECT plugin, state FROM plugin_state")}
        breakers = tuple(
            breaker_of(r)
            for r in conn.execute(
                "SELECT plugin, command, status, failures, opened_at, probe_at FROM breakers"
            )
        )
        planned = tuple(
            planned_of(r)
            for r in conn.execute(
                "SELECT key, fingerprint, nominal_at, planned_at, offset_us, snapped "
                "FROM planned ORDER BY key"
            )
        )
    return StoreDump(
        jobs=jobs, transitions=transitions, runs=runs, states=states, breakers=breakers, planned=planned
    )
