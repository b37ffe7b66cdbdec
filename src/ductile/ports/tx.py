"""Tx: the reads and writes one store unit makes, inside one transaction.

The Store port's units (enqueue, claim, settle, fire...) are written once, as
plain functions over this protocol (:mod:`ductile.units`); each store runs
them over its own Tx (ADR 0019):

* ``SqliteTx``: statements on the writer's connection, inside the batch's
  ``BEGIN IMMEDIATE`` transaction, the unit in its own savepoint;
* ``MemoryTx``: dictionaries with an undo log (the in-memory fakes).

What every Tx guarantees to a unit:

* **Atomicity.** A unit that raises changes nothing: the store rolls the Tx
  back (SQLite: ``ROLLBACK TO`` the unit's savepoint; the fakes: the undo log).
* **Visibility.** A read sees every write the unit made before it (a batch of
  jobs deduplicates against itself).
* **Isolation.** The rows a unit reads stay as it read them until it commits.
  SQLite and the fakes serialise writers, so their lock methods do nothing. A
  store whose writers run concurrently (PostgreSQL, in READ COMMITTED) takes
  the lock *before* reading what it protects, and takes them in this order
  (deadlock-free by construction):

  1. the planned row (:meth:`Tx.lock_planned`);
  2. job rows, in ascending insertion order (:meth:`Tx.lock_job`, and the rows
     :meth:`Tx.oldest_runnable`, :meth:`Tx.running_jobs` and
     :meth:`Tx.queued_of` return, which they lock as they read them;
     :meth:`Tx.in_flight` locks nothing);
  3. the plugin's state (:meth:`Tx.lock_state`);
  4. breakers (:meth:`Tx.lock_breaker`), several in (plugin, command) order;
  5. dedupe identities (:meth:`Tx.lock_dedupe`), several in sorted order.

Constraints every store keeps (a store with concurrent writers relies on them;
a serialised one never meets them): one running job per (plugin, slot), and
one per dedupe identity; a claim that breaks one raises
:class:`~ductile.ports.store_values.ClaimConflictError` and changes nothing.

Instants are aware UTC datetimes. Methods named ``get_*`` answer None (or an
empty value) when the row does not exist; nothing here ever waits on time.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Protocol

from ductile.domain.activity import Activity
from ductile.domain.breaker import Breaker
from ductile.domain.facts import Fact
from ductile.domain.job import Job, JobStatus, Transition
from ductile.domain.lanes import Identity
from ductile.domain.schedule import PlannedRun
from ductile.domain.settle import RunRecord
from ductile.ports.spawner import ProcessHandle
from ductile.ports.store_values import InitRecord, Pause


class Tx(Protocol):
    # ----------------------------------------------------------------- locks (see the order above)
    def lock_planned(self, key: str) -> None:
        """Hold the planned run of ``key`` (PostgreSQL: ``SELECT ... FOR UPDATE``)."""
        ...

    def lock_job(self, job_id: str) -> None:
        """Hold the job's row until the unit ends."""
        ...

    def lock_state(self, plugin: str) -> None:
        """Hold the plugin's state: nobody else merges into it meanwhile."""
        ...

    def lock_breaker(self, plugin: str, command: str) -> None:
        """Hold the breaker of (plugin, command), whether its row exists or not."""
        ...

    def lock_dedupe(self, plugin: str, command: str, key: str) -> None:
        """Hold the dedupe identity (plugin, command, key): no other insert of it meanwhile."""
        ...

    # ----------------------------------------------------------------- jobs: reads
    def get_job(self, job_id: str) -> Job | None: ...

    def job_status(self, job_id: str) -> JobStatus | None:
        """The job's status alone (cheaper than the whole row)."""
        ...

    def job_exists(self, job_id: str) -> bool: ...

    def child_of(self, parent_job_id: str, source_event_id: str, plugin: str, command: str) -> str | None:
        """D8: the id of the job this parent already made from this event for (plugin, command)."""
        ...

    def dedupe_candidates(self, plugin: str, command: str, key: str) -> list[Job]:
        """D1: jobs of the identity that may block a new one (at least every queued,
        running or succeeded one), in insertion order."""
        ...

    def oldest_runnable(
        self,
        now: datetime,
        *,
        skip_plugins: frozenset[str] = frozenset(),
        skip_identities: frozenset[Identity] = frozenset(),
    ) -> Job | None:
        """The queued job to claim next: no retry time or one that has passed, its plugin not
        in ``skip_plugins`` (their lanes are full), its (plugin, command, dedupe_key) not in
        ``skip_identities`` (they run); the oldest ``created_at``, ties by insertion order.
        Locked (PostgreSQL: ``SKIP LOCKED``, and only while this node's lease is valid)."""
        ...

    def in_flight(self) -> list[Job]:
        """Every running job, not locked: what a claim decides its slot around."""
        ...

    def running_jobs(self) -> list[Job]:
        """The running jobs crash recovery settles, oldest first (``created_at``, then
        insertion); locked. A store of one process: every running job (D6). A shared store:
        the orphans its Tx was opened for (this instance's earlier nodes, or dead peers
        past their deadline)."""
        ...

    def queued_of(self, plugin: str) -> list[Job]:
        """The plugin's queued jobs, oldest first; locked."""
        ...

    def retrying_jobs(self) -> list[Job]:
        """The queued jobs that have a retry time, earliest first."""
        ...

    def outstanding(self, plugin: str, command: str) -> int:
        """Jobs of (plugin, command) queued or running."""
        ...

    def outstanding_of_schedule(self, plugin: str, schedule_id: str) -> int:
        """Jobs the schedule (plugin, schedule_id) made that are queued or running (the poll guard)."""
        ...

    def schedule_jobs(self, plugin: str, schedule_id: str) -> list[Job]:
        """Those jobs themselves, oldest first; locked (``if_running: cancel``)."""
        ...

    def cancel_reason(self, job_id: str) -> str | None:
        """Why the job was asked to stop (:meth:`request_cancel`), if it was."""
        ...

    # ----------------------------------------------------------------- jobs: writes
    def insert_job(self, job: Job) -> None:
        """Store a new job (its id is not stored yet: the unit checked)."""
        ...

    def update_job(self, job: Job, *, expected: JobStatus, token: int) -> Job:
        """Compare-and-set: store ``job`` over its row if the row is still ``expected`` with the
        claim token ``token``; :class:`~ductile.ports.store_values.StaleJobError` otherwise
        (nothing written). Returns the job as stored (PostgreSQL records a claim's deadline
        on the database's clock)."""
        ...

    def add_transition(self, transition: Transition) -> None: ...

    def add_run(self, run: RunRecord, plugin: str) -> None:
        """Append a run record to its job (``plugin``: the job's, for ``recent_runs``)."""
        ...

    def put_process(self, job_id: str, handle: ProcessHandle) -> None: ...

    def request_cancel(self, job_id: str, reason: str) -> None:
        """Remember that the running job is being stopped, and why (its settle reads it)."""
        ...

    def delete_cancel(self, job_id: str) -> None:
        """Forget the job's cancel request, if there is one."""
        ...

    def delete_process(self, job_id: str) -> None:
        """Forget the job's process record, if there is one."""
        ...

    def delete_finished(self, before: datetime, *, limit: int | None = None) -> int:
        """D19: delete terminal jobs completed before ``before`` (at most ``limit`` of them;
        None: all), with everything kept about them (transitions, runs, process record,
        cancel request); how many jobs."""
        ...

    def add_count(self, name: str, n: int) -> None:
        """Add ``n`` to the lifetime counter ``name`` (created at 0)."""
        ...

    # ----------------------------------------------------------------- plugin state and breakers
    def get_state(self, plugin: str) -> dict[str, Any]:
        """The plugin's stored state ({} when none). The unit must not change it in place."""
        ...

    def put_state(self, plugin: str, state: dict[str, Any]) -> None: ...

    def get_breaker(self, plugin: str, command: str) -> Breaker | None: ...

    def breakers_of(self, plugin: str) -> list[Breaker]:
        """The plugin's stored breakers, by command."""
        ...

    def open_breakers(self) -> list[Breaker]:
        """Every open or half-open breaker, by plugin and command."""
        ...

    def put_breaker(self, breaker: Breaker) -> None: ...

    # ----------------------------------------------------------------- facts and pauses
    def add_fact(self, fact: Fact) -> None:
        """Append a fact (its ``seq`` is given by the store)."""
        ...

    def delete_facts_before(self, before: datetime, *, limit: int | None = None) -> int:
        """Retention: delete facts recorded before ``before``, except the newest of each
        (plugin, fact type), at most ``limit`` of them (None: all); how many."""
        ...

    def put_pause(self, pause: Pause) -> None:
        """Insert the pause (the unit checked there is none for its plugin and schedule)."""
        ...

    def delete_pause(self, plugin: str, schedule_id: str | None) -> bool:
        """Lift the pause of the plugin (``schedule_id`` None) or of one schedule; whether there was one."""
        ...

    def get_pause(self, plugin: str, schedule_id: str | None) -> Pause | None:
        """The pause of exactly the plugin (``schedule_id`` None) or exactly that schedule."""
        ...

    # ----------------------------------------------------------------- schedule index and init records
    def get_planned(self, key: str) -> PlannedRun | None: ...

    def put_planned(self, run: PlannedRun) -> None:
        """Insert or replace the planned run of ``run.key``."""
        ...

    def replace_planned(self, old: PlannedRun, new: PlannedRun) -> None:
        """Put ``new`` where ``old`` (of the same key) is stored; the unit checked that
        it is (a store may check again and raise its own error)."""
        ...

    def delete_planned(self, key: str) -> None: ...

    def put_init(self, record: InitRecord) -> None: ...

    # ----------------------------------------------------------------- the activity log
    def append_activity(self, activity: Activity) -> None:
        """Append one entry to the activity log; the store gives it the next id (never
        reused, even after pruning). Written in the unit that makes the change it records."""
        ...

    def prune_activity(self, before: datetime, *, limit: int | None = None) -> int:
        """Retention: delete the entries older than ``before``, at most ``limit`` of them
        (None: all), oldest ids first; how many."""
        ...
