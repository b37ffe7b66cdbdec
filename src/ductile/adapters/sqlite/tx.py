"""SqliteTx: the Tx protocol as statements on one connection.

The writer runs each unit (:mod:`ductile.units`) over a ``SqliteTx`` of its
connection, inside the batch's ``BEGIN IMMEDIATE`` transaction and the unit's
own savepoint: a unit that raises is rolled back to that savepoint, alone.
``BEGIN IMMEDIATE`` serialises every writer of the file (this process's and
any other's), so the lock methods have nothing to do. The read methods also
serve the reader thread's one-statement reads.
"""

from __future__ import annotations

import json
import sqlite3
from datetime import datetime
from typing import Any

from ductile.adapters.json_column import dumps
from ductile.adapters.sqlite.errors import StoreError
from ductile.adapters.sqlite.rows import (
    activity_params,
    breaker_of,
    breaker_params,
    job_of,
    job_params,
    opt_us,
    pause_of,
    planned_of,
    planned_params,
    run_params,
    to_us,
)
from ductile.adapters.sqlite.sql import (
    SQL_ADD_COUNT,
    SQL_APPEND_ACTIVITY,
    SQL_BREAKERS_OF_PLUGIN,
    SQL_CHILD_LOOKUP,
    SQL_DEDUPE_CANDIDATES,
    SQL_DELETE_CANCEL,
    SQL_DELETE_PAUSE,
    SQL_DELETE_PLANNED,
    SQL_DELETE_PROCESS,
    SQL_GET_BREAKER,
    SQL_GET_CANCEL,
    SQL_GET_JOB,
    SQL_GET_PAUSE,
    SQL_GET_PLANNED,
    SQL_GET_STATE,
    SQL_INSERT_FACT,
    SQL_INSERT_JOB,
    SQL_INSERT_RUN,
    SQL_INSERT_TRANSITION,
    SQL_JOB_EXISTS,
    SQL_JOB_STATUS,
    SQL_OLDEST_RUNNABLE,
    SQL_OLDEST_RUNNABLE_IN_LANES,
    SQL_OPEN_BREAKERS,
    SQL_OUTSTANDING,
    SQL_OUTSTANDING_OF_SCHEDULE,
    SQL_PRUNE_ACTIVITY,
    SQL_PUT_BREAKER,
    SQL_PUT_CANCEL,
    SQL_PUT_INIT,
    SQL_PUT_PAUSE,
    SQL_PUT_PLANNED,
    SQL_PUT_PROCESS,
    SQL_PUT_STATE,
    SQL_QUEUED_OF_PLUGIN,
    SQL_REPLACE_PLANNED,
    SQL_RETENTION_CANCELS,
    SQL_RETENTION_FACTS,
    SQL_RETENTION_IDS,
    SQL_RETENTION_JOBS,
    SQL_RETENTION_PROCESSES,
    SQL_RETENTION_RUNS,
    SQL_RETENTION_TRANSITIONS,
    SQL_RETRYING,
    SQL_RUNNING_JOBS,
    SQL_SCHEDULE_JOBS,
    SQL_UPDATE_JOB,
)
from ductile.domain.activity import Activity
from ductile.domain.breaker import Breaker
from ductile.domain.facts import Fact
from ductile.domain.job import Job, JobStatus, Transition
from ductile.domain.lanes import Identity
from ductile.domain.schedule import PlannedRun
from ductile.domain.settle import RunRecord
from ductile.domain.state import serialize_state
from ductile.ports.spawner import ProcessHandle
from ductile.ports.store_values import ClaimConflictError, InitRecord, Pause, StaleJobError
from ductile.units.locks import SerialLocks


