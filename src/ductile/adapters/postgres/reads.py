"""The PostgreSQL store's reads: one statement each, outside any unit (see :mod:`.store`).

A mixin of :class:`~ductile.adapters.postgres.store.PostgresStore`, which
runs each read on a connection of its pool (``_read``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import attrs
import psycopg

from ductile.adapters.postgres import sql
from ductile.adapters.postgres.queries import read_job_page
from ductile.adapters.postgres.rows import (
    JOB_FIELDS,
    RUN_COLS,
    breaker_of,
    entry_of,
    fact_of,
    init_of,
    job_of,
    pause_of,
    planned_of,
    run_of,
    transition_of,
)
from ductile.domain import breaker as br
from ductile.domain.activity import Entry
from ductile.domain.facts import Fact
from ductile.domain.job import Job, JobStatus, Transition
from ductile.domain.schedule import PlannedRun
from ductile.domain.settle import RunRecord
from ductile.ports.spawner import ProcessHandle
from ductile.ports.store_values import InitRecord, JobPage, JobQuery, Pause, RunningJob, RunView

T = TypeVar("T")
#: Columns of a job row: a process record's columns follow them in ``sql.RUNNING``.
_W = len(JOB_FIELDS)
Conn = psycopg.Connection[Any]


@attrs.frozen(kw_only=True)
class NodeView:
    """One node as ``ductile status`` shows it."""

    id: str
    instance: str
    started_at: datetime
    #: How long its lease still runs (negative: it ran out: the node is dead to the others).
    lease_left: timedelta
    leading: bool


class PgReads:
    """The reads of the Store port on PostgreSQL."""

    instance: str

    async def _read(self, name: str, fn: Callable[[Conn], T]) -> T:
        raise NotImplementedError

    async def get_job(self, job_id: str) -> Job | None:
        row = await self._read("get_job", lambda c: c.execute(sql.GET_JOB, (job_id,)).fetchone())
        return None if row is None else job_of(row)

    async def running(self) -> list[RunningJob]:
        def read(conn: Conn) -> list[RunningJob]:
            return [
                RunningJob(
                    job=job_of(row),
                    process=None
                    if row[_W] is None
                    else ProcessHandle(pid=row[_W], pgid=row[_W + 1], start_time=row[_W + 2]),
                )
                for row in conn.execute(sql.RUNNING, (self.instance,)).fetchall()
            ]

        return await self._read("running", read)

    async def transitions(self, job_id: str) -> list[Transition]:
        rows = await self._read("transitions", lambda c: c.execute(sql.TRANSITIONS, (job_id,)).fetchall())
        return [transition_of(r) for r in rows]

    async def runs(self, job_id: str) -> list[RunRecord]:
        rows = await self._read("runs", lambda c: c.execute(sql.RUNS, (job_id,)).fetchall())
        return [run_of(r) for r in rows]

    async def recent_runs(self, *, plugin: str | None = None, limit: int = 50) -> list[RunView]:
        if limit <= 0:
            return []
        width = len(RUN_COLS.split(","))
        if plugin is None:
            statement, params = sql.RECENT_RUNS, (limit,)
        else:
            statement, params = sql.RECENT_RUNS_OF_PLUGIN, (plugin, limit)  # type: ignore[assignment]
        rows = await self._read("recent_runs", lambda c: c.execute(statement, params).fetchall())
        return [RunView(job=job_of(r[width:]), run=run_of(r[:width])) for r in rows]

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
        params = {"statuses": wanted, "plugin": plugin, "limit": limit if limit > 0 else None}
        rows = await self._read("list_jobs", lambda c: c.execute(sql.LIST_JOBS, params).fetchall())
        jobs = [job_of(r) for r in rows]
        return jobs if limit > 0 else jobs[:limit]

    async def queue_depth(self) -> int:
        row = await self._read("queue_depth", lambda c: c.execute(sql.QUEUE_DEPTH).fetchone())
        return int(row[0]) if row is not None else 0

    async def outstanding(self, plugin: str, command: str) -> int:
        row = await self._read(
            "outstanding", lambda c: c.execute(sql.OUTSTANDING, (plugin, command)).fetchone()
        )
        return int(row[0]) if row is not None else 0

    async def next_retry_at(self) -> datetime | None:
        row = await self._read("next_retry_at", lambda c: c.execute(sql.NEXT_RETRY_AT).fetchone())
        return None if row is None or row[0] is None else _utc(row[0])

    async def get_breaker(self, plugin: str, command: str) -> br.Breaker | None:
        row = await self._read(
            "get_breaker", lambda c: c.execute(sql.GET_BREAKER, (plugin, command)).fetchone()
        )
        return None if row is None else breaker_of(row)

    async def breakers(self) -> list[br.Breaker]:
        rows = await self._read("breakers", lambda c: c.execute(sql.BREAKERS).fetchall())
        return [breaker_of(r) for r in rows]

    async def planned(self, key: str) -> PlannedRun | None:
        row = await self._read("planned", lambda c: c.execute(sql.GET_PLANNED, (key,)).fetchone())
        return None if row is None else planned_of(row)

    async def all_planned(self) -> list[PlannedRun]:
        rows = await self._read("all_planned", lambda c: c.execute(sql.ALL_PLANNED).fetchall())
        return [planned_of(r) for r in rows]

    async def due(self, start: datetime, end: datetime) -> list[PlannedRun]:
        """Planned runs with ``start <= planned_at < end``, earliest first."""
        rows = await self._read("due", lambda c: c.execute(sql.DUE, (start, end)).fetchall())
        return [planned_of(r) for r in rows]

    async def get_init(self, plugin: str) -> InitRecord | None:
        row = await self._read(
            "get_init", lambda c: c.execute(sql.GET_INIT, (self.instance, plugin)).fetchone()
        )
        return None if row is None else init_of(row)

    async def find_jobs(self, query: JobQuery) -> JobPage:
        return await self._read("find_jobs", lambda c: read_job_page(c, query))

    async def job_ids_with_prefix(self, prefix: str, *, limit: int = 2) -> list[str]:
        rows = await self._read(
            "job_ids_with_prefix", lambda c: c.execute(sql.IDS_FROM, (prefix, limit)).fetchall()
        )
        return [str(r[0]) for r in rows if str(r[0]).startswith(prefix)]

    async def oldest_queued_at(self) -> datetime | None:
        row = await self._read("oldest_queued_at", lambda c: c.execute(sql.OLDEST_QUEUED).fetchone())
        return None if row is None or row[0] is None else _utc(row[0])

    async def activity(self, after: int, *, limit: int = 500) -> list[Entry]:
        rows = await self._read(
            "activity", lambda c: c.execute(sql.ACTIVITY_AFTER, (after, limit)).fetchall()
        )
        return [entry_of(r) for r in rows]

    async def last_activity_id(self) -> int:
        row = await self._read("last_activity_id", lambda c: c.execute(sql.LAST_ACTIVITY_ID).fetchone())
        return 0 if row is None else int(row[0])

    async def pauses(self) -> list[Pause]:
        rows = await self._read("pauses", lambda c: c.execute(sql.PAUSES).fetchall())
        return [pause_of(r) for r in rows]

    async def facts(self, plugin: str, *, fact_type: str | None = None, limit: int = 100) -> list[Fact]:
        if fact_type is None:
            statement, params = sql.FACTS_OF_PLUGIN, (plugin, limit)
        else:
            statement, params = sql.FACTS_OF_TYPE, (plugin, fact_type, limit)  # type: ignore[assignment]
        rows = await self._read("facts", lambda c: c.execute(statement, params).fetchall())
        return [fact_of(r) for r in rows]

    async def counts(self) -> dict[str, int]:
        rows = await self._read("counts", lambda c: c.execute(sql.COUNTERS).fetchall())
        return {str(name): int(value) for name, value in rows}

    async def nodes(self) -> list[NodeView]:
        """Every registered node, the leader marked (``ductile status``)."""

        def read(conn: Conn) -> list[NodeView]:
            rows = conn.execute(
                "SELECT n.id, n.instance, n.started_at, n.lease_until - now(), "
                "EXISTS (SELECT 1 FROM leadership l WHERE l.node_id = n.id AND l.expires_at >= now()) "
                "FROM nodes n ORDER BY n.started_at, n.id"
            ).fetchall()
            return [
                NodeView(id=r[0], instance=r[1], started_at=_utc(r[2]), lease_left=r[3], leading=r[4])
                for r in rows
            ]

        return await self._read("nodes", read)


def _utc(at: datetime) -> datetime:
    return at.astimezone(UTC)
