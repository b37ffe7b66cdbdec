"""The operator's job listing (``find_jobs``) as SQL: one statement per set of filters.

Each filter is a condition on a column some index leads with (status, plugin,
command, submitted_by, created_at), every shape ends in the same order
(``created_at DESC, seq DESC``: newest first, ties by insertion), and a page
continues after a cursor with a row-value comparison on that same order, so
paging is exact. ``tests/integration/test_sqlite_query_plans.py`` checks that
every shape is answered from an index.
"""

# Assembled from constants and placeholders only; every value is a "?" parameter.
# ruff: noqa: S608

from __future__ import annotations

import sqlite3
from typing import Any, Final

import attrs

from ductile.adapters.sqlite.rows import job_of, to_us
from ductile.adapters.sqlite.sql import JOB_COLS, JOB_FIELDS
from ductile.ports.store_values import JobCursor, JobPage, JobQuery


def _marks(n: int) -> str:
    return ", ".join("?" * n)


_LIKE = "LIKE ? ESCAPE '\\'"
#: ``JobQuery.text``: the job's last error, or a run's error, stderr tail or stdout head.
_TEXT_CLAUSE = (
    f"(last_error {_LIKE} OR EXISTS (SELECT 1 FROM runs r WHERE r.job_id = jobs.id AND "
    f"(r.error {_LIKE} OR CAST(r.stderr_tail AS TEXT) {_LIKE} OR CAST(r.stdout_head AS TEXT) {_LIKE})))"
)
#: How many parameters the text clause takes (the same pattern each time).
TEXT_PARAMS: Final = 4


@attrs.frozen(kw_only=True)
class JobFilters:
    """Which filters a ``find_jobs`` statement has (the statement's shape, not its values)."""

    statuses: int | None = None
    plugin: bool = False
    command: bool = False
    submitted_by: bool = False
    parent: bool = False
    since: bool = False
    until: bool = False
    text: bool = False
    after: bool = False


def sql_find_jobs(f: JobFilters) -> str:
    """The ``find_jobs`` statement; parameters in this order: statuses, plugin, command,
    submitted_by, parent, since, until, text (x4), after (created_at, seq), limit."""
    where: list[str] = []
    if f.statuses is not None:
        where.append(f"status IN ({_marks(f.statuses)})")
    conditions = (
        ("plugin = ?", f.plugin),
        ("command = ?", f.command),
        ("submitted_by = ?", f.submitted_by),
        ("parent_job_id = ?", f.parent),
        ("created_at >= ?", f.since),
        ("created_at < ?", f.until),
    )
    where += [condition for condition, given in conditions if given]
    if f.text:
        where.append(_TEXT_CLAUSE)
    if f.after:
        where.append("(created_at, seq) < (?, ?)")
    clause = f" WHERE {' AND '.join(where)}" if where else ""
    return f"SELECT {JOB_COLS}, seq FROM jobs{clause} ORDER BY created_at DESC, seq DESC LIMIT ?"


def find_jobs_statement(q: JobQuery) -> tuple[str, list[Any]]:
    """The statement of ``q`` and its parameters (one row more than the page: is there a next?)."""
    statuses = None if q.statuses is None else sorted(s.value for s in q.statuses)
    shape = JobFilters(
        statuses=None if statuses is None else len(statuses),
        plugin=q.plugin is not None,
        command=q.command is not None,
        submitted_by=q.submitted_by is not None,
        parent=q.parent is not None,
        since=q.since is not None,
        until=q.until is not None,
        text=q.text is not None,
        after=q.after is not None,
    )
    params: list[Any] = [*(statuses or [])]
    params += [v for v in (q.plugin, q.command, q.submitted_by, q.parent) if v is not None]
    params += [to_us(t) for t in (q.since, q.until) if t is not None]
    if q.text is not None:
        pattern = "%" + q.text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        params += [pattern] * TEXT_PARAMS
    if q.after is not None:
        params += [to_us(q.after.created_at), q.after.seq]
    params.append(q.limit + 1)
    return sql_find_jobs(shape), params


def read_job_page(conn: sqlite3.Connection, query: JobQuery) -> JobPage:
    """One page of ``query``, read with one statement (one row more than the page: is there a next?)."""
    sql, params = find_jobs_statement(query)
    limit = query.limit
    rows = conn.execute(sql, params).fetchall()
    page = tuple(job_of(r) for r in rows[:limit])
    width = len(JOB_FIELDS)
    more = len(rows) > limit
    cursor = JobCursor(created_at=page[-1].created_at, seq=rows[limit - 1][width]) if more else None
    return JobPage(jobs=page, next=cursor)
