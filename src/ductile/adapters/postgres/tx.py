"""PgTx: the Tx protocol as statements on one PostgreSQL connection, with real locks.

Each unit (:mod:`ductile.units`) runs over a ``PgTx`` inside one READ
COMMITTED transaction of its own. Writers run concurrently (other units of
this daemon, other daemons), so the lock hooks take real locks, in the order
:mod:`ductile.ports.tx` documents, *before* the unit reads what they protect
(each statement sees the latest commits, so a read after the lock sees the
rows as they are): row locks (``FOR UPDATE``) on planned runs and jobs, and
transaction-scoped advisory locks (released at commit or rollback, never
leaked, pooler-safe) on the identities a unit decides on — a plugin's state,
a breaker, a dedupe identity — whether their rows exist yet or not.

The claim's candidate is read with ``FOR UPDATE SKIP LOCKED`` (two claimers
never wait on each other, nor take the same row), only while this node's
lease is valid, and written with its deadline on the database's clock. Two
claimers that raced for one slot (or one identity) meet the store's unique
indexes: the loser's unit raises :class:`ClaimConflictError` and is run
again. Every write that makes work runnable (a new job, a job re-queued, a
lane freed) notifies the channel :data:`~ductile.adapters.postgres.sql.CHANNEL`
at commit (ADR 0034).
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any, Literal

import attrs
import psycopg
from psycopg import errors as pgerrors

from ductile.adapters.json_column import dumps
from ductile.adapters.postgres import sql
from ductile.adapters.postgres.errors import StoreError
from ductile.adapters.postgres.rows import (
    activity_params,
    aware,
    breaker_of,
    breaker_params,
    job_of,
    job_params,
    pause_of,
    planned_of,
    planned_params,
    run_params,
    transition_params,
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

#: Which running jobs crash recovery takes (:meth:`PgTx.running_jobs`): this instance's, or those
#: of nodes that are not live and are past their deadline.
Orphans = Literal["instance", "peers", "strays"]
#: The indexes that keep one running job per (plugin, slot) and per identity.
RUNNING_CONSTRAINTS = frozenset({"jobs_running_slot", "jobs_running_identity"})


class RetryUnitError(Exception):
    """A concurrent writer got there first (an id, a slot): run the whole unit again."""


@attrs.frozen(kw_only=True)
class TxScope:
    """Who this Tx writes for: the claimer's node and instance, recovery's scope."""

    node: str | None = None
    instance: str = ""
    orphans: Orphans = "instance"
    #: Peer recovery waits this long past a claim's deadline (clocks and a frozen host's margin).
    margin: timedelta = timedelta(seconds=2)
    #: ``strays``: the jobs this node holds (not strays), and the instant the strays were claimed before.
    keep: tuple[str, ...] = ()
    before: datetime | None = None


class PgTx:
    """The Tx of one unit on one connection, inside its transaction."""

    __slots__ = ("_activity", "_conn", "_me")

    def __init__(self, conn: psycopg.Connection[Any], me: TxScope) -> None:
        self._conn = conn
        self._me = me
        #: The unit's activity entries, written by :meth:`finish` (the last thing before commit).
        self._activity: list[Activity] = []

    def _one(self, statement: str, params: Any = ()) -> tuple[Any, ...] | None:
        row: tuple[Any, ...] | None = self._conn.execute(statement, params).fetchone()
        return row

    def _all(self, statement: str, params: Any = ()) -> list[tuple[Any, ...]]:
        rows: list[tuple[Any, ...]] = self._conn.execute(statement, params).fetchall()
        return rows

    def _notify(self, plugin: str) -> None:
        self._conn.execute(sql.NOTIFY, (sql.CHANNEL, plugin))

    # ----------------------------------------------------------------- locks
    def lock_planned(self, key: str) -> None:
        self._one(sql.LOCK_PLANNED, (key,))

    def lock_job(self, job_id: str) -> None:
        self._one(sql.LOCK_JOB, (job_id,))

    def lock_state(self, plugin: str) -> None:
        self._one(sql.LOCK_IDENTITY, (sql.NS_STATE, plugin))

    def lock_breaker(self, plugin: str, command: str) -> None:
        self._one(sql.LOCK_IDENTITY, (sql.NS_BREAKER, f"{plugin}\x1f{command}"))

    def lock_dedupe(self, plugin: str, command: str, key: str) -> None:
        self._one(sql.LOCK_IDENTITY, (sql.NS_DEDUPE, f"{plugin}\x1f{command}\x1f{key}"))

    # ----------------------------------------------------------------- jobs: reads
    def get_job(self, job_id: str) -> Job | None:
        row = self._one(sql.GET_JOB, (job_id,))
        return None if row is None else job_of(row)

    def job_status(self, job_id: str) -> JobStatus | None:
        row = self._one(sql.JOB_STATUS, (job_id,))
        return None if row is None else JobStatus(row[0])

    def job_exists(self, job_id: str) -> bool:
        return self._one(sql.JOB_EXISTS, (job_id,)) is not None

    def child_of(self, parent_job_id: str, source_event_id: str, plugin: str, command: str) -> str | None:
        row = self._one(sql.CHILD_LOOKUP, (parent_job_id, source_event_id, plugin, command))
        return None if row is None else str(row[0])

    def dedupe_candidates(self, plugin: str, command: str, key: str) -> list[Job]:
        return [job_of(r) for r in self._all(sql.DEDUPE_CANDIDATES, (plugin, command, key))]

    def oldest_runnable(
        self,
        now: datetime,
        *,
        skip_plugins: frozenset[str] = frozenset(),
        skip_identities: frozenset[Identity] = frozenset(),
    ) -> Job | None:
        # The running identities are read by the statement itself (fresher than the unit's read).
        params = {"now": now, "skip": sorted(skip_plugins), "node": self._me.node}
        row = self._one(sql.OLDEST_RUNNABLE, params)
        return None if row is None else job_of(row)

    def in_flight(self) -> list[Job]:
        return [job_of(r) for r in self._all(sql.IN_FLIGHT)]

    def retrying_jobs(self) -> list[Job]:
        return [job_of(r) for r in self._all(sql.RETRYING)]

    def running_jobs(self) -> list[Job]:
        if self._me.orphans == "peers":
            rows = self._all(sql.RUNNING_OF_DEAD_PEERS, (self._me.margin,))
        elif self._me.orphans == "strays":
            rows = self._all(sql.RUNNING_STRAYS, (self._me.node, list(self._me.keep), self._me.before))
        else:
            rows = self._all(sql.RUNNING_OF_INSTANCE, (self._me.instance,))
        return [job_of(r) for r in rows]

    def queued_of(self, plugin: str) -> list[Job]:
        return [job_of(r) for r in self._all(sql.QUEUED_OF_PLUGIN, (plugin,))]

    def outstanding(self, plugin: str, command: str) -> int:
        row = self._one(sql.OUTSTANDING, (plugin, command))
        return int(row[0]) if row is not None else 0

    # ----------------------------------------------------------------- jobs: writes
    def insert_job(self, job: Job) -> None:
        try:
            with self._conn.transaction():  # a savepoint: a clash leaves the unit's transaction usable
                self._conn.execute(sql.INSERT_JOB, job_params(job))
        except pgerrors.UniqueViolation as e:  # the same id (or child) stored meanwhile by another unit
            raise RetryUnitError(f"job {job.id}: {e.diag.constraint_name}") from e
        if job.status is JobStatus.QUEUED:
            self._notify(job.plugin)

    def update_job(self, job: Job, *, expected: JobStatus, token: int) -> Job:
        claiming = job.status is JobStatus.RUNNING and expected is not JobStatus.RUNNING
        common = (
            job.status.value,
            job.attempt,
            job.started_at,
            job.completed_at,
            job.next_retry_at,
            job.last_error,
            job.claim_token,
            job.slot,
            job.node,
        )
        where = (job.id, expected.value, token)
        try:
            if claiming:
                hold = None
                if job.deadline_at is not None and job.started_at is not None:
                    hold = job.deadline_at - job.started_at  # now() + NULL is NULL: no deadline
                row = self._one(sql.CLAIM_JOB, (*common, hold, self._me.instance, *where))
            else:
                row = self._one(sql.UPDATE_JOB, (*common, job.deadline_at, *where))
        except pgerrors.UniqueViolation as e:
            if e.diag.constraint_name in RUNNING_CONSTRAINTS:
                raise ClaimConflictError(f"job {job.id}: {e.diag.constraint_name}") from e
            raise
        if row is None:
            raise StaleJobError(f"job {job.id} is no longer {expected.value} under claim {token}")
        if job.status is JobStatus.QUEUED or expected is JobStatus.RUNNING:
            self._notify(job.plugin)  # runnable again, or a lane freed
        return job_of(row)

    def add_transition(self, transition: Transition) -> None:
        self._conn.execute(sql.INSERT_TRANSITION, transition_params(transition))

    def add_run(self, run: RunRecord, plugin: str) -> None:
        self._conn.execute(sql.INSERT_RUN, run_params(run, plugin))

    def put_process(self, job_id: str, handle: ProcessHandle) -> None:
        params = (job_id, handle.pid, handle.pgid, handle.start_time, self._me.instance)
        self._conn.execute(sql.PUT_PROCESS, params)

    def delete_process(self, job_id: str) -> None:
        self._conn.execute(sql.DELETE_PROCESS, (job_id,))

    def delete_finished(self, before: datetime, *, limit: int | None = None) -> int:
        # transitions, runs and process records go with their job (ON DELETE CASCADE)
        return self._conn.execute(sql.RETENTION_JOBS, (before, limit)).rowcount

    # ----------------------------------------------------------------- plugin state and breakers
    def get_state(self, plugin: str) -> dict[str, Any]:
        row = self._one(sql.GET_STATE, (plugin,))
        if row is None:
            return {}
        state: dict[str, Any] = json.loads(row[0])
        return state

    def put_state(self, plugin: str, state: dict[str, Any]) -> None:
        self._conn.execute(sql.PUT_STATE, (plugin, serialize_state(state).decode()))

    def get_breaker(self, plugin: str, command: str) -> Breaker | None:
        row = self._one(sql.GET_BREAKER, (plugin, command))
        return None if row is None else breaker_of(row)

    def open_breakers(self) -> list[Breaker]:
        return [breaker_of(r) for r in self._all(sql.OPEN_BREAKERS)]

    def breakers_of(self, plugin: str) -> list[Breaker]:
        return [breaker_of(r) for r in self._all(sql.BREAKERS_OF_PLUGIN, (plugin,))]

    def put_breaker(self, breaker: Breaker) -> None:
        self._conn.execute(sql.PUT_BREAKER, breaker_params(breaker))

    # ----------------------------------------------------------------- schedule index and init records
    def get_planned(self, key: str) -> PlannedRun | None:
        row = self._one(sql.GET_PLANNED, (key,))
        return None if row is None else planned_of(row)

    def put_planned(self, run: PlannedRun) -> None:
        self._conn.execute(sql.PUT_PLANNED, planned_params(run))

    def replace_planned(self, old: PlannedRun, new: PlannedRun) -> None:
        params = (*planned_params(new)[1:], *planned_params(old))
        if self._conn.execute(sql.REPLACE_PLANNED, params).rowcount != 1:
            raise StoreError(f"planned run {old.key!r} changed while it was being fired")

    def delete_planned(self, key: str) -> None:
        self._conn.execute(sql.DELETE_PLANNED, (key,))

    def put_init(self, record: InitRecord) -> None:
        params = (self._me.instance, record.plugin, record.fingerprint, record.ok, record.error, record.at)
        self._conn.execute(sql.PUT_INIT, params)

    # ----------------------------------------------------------------- protocol v2
    def outstanding_of_schedule(self, plugin: str, schedule_id: str) -> int:
        row = self._one(sql.OUTSTANDING_OF_SCHEDULE, (plugin, schedule_id))
        return int(row[0]) if row is not None else 0

    def schedule_jobs(self, plugin: str, schedule_id: str) -> list[Job]:
        return [job_of(r) for r in self._all(sql.SCHEDULE_JOBS, (plugin, schedule_id))]

    def cancel_reason(self, job_id: str) -> str | None:
        row = self._one(sql.GET_CANCEL, (job_id,))
        return None if row is None else str(row[0])

    def request_cancel(self, job_id: str, reason: str) -> None:
        self._conn.execute(sql.PUT_CANCEL, (job_id, reason))

    def delete_cancel(self, job_id: str) -> None:
        self._conn.execute(sql.DELETE_CANCEL, (job_id,))

    def add_count(self, name: str, n: int) -> None:
        self._conn.execute(sql.ADD_COUNT, (name, n))

    def add_fact(self, fact: Fact) -> None:
        body = dumps(fact.body, f"job {fact.job_id}: fact")
        self._conn.execute(sql.INSERT_FACT, (fact.plugin, fact.fact_type, fact.job_id, aware(fact.at), body))

    def delete_facts_before(self, before: datetime, *, limit: int | None = None) -> int:
        return self._conn.execute(sql.RETENTION_FACTS, (before, limit)).rowcount

    def put_pause(self, pause: Pause) -> None:
        self._conn.execute(sql.PUT_PAUSE, (pause.plugin, pause.schedule_id or "", aware(pause.at)))

    def delete_pause(self, plugin: str, schedule_id: str | None) -> bool:
        return self._conn.execute(sql.DELETE_PAUSE, (plugin, schedule_id or "")).rowcount > 0

    def get_pause(self, plugin: str, schedule_id: str | None) -> Pause | None:
        row = self._one(sql.GET_PAUSE, (plugin, schedule_id or ""))
        return None if row is None else pause_of(row)

    # ----------------------------------------------------------------- the activity log
    def append_activity(self, activity: Activity) -> None:
        self._activity.append(activity)

    def finish(self) -> None:
        """Write the unit's activity entries, just before its commit: the counter's row lock,
        which serialises appends across nodes, is then held for the commit alone."""
        if not self._activity:
            return
        row = self._one(sql.NEXT_ACTIVITY_IDS, (len(self._activity),))
        assert row is not None, "activity_last has its one row from the schema's first version"
        first = row[0] - len(self._activity) + 1
        with self._conn.cursor() as cur:
            cur.executemany(
                sql.APPEND_ACTIVITY,
                [(first + i, *activity_params(a)) for i, a in enumerate(self._activity)],
            )
        self._activity.clear()

    def prune_activity(self, before: datetime, *, limit: int | None = None) -> int:
        return self._conn.execute(sql.PRUNE_ACTIVITY, (before, limit)).rowcount
