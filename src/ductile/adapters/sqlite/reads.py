"""The SQLite store's reads: one statement each, on the reader thread (:class:`StoreReads`).

Split from :mod:`~ductile.adapters.sqlite.store` so that the module holds the
store's life cycle and its writes (the units); the reads need only ``_read``,
which runs a function of the reader's connection there.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, TypeVar

from ductile.adapters.sqlite.queries import read_job_page
from ductile.adapters.sqlite.rows import (
    breaker_of,
    entry_of,
    fact_of,
    init_of,
    job_of,
    opt_dt,
    pause_of,
    planned_of,
    run_of,
    to_us,
    transition_of,
)
from ductile.adapters.sqlite.sql import (
    JOB_FIELDS,
    RUN_COLS,
    SQL_ACTIVITY_AFTER,
    SQL_ALL_PLANNED,
    SQL_BREAKERS,
    SQL_COUNTERS,
    SQL_DUE,
    SQL_FACTS_OF_PLUGIN,
    SQL_FACTS_OF_TYPE,
    SQL_GET_INIT,
    SQL_IDS_FROM,
    SQL_LAST_ACTIVITY_ID,
    SQL_NEXT_RETRY_AT,
    SQL_OLDEST_QUEUED,
    SQL_PAUSES,
    SQL_QUEUE_DEPTH,
    SQL_RECENT_RUNS,
    SQL_RECENT_RUNS_OF_PLUGIN,
    SQL_RUNNING,
    SQL_RUNS,
    SQL_TRANSITIONS,
    sql_list_jobs,
)
from ductile.adapters.sqlite.tx import SqliteTx
from ductile.domain import breaker as br
from ductile.domain.activity import Entry
from ductile.domain.facts import Fact
from ductile.domain.job import Job, JobStatus, Transition
from ductile.domain.schedule import PlannedRun
from ductile.domain.settle import RunRecord
from ductile.ports.spawner import ProcessHandle
from ductile.ports.store_values import (
    InitRecord,
    JobPage,
    JobQuery,
    Pause,
    RunningJob,
    RunView,
)

T = TypeVar("T")
#: Columns of a job row: a process record's columns follow them in ``SQL_RUNNING``.
_W = len(JOB_FIELDS)
Unit = Callable[[sqlite3.Connection], T]


class StoreReads:
    """The read half of :class:`~ductile.adapters.sqlite.store.SqliteStore`."""

    async def _read(self, name: str, fn: Unit[T]) -> T:
        raise NotImplementedError

    # ------------------------------------------------------------- reads, on the reader
    async def get_job(self, job_id: str) -> Job | None:
        return await self._read("get_job", lambda c: SqliteTx(c).get_job(job_id))

    async def running(self) -> list[RunningJob]:
        def read(conn: sqlite3.Connection) -> list[RunningJob]:
            return [
                RunningJob(
                    job=job_of(row),
                    process=None
                    if row[_W] is None
                    else ProcessHandle(pid=row[_W], pgid=row[_W + 1], start_time=row[_W + 2]),
                )
                for row in conn.execute(SQL_RUNNING).fetchall()
            ]

        return await self._read("running", read)

    async def transitions(self, job_id: str) -> list[Transition]:
        return await self._read(
            "transitions",
            lambda c: [transition_of(r) for r in c.execute(SQL_TRANSITIONS, (job_id,)).fetchall()],
        )

    async def runs(self, job_id: str) -> list[RunRecord]:
        return await self._read(
            "runs", lambda c: [run_of(r) for r in c.execute(SQL_RUNS, (job_id,)).fetchall()]
        )

    async def recent_runs(self, *, plugin: str | None = None, limit: int = 50) -> list[RunView]:
        params: tuple[Any, ...]
        if plugin is None:
            sql, params = SQL_RECENT_RUNS, (limit,)
        else:
            sql, params = SQL_RECENT_RUNS_OF_PLUGIN, (plugin, limit)
        width = len(RUN_COLS.split(","))

        def read(c: sqlite3.Connection) -> list[RunView]:
            return [RunView(job=job_of(r[width:]), run=run_of(r[:width])) for r in c.execute(sql, params)]

        return await self._read("recent_runs", read)

    async def list_jobs(
        self,
        *,
        statuses: Sequence[JobStatus] | None = None,
        plugin: str | None = None,
        limit: int = 100,
    ) -> list[Job]:
        """Newest first."""
        wanted = None if statuses is None else sorted({JobStatus(s).value for s in statuses})
        if wanted == [] or limit == 0:
            return []
        sql = sql_list_jobs(statuses=None if wanted is None else len(wanted), plugin=plugin is not None)
        params: list[Any] = [*(wanted or []), *([plugin] if plugin is not None else [])]
        # A negative limit slices like a Python list (all but the last -limit), as the fake does.
        params.append(limit if limit > 0 else -1)

        def read(conn: sqlite3.Connection) -> list[Job]:
            jobs = [job_of(r) for r in conn.execute(sql, params).fetchall()]
            return jobs if limit > 0 else jobs[:limit]

        return await self._read("list_jobs", read)

    async def find_jobs(self, query: JobQuery) -> JobPage:
        return await self._read("find_jobs", lambda c: read_job_page(c, query))

    async def job_ids_with_prefix(self, prefix: str, *, limit: int = 2) -> list[str]:
        def read(conn: sqlite3.Connection) -> list[str]:
            rows = conn.execute(SQL_IDS_FROM, (prefix, limit)).fetchall()
            return [str(r[0]) for r in rows if str(r[0]).startswith(prefix)]

        return await self._read("job_ids_with_prefix", read)

    async def activity(self, after: int, *, limit: int = 500) -> list[Entry]:
        return await self._read(
            "activity", lambda c: [entry_of(r) for r in c.execute(SQL_ACTIVITY_AFTER, (after, limit))]
        )

    async def last_activity_id(self) -> int:
        def read(conn: sqlite3.Connection) -> int:
            row = conn.execute(SQL_LAST_ACTIVITY_ID).fetchone()
            return 0 if row is None else int(row[0])

        return await self._read("last_activity_id", read)

    async def queue_depth(self) -> int:
        return await self._read("queue_depth", lambda c: int(c.execute(SQL_QUEUE_DEPTH).fetchone()[0]))

    async def oldest_queued_at(self) -> datetime | None:
        return await self._read(
            "oldest_queued_at", lambda c: opt_dt(c.execute(SQL_OLDEST_QUEUED).fetchone()[0])
        )

    async def outstanding(self, plugin: str, command: str) -> int:
        return await self._read("outstanding", lambda c: SqliteTx(c).outstanding(plugin, command))

    async def next_retry_at(self) -> datetime | None:
        return await self._read("next_retry_at", lambda c: opt_dt(c.execute(SQL_NEXT_RETRY_AT).fetchone()[0]))

    async def get_state(self, plugin: str) -> dict[str, Any]:
        return await self._read("get_state", lambda c: SqliteTx(c).get_state(plugin))

    async def get_breaker(self, plugin: str, command: str) -> br.Breaker | None:
        return await self._read("get_breaker", lambda c: SqliteTx(c).get_breaker(plugin, command))

    async def breakers(self) -> list[br.Breaker]:
        return await self._read(
            "breakers", lambda c: [breaker_of(r) for r in c.execute(SQL_BREAKERS).fetchall()]
        )

    async def planned(self, key: str) -> PlannedRun | None:
        return await self._read("planned", lambda c: SqliteTx(c).get_planned(key))

    async def all_planned(self) -> list[PlannedRun]:
        return await self._read(
            "all_planned", lambda c: [planned_of(r) for r in c.execute(SQL_ALL_PLANNED).fetchall()]
        )

    async def due(self, start: datetime, end: datetime) -> list[PlannedRun]:
        """Planned runs with ``start <= planned_at < end``, earliest first."""
        bounds = (to_us(start), to_us(end))
        return await self._read(
            "due", lambda c: [planned_of(r) for r in c.execute(SQL_DUE, bounds).fetchall()]
        )

    async def pauses(self) -> list[Pause]:
        return await self._read("pauses", lambda c: [pause_of(r) for r in c.execute(SQL_PAUSES).fetchall()])

    async def facts(self, plugin: str, *, fact_type: str | None = None, limit: int = 100) -> list[Fact]:
        params: tuple[Any, ...]
        if fact_type is None:
            sql, params = SQL_FACTS_OF_PLUGIN, (plugin, limit)
        else:
            sql, params = SQL_FACTS_OF_TYPE, (plugin, fact_type, limit)
        return await self._read("facts", lambda c: [fact_of(r) for r in c.execute(sql, params).fetchall()])

    async def counts(self) -> dict[str, int]:
        return await self._read("counts", lambda c: {str(n): int(v) for n, v in c.execute(SQL_COUNTERS)})

    async def get_init(self, plugin: str) -> InitRecord | None:
        def read(conn: sqlite3.Connection) -> InitRecord | None:
            row = conn.execute(SQL_GET_INIT, (plugin,)).fetchone()
            return None if row is None else init_of(row)

        return await self._read("get_init", read)