class SqliteTx(SerialLocks):
    """The Tx of one unit on the writer's connection (made per unit: it holds only the connection)."""

    __slots__ = ("_conn",)

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    # ----------------------------------------------------------------- jobs: reads
    def get_job(self, job_id: str) -> Job | None:
        row = self._conn.execute(SQL_GET_JOB, (job_id,)).fetchone()
        return None if row is None else job_of(row)

    def job_status(self, job_id: str) -> JobStatus | None:
        row = self._conn.execute(SQL_JOB_STATUS, (job_id,)).fetchone()
        return None if row is None else JobStatus(row[0])

    def job_exists(self, job_id: str) -> bool:
        return self._conn.execute(SQL_JOB_EXISTS, (job_id,)).fetchone() is not None

    def child_of(self, parent_job_id: str, source_event_id: str, plugin: str, command: str) -> str | None:
        row = self._conn.execute(
            SQL_CHILD_LOOKUP, (parent_job_id, source_event_id, plugin, command)
        ).fetchone()
        return None if row is None else str(row[0])

    def dedupe_candidates(self, plugin: str, command: str, key: str) -> list[Job]:
        return [
            job_of(r) for r in self._conn.execute(SQL_DEDUPE_CANDIDATES, (plugin, command, key)).fetchall()
        ]

    def oldest_runnable(
        self,
        now: datetime,
        *,
        skip_plugins: frozenset[str] = frozenset(),
        skip_identities: frozenset[Identity] = frozenset(),
    ) -> Job | None:
        if skip_plugins or skip_identities:
            # The running identities are the ones the correlated subquery finds: in a serialised
            # writer, the rows the unit read them from are the rows as they are.
            plugins = json.dumps(sorted(skip_plugins))
            row = self._conn.execute(SQL_OLDEST_RUNNABLE_IN_LANES, (to_us(now), plugins)).fetchone()
        else:
            row = self._conn.execute(SQL_OLDEST_RUNNABLE, (to_us(now),)).fetchone()
        return None if row is None else job_of(row)

    def in_flight(self) -> list[Job]:
        return [job_of(r) for r in self._conn.execute(SQL_RUNNING_JOBS).fetchall()]

    def running_jobs(self) -> list[Job]:
        return [job_of(r) for r in self._conn.execute(SQL_RUNNING_JOBS).fetchall()]

    def queued_of(self, plugin: str) -> list[Job]:
        return [job_of(r) for r in self._conn.execute(SQL_QUEUED_OF_PLUGIN, (plugin,)).fetchall()]

    def outstanding(self, plugin: str, command: str) -> int:
        return int(self._conn.execute(SQL_OUTSTANDING, (plugin, command)).fetchone()[0])

    def retrying_jobs(self) -> list[Job]:
        return [job_of(r) for r in self._conn.execute(SQL_RETRYING).fetchall()]

    def outstanding_of_schedule(self, plugin: str, schedule_id: str) -> int:
        return int(self._conn.execute(SQL_OUTSTANDING_OF_SCHEDULE, (plugin, schedule_id)).fetchone()[0])

    def schedule_jobs(self, plugin: str, schedule_id: str) -> list[Job]:
        return [job_of(r) for r in self._conn.execute(SQL_SCHEDULE_JOBS, (plugin, schedule_id)).fetchall()]

    def cancel_reason(self, job_id: str) -> str | None:
        row = self._conn.execute(SQL_GET_CANCEL, (job_id,)).fetchone()
        return None if row is None else str(row[0])

    # ----------------------------------------------------------------- jobs: writes
    def insert_job(self, job: Job) -> None:
        self._conn.execute(SQL_INSERT_JOB, job_params(job))

    def update_job(self, job: Job, *, expected: JobStatus, token: int) -> Job:
        params = (
            job.status.value,
            job.attempt,
            opt_us(job.started_at),
            opt_us(job.completed_at),
            opt_us(job.next_retry_at),
            job.last_error,
            job.claim_token,
            job.slot,
            job.node,
            opt_us(job.deadline_at),
            job.id,
            expected.value,
            token,
        )
        try:
            cursor = self._conn.execute(SQL_UPDATE_JOB, params)
        except sqlite3.IntegrityError as e:  # jobs_running_slot or jobs_running_identity
            raise ClaimConflictError(f"job {job.id}: {e}") from e
        if cursor.rowcount != 1:
            raise StaleJobError(f"job {job.id} is no longer {expected.value} under claim {token}")
        return job

    def add_transition(self, transition: Transition) -> None:
        t = transition
        self._conn.execute(
            SQL_INSERT_TRANSITION,
            (
                t.job_id,
                None if t.from_status is None else t.from_status.value,
                t.to_status.value,
                t.reason,
                t.actor.value,
                to_us(t.at),
            ),
        )

    def add_run(self, run: RunRecord, plugin: str) -> None:
        self._conn.execute(SQL_INSERT_RUN, run_params(run, plugin))

    def put_process(self, job_id: str, handle: ProcessHandle) -> None:
        self._conn.execute(SQL_PUT_PROCESS, (job_id, handle.pid, handle.pgid, handle.start_time))

    def delete_process(self, job_id: str) -> None:
        self._conn.execute(SQL_DELETE_PROCESS, (job_id,))

    def request_cancel(self, job_id: str, reason: str) -> None:
        self._conn.execute(SQL_PUT_CANCEL, (job_id, reason))

    def delete_cancel(self, job_id: str) -> None:
        self._conn.execute(SQL_DELETE_CANCEL, (job_id,))

    def delete_finished(self, before: datetime, *, limit: int | None = None) -> int:
        rows = self._conn.execute(SQL_RETENTION_IDS, (to_us(before), _sql_limit(limit))).fetchall()
        if not rows:
            return 0
        doomed = (json.dumps([r[0] for r in rows]),)
        for statement in (
            SQL_RETENTION_TRANSITIONS,
            SQL_RETENTION_RUNS,
            SQL_RETENTION_PROCESSES,
            SQL_RETENTION_CANCELS,
        ):
            self._conn.execute(statement, doomed)
        return self._conn.execute(SQL_RETENTION_JOBS, doomed).rowcount

    def add_count(self, name: str, n: int) -> None:
        self._conn.execute(SQL_ADD_COUNT, (name, n))

    # ----------------------------------------------------------------- plugin state and breakers
    def get_state(self, plugin: str) -> dict[str, Any]:
        row = self._conn.execute(SQL_GET_STATE, (plugin,)).fetchone()
        if row is None:
            return {}
        state: dict[str, Any] = json.loads(row[0])
        return state

    def put_state(self, plugin: str, state: dict[str, Any]) -> None:
        self._conn.execute(SQL_PUT_STATE, (plugin, serialize_state(state).decode()))

    def get_breaker(self, plugin: str, command: str) -> Breaker | None:
        row = self._conn.execute(SQL_GET_BREAKER, (plugin, command)).fetchone()
        return None if row is None else breaker_of(row)

    def breakers_of(self, plugin: str) -> list[Breaker]:
        return [breaker_of(r) for r in self._conn.execute(SQL_BREAKERS_OF_PLUGIN, (plugin,)).fetchall()]

    def open_breakers(self) -> list[Breaker]:
        return [breaker_of(r) for r in self._conn.execute(SQL_OPEN_BREAKERS).fetchall()]

    def put_breaker(self, breaker: Breaker) -> None:
        self._conn.execute(SQL_PUT_BREAKER, breaker_params(breaker))

    # ----------------------------------------------------------------- facts and pauses
    def add_fact(self, fact: Fact) -> None:
        body = dumps(fact.body, f"job {fact.job_id}: fact")
        self._conn.execute(SQL_INSERT_FACT, (fact.plugin, fact.fact_type, fact.job_id, to_us(fact.at), body))

    def delete_facts_before(self, before: datetime, *, limit: int | None = None) -> int:
        return self._conn.execute(SQL_RETENTION_FACTS, (to_us(before), _sql_limit(limit))).rowcount

    def put_pause(self, pause: Pause) -> None:
        self._conn.execute(SQL_PUT_PAUSE, (pause.plugin, pause.schedule_id or "", to_us(pause.at)))

    def delete_pause(self, plugin: str, schedule_id: str | None) -> bool:
        return self._conn.execute(SQL_DELETE_PAUSE, (plugin, schedule_id or "")).rowcount > 0

    def get_pause(self, plugin: str, schedule_id: str | None) -> Pause | None:
        row = self._conn.execute(SQL_GET_PAUSE, (plugin, schedule_id or "")).fetchone()
        return None if row is None else pause_of(row)

    # ----------------------------------------------------------------- schedule index and init records
    def get_planned(self, key: str) -> PlannedRun | None:
        row = self._conn.execute(SQL_GET_PLANNED, (key,)).fetchone()
        return None if row is None else planned_of(row)

    def put_planned(self, run: PlannedRun) -> None:
        self._conn.execute(SQL_PUT_PLANNED, planned_params(run))

    def replace_planned(self, old: PlannedRun, new: PlannedRun) -> None:
        # A compare-and-set all the same: a miss means another writer got here first.
        params = (*planned_params(new)[1:], *planned_params(old))
        if self._conn.execute(SQL_REPLACE_PLANNED, params).rowcount != 1:
            raise StoreError(f"planned run {old.key!r} changed while it was being fired")

    def delete_planned(self, key: str) -> None:
        self._conn.execute(SQL_DELETE_PLANNED, (key,))

    def put_init(self, record: InitRecord) -> None:
        params = (record.plugin, record.fingerprint, int(record.ok), record.error, to_us(record.at))
        self._conn.execute(SQL_PUT_INIT, params)

    # ----------------------------------------------------------------- the activity log
    def append_activity(self, activity: Activity) -> None:
        self._conn.execute(SQL_APPEND_ACTIVITY, activity_params(activity))

    def prune_activity(self, before: datetime, *, limit: int | None = None) -> int:
        return self._conn.execute(SQL_PRUNE_ACTIVITY, (to_us(before), _sql_limit(limit))).rowcount


def _sql_limit(limit: int | None) -> int:
    """A ``LIMIT`` parameter: SQLite reads a negative one as no limit."""
    return -1 if limit is None else limit
