"""The operator's job listing (``find_jobs``) on PostgreSQL: one statement per set of filters.

The same shapes as SQLite's (:mod:`ductile.adapters.sqlite.queries`): each
filter a condition on a column an index leads with, newest first
(``created_at DESC, seq DESC``), a page continuing after its cursor with a
row-value comparison on that order, so paging is exact while jobs arrive.

``JobQuery.text`` follows :func:`~ductile.ports.store_values.text_matches`
exactly: ASCII letters folded with ``translate`` (``lower`` would fold other
letters too), found with ``strpos`` (no pattern characters to escape). Run
output is ``bytea``: it is searched in its ``escape`` encoding (bytes from
0x80 and NUL as ``\\ooo``, a backslash doubled), the needle encoded alike, so
any needle, ASCII or not, matches the bytes it encodes.
"""

# Assembled from constants only; every value is a "%s" parameter.
# ruff: noqa: S608

from __future__ import annotations

from typing import Any, Final

from ductile.adapters.postgres.rows import JOB_COLS, JOB_FIELDS, job_of
from ductile.ports.store_values import JobCursor, JobPage, JobQuery

_UPPER = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
_FOLD = str.maketrans(_UPPER, _UPPER.lower())


def _folded(column: str) -> str:
    return f"translate({column}, '{_UPPER}', '{_UPPER.lower()}')"


_STDERR = "encode(r.stderr_tail, 'escape')"
_STDOUT = "encode(r.stdout_head, 'escape')"
#: ``JobQuery.text``: the job's last error, or a run's error, stderr tail or stdout head.
_TEXT_CLAUSE: Final = (
    f"(strpos({_folded('last_error')}, %s) > 0 OR EXISTS (SELECT 1 FROM runs r WHERE r.job_id = jobs.id "
    f"AND (strpos({_folded('r.error')}, %s) > 0 "
    f"OR strpos({_folded(_STDERR)}, %s) > 0 "
    f"OR strpos({_folded(_STDOUT)}, %s) > 0)))"
)


def escaped(text: str) -> str:
    """``text``'s UTF-8 bytes as PostgreSQL's ``encode(..., 'escape')`` writes them."""
    out: list[str] = []
    for byte in text.encode("utf-8"):
        if byte == 0 or byte >= 0x80:
            out.append(f"\\{byte:03o}")
        elif byte == 0x5C:
            out.append("\\\\")
        else:
            out.append(chr(byte))
    return "".join(out)


def find_jobs_statement(q: JobQuery) -> tuple[str, list[Any]]:
    """The statement of ``q`` and its parameters (one row more than the page: is there a next?)."""
    where: list[str] = []
    params: list[Any] = []
    if q.statuses is not None:
        where.append("status = ANY(%s::text[])")
        params.append(sorted(s.value for s in q.statuses))
    for column, value in (
        ("plugin", q.plugin),
        ("command", q.command),
        ("submitted_by", q.submitted_by),
        ("parent_job_id", q.parent),
    ):
        if value is not None:
            where.append(f"{column} = %s")
            params.append(value)
    if q.since is not None:
        where.append("created_at >= %s")
        params.append(q.since)
    if q.until is not None:
        where.append("created_at < %s")
        params.append(q.until)
    if q.text is not None:
        folded = q.text.translate(_FOLD)
        where.append(_TEXT_CLAUSE)
        params += [folded, folded, escaped(folded), escaped(folded)]
    if q.after is not None:
        where.append("(created_at, seq) < (%s, %s)")
        params += [q.after.created_at, q.after.seq]
    clause = f" WHERE {' AND '.join(where)}" if where else ""
    params.append(q.limit + 1)
    return f"SELECT {JOB_COLS}, seq FROM jobs{clause} ORDER BY created_at DESC, seq DESC LIMIT %s", params


def read_job_page(conn: Any, query: JobQuery) -> JobPage:
    """One page of ``query``, read with one statement."""
    statement, params = find_jobs_statement(query)
    rows = conn.execute(statement, params).fetchall()
    limit = query.limit
    page = tuple(job_of(r) for r in rows[:limit])
    more = len(rows) > limit
    cursor = JobCursor(created_at=page[-1].created_at, seq=rows[limit - 1][len(JOB_FIELDS)]) if more else None
    return JobPage(jobs=page, next=cursor)
