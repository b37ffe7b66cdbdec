"""The store's reads that shape their rows beyond one conversion: running jobs with
their process, recent runs with their jobs, job lists, id prefixes, facts, init
records. Each takes the reader connection; :class:`SqliteStore` runs them on its
reader thread."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

from ductile.adapters.sqlite.rows import fact_of, init_of, job_of, run_of
from ductile.adapters.sqlite.sql import (
    JOB_FIELDS,
    RUN_COLS,
    SQL_FACTS_OF_PLUGIN,
    SQL_FACTS_OF_TYPE,
    SQL_GET_INIT,
    SQL_IDS_FROM,
    SQL_RECENT_RUNS,
    SQL_RECENT_RUNS_OF_PLUGIN,
    SQL_RUNNING,
    sql_list_jobs,
)
from ductile.domain.facts import Fact
from ductile.domain.job import Job, JobStatus
from ductile.ports.spawner import ProcessHandle
from ductile.ports.store_values import InitRecord, RunningJob, RunView

_W = len(JOB_FIELDS)
_RUN_WIDTH = len(RUN_COLS.split(","))


def running(conn: sqlite3.Connection) -> list[RunningJob]:
    return [
        RunningJob(
            job=job_of(row),
            process=None
            if row[_W] is None
            else ProcessHandle(pid=row[_W], pgid=row[_W + 1], start_time=row[_W + 2]),
        )
        for row in conn.execute(SQL_RUNNING).fetchall()
    ]


def recent_runs(conn: sqlite3.Connection, plugin: str | None, limit: int) -> list[RunView]:
    params: tuple[Any, ...]
    if plugin is None:
        sql, params = SQL_RECENT_RUNS, (limit,)
    else:
        sql, params = SQL_RECENT_RUNS_OF_PLUGIN, (plugin, limit)
    return [
        RunView(job=job_of(r[_RUN_WIDTH:]), run=run_of(r[:_RUN_WIDTH])) for r in conn.execute(sql, params)
    ]


def list_jobs(
    conn: sqlite3.Connection, statuses: Sequence[JobStatus] | None, plugin: str | None, limit: int
) -> list[Job]:
    """Newest first."""
    wanted = None if statuses is None else sorted({JobStatus(s).value for s in statuses})
    if wanted == [] or limit == 0:
        return []
    sql = sql_list_jobs(statuses=None if wanted is None else len(wanted), plugin=plugin is not None)
    params: list[Any] = [*(wanted or []), *([plugin] if plugin is not None else [])]
    # A negative limit slices like a Python list (all but the last -limit), as the fake does.
    params.append(limit if limit > 0 else -1)
    jobs = [job_of(r) for r in conn.execute(sql, params).fetchall()]
    return jobs if limit > 0 else jobs[:limit]


def ids_with_prefix(conn: sqlite3.Connection, prefix: str, limit: int) -> list[str]:
    rows = conn.execute(SQL_IDS_FROM, (prefix, limit)).fetchall()
    return [str(r[0]) for r in rows if str(r[0]).startswith(prefix)]


def facts(conn: sqlite3.Connection, plugin: str, fact_type: str | None, limit: int) -> list[Fact]:
    params: tuple[Any, ...]
    if fact_type is None:
        sql, params = SQL_FACTS_OF_PLUGIN, (plugin, limit)
    else:
        sql, params = SQL_FACTS_OF_TYPE, (plugin, fact_type, limit)
    return [fact_of(r) for r in conn.execute(sql, params).fetchall()]


def get_init(conn: sqlite3.Connection, plugin: str) -> InitRecord | None:
    row = conn.execute(SQL_GET_INIT, (plugin,)).fetchone()
    return None if row is None else init_of(row)
