"""MemoryTx: the Tx protocol over dictionaries, with an undo log.

The in-memory fakes run the shared units (:mod:`ductile.units`) over one
``MemoryTx``. Writes go straight to the tables, so a unit's later reads see
them (a batch of jobs deduplicates against itself); each write also records
how to undo it. ``with tx.atomic():`` around a unit commits by forgetting the
undo log, or, when the unit raises, undoes its writes newest first: a unit
that raises changes nothing, like a rolled-back transaction (ADR 0019).

The hot queries (the oldest runnable job, the next retry time, outstanding
and queued counts, expired finished jobs, due plans) are answered by an
:class:`~ductile.fakes.scan_index.Index` that every write of a job or a
planned run keeps up to date: :class:`~ductile.fakes.scan_index.ScanIndex`
scans the tables (the plain fake), the indexed fake's heap index answers from
heaps and sorted lists (:mod:`ductile.fakes.indexed_store`).
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Callable
from datetime import datetime
from typing import Any

import attrs

from ductile.domain.breaker import Breaker
from ductile.domain.facts import Fact
from ductile.domain.job import Job, JobStatus, Transition
from ductile.domain.lanes import Identity, identity
from ductile.domain.schedule import PlannedRun
from ductile.domain.settle import RunRecord
from ductile.fakes.activity_log import ActivityLog
from ductile.fakes.scan_index import Index, ScanIndex, skipped
from ductile.ports.spawner import ProcessHandle
from ductile.ports.store_values import ClaimConflictError, InitRecord, Pause, StaleJobError
from ductile.units.locks import SerialLocks

__all__ = ["Index", "IndexFactory", "MemoryTx", "ScanIndex", "copy_state", "skipped"]

#: Types deepcopy returns as they are: a state holding only these at the top copies shallowly.
_ATOMIC = frozenset({str, int, float, bool, type(None)})


def copy_state(state: dict[str, Any]) -> dict[str, Any]:
    """``copy.deepcopy(state)``, without its machinery for the usual flat state."""
    if type(state) is not dict or any(type(value) not in _ATOMIC for value in state.values()):
        return copy.deepcopy(state)
    return dict(state)


IndexFactory = Callable[["MemoryTx"], Index]
#: One step of the undo log: a function and its arguments (what it returns is ignored).
_Undo = tuple[Callable[..., object], tuple[Any, ...]]


class MemoryTx(ActivityLog, SerialLocks):
    """The tables of the in-memory fakes and the Tx over them (see the module's docs)."""

    def __init__(self, index: IndexFactory = ScanIndex) -> None:
        self.jobs: dict[str, Job] = {}
        #: Insertion order of each job: the FIFO tie-breaker after ``created_at``.
        self.seq: dict[str, int] = {}
        self.transitions: dict[str, list[Transition]] = {}
        #: Each job's runs, with their recording order (the tie-breaker of ``recent_runs``).
        self.runs: dict[str, list[tuple[int, RunRecord]]] = {}
        self.processes: dict[str, ProcessHandle] = {}
        self.states: dict[str, dict[str, Any]] = {}
        self.breakers: dict[tuple[str, str], Breaker] = {}
        self.planned: dict[str, PlannedRun] = {}
        self.inits: dict[str, InitRecord] = {}
        self.cancels: dict[str, str] = {}
        #: Facts in the order recorded (their ``seq`` is their position + 1 among all ever added).
        self.facts: list[Fact] = []
        #: Pauses by (plugin, schedule id or None).
        self.pauses: dict[tuple[str, str | None], Pause] = {}
        self.counters: dict[str, int] = {}
        self._by_identity: dict[tuple[str, str, str], list[str]] = {}
        self._children: dict[tuple[str, str, str, str], str] = {}
        #: Running jobs by id, and the constraints on them: (plugin, slot) and identity -> job id.
        self._running: dict[str, Job] = {}
        self._slots: dict[tuple[str, int], str] = {}
        self._running_identities: dict[Identity, str] = {}
        self._job_numbers = itertools.count()
        self._run_numbers = itertools.count()
        self._fact_numbers = itertools.count(1)
        ActivityLog.__init__(self)
        self._undo: list[_Undo] = []
        self.index: Index = index(self)

    # ----------------------------------------------------------------- atomicity
    def atomic(self) -> MemoryTx:
        """``with tx.atomic():`` around one unit: its writes stay if it returns, are undone if it raises."""
        return self

    def __enter__(self) -> MemoryTx:
        self._undo = []
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: object) -> None:
        undo, self._undo = self._undo, []
        if kind is not None:
            for fn, args in reversed(undo):
                fn(*args)

    def _restore(self, table: dict[Any, Any], key: Any, old: Any) -> None:
        if old is None:
            table.pop(key, None)
        else:
            table[key] = old

    def _put(self, table: dict[Any, Any], key: Any, new: Any) -> None:
        """``table[key] = new`` (None: delete), undoably."""
        old = table.get(key)
        self._restore(table, key, new)
        self._undo.append((self._restore, (table, key, old)))

    # ----------------------------------------------------------------- jobs: reads
    def get_job(self, job_id: str) -> Job | None:
        return self.jobs.get(job_id)

    def job_status(self, job_id: str) -> JobStatus | None:
        job = self.jobs.get(job_id)
        return None if job is None else job.status

    def job_exists(self, job_id: str) -> bool:
        return job_id in self.jobs

    def child_of(self, parent_job_id: str, source_event_id: str, plugin: str, command: str) -> str | None:
        return self._children.get((parent_job_id, source_event_id, plugin, command))

    def dedupe_candidates(self, plugin: str, command: str, key: str) -> list[Job]:
        return [self.jobs[i] for i in self._by_identity.get((plugin, command, key), ())]

    def oldest_runnable(
        self,
        now: datetime,
        *,
        skip_plugins: frozenset[str] = frozenset(),
        skip_identities: frozenset[Identity] = frozenset(),
    ) -> Job | None:
        return self.index.oldest_runnable(now, skip_plugins, skip_identities)

    def in_flight(self) -> list[Job]:
        return list(self._running.values())

    def running_jobs(self) -> list[Job]:
        seq = self.seq
        return sorted(self._running.values(), key=lambda j: (j.created_at, seq[j.id]))

    def queued_of(self, plugin: str) -> list[Job]:
        return self._ordered(lambda j: j.plugin == plugin and j.status is JobStatus.QUEUED)

    def retrying_jobs(self) -> list[Job]:
        waiting = self._ordered(lambda j: j.status is JobStatus.QUEUED and j.next_retry_at is not None)
        return sorted(waiting, key=lambda j: j.next_retry_at or j.created_at)

    def _ordered(self, wanted: Callable[[Job], bool]) -> list[Job]:
        seq = self.seq
        return sorted((j for j in self.jobs.values() if wanted(j)), key=lambda j: (j.created_at, seq[j.id]))

    def outstanding(self, plugin: str, command: str) -> int:
        return self.index.outstanding(plugin, command)

    def outstanding_of_schedule(self, plugin: str, schedule_id: str) -> int:
        return self.index.outstanding_of_schedule(plugin, schedule_id)

    def schedule_jobs(self, plugin: str, schedule_id: str) -> list[Job]:
        outstanding = (JobStatus.QUEUED, JobStatus.RUNNING)
        return self._ordered(
            lambda j: j.plugin == plugin and j.schedule_id == schedule_id and j.status in outstanding
        )

    def cancel_reason(self, job_id: str) -> str | None:
        return self.cancels.get(job_id)

    # ----------------------------------------------------------------- jobs: writes
    def insert_job(self, job: Job) -> None:
        self._link(job, next(self._job_numbers), [], [])
        self._undo.append((self._unlink, (job.id,)))

    def update_job(self, job: Job, *, expected: JobStatus, token: int) -> Job:
        old = self.jobs.get(job.id)
        if old is None or old.status is not expected or old.claim_token != token:
            raise StaleJobError(f"job {job.id} is no longer {expected.value} under claim {token}")
        if job.status is JobStatus.RUNNING and old.status is not JobStatus.RUNNING:
            self._check_constraints(job)
        self._rewrite(job.id, job)
        self._undo.append((self._rewrite, (job.id, old)))
        return job

    def _check_constraints(self, job: Job) -> None:
        """The store's constraints on running jobs (see :mod:`ductile.ports.tx`)."""
        if job.slot is not None and (job.plugin, job.slot) in self._slots:
            raise ClaimConflictError(f"job {job.id}: slot {job.slot} of {job.plugin} is taken")
        key = identity(job)
        if key is not None and key in self._running_identities:
            raise ClaimConflictError(f"job {job.id}: its dedupe identity is running")

    def _rewrite(self, job_id: str, job: Job) -> None:
        old = self.jobs[job_id]
        self.jobs[job_id] = job
        self._track_running(old, job)
        self.index.job_written(old, job)

    def _track_running(self, old: Job | None, new: Job | None) -> None:
        if old is not None and old.status is JobStatus.RUNNING:
            del self._running[old.id]
            if old.slot is not None:
                self._slots.pop((old.plugin, old.slot), None)
            key = identity(old)
            if key is not None:
                self._running_identities.pop(key, None)
        if new is not None and new.status is JobStatus.RUNNING:
            self._running[new.id] = new
            if new.slot is not None:
                self._slots[(new.plugin, new.slot)] = new.id
            key = identity(new)
            if key is not None:
                self._running_identities[key] = new.id

    def add_transition(self, transition: Transition) -> None:
        history = self.transitions.setdefault(transition.job_id, [])
        history.append(transition)
        self._undo.append((history.pop, ()))

    def add_run(self, run: RunRecord, plugin: str) -> None:
        self.runs.setdefault(run.job_id, []).append((next(self._run_numbers), run))
        self._undo.append((self._drop_run, (run.job_id,)))

    def _drop_run(self, job_id: str) -> None:
        runs = self.runs[job_id]
        runs.pop()
        if not runs:
            del self.runs[job_id]

    def put_process(self, job_id: str, handle: ProcessHandle) -> None:
        self._put(self.processes, job_id, handle)

    def delete_process(self, job_id: str) -> None:
        if job_id in self.processes:
            self._put(self.processes, job_id, None)

    def request_cancel(self, job_id: str, reason: str) -> None:
        self._put(self.cancels, job_id, reason)

    def delete_cancel(self, job_id: str) -> None:
        if job_id in self.cancels:
            self._put(self.cancels, job_id, None)

    def add_count(self, name: str, n: int) -> None:
        self._put(self.counters, name, self.counters.get(name, 0) + n)

    def delete_finished(self, before: datetime, *, limit: int | None = None) -> int:
        doomed = self.index.finished_before(before, limit)
        for job in doomed:
            kept = self._unlink(job.id)
            self._undo.append((self._link, (job, *kept)))
        return len(doomed)

    def _link(
        self,
        job: Job,
        seq: int,
        transitions: list[Transition],
        runs: list[tuple[int, RunRecord]],
        process: ProcessHandle | None = None,
    ) -> None:
        """Store ``job`` and everything kept about it (inserting, or undoing a deletion)."""
        self.jobs[job.id] = job
        self.seq[job.id] = seq
        self.transitions[job.id] = transitions
        if runs:
            self.runs[job.id] = runs
        if process is not None:
            self.processes[job.id] = process
        if job.dedupe_key is not None:
            ids = self._by_identity.setdefault((job.plugin, job.command, job.dedupe_key), [])
            ids.append(job.id)
            if len(ids) > 1 and self.seq[ids[-2]] > seq:  # a deletion undone: back in insertion order
                ids.sort(key=self.seq.__getitem__)
        if job.parent_job_id is not None and job.source_event_id is not None:
            self._children[(job.parent_job_id, job.source_event_id, job.plugin, job.command)] = job.id
        self._track_running(None, job)
        self.index.job_written(None, job)

    def _unlink(
        self, job_id: str
    ) -> tuple[int, list[Transition], list[tuple[int, RunRecord]], ProcessHandle | None]:
        """Forget a job and everything kept about it; what :meth:`_link` needs to put it back."""
        job = self.jobs.pop(job_id)
        kept = (
            self.seq.pop(job_id),
            self.transitions.pop(job_id, []),
            self.runs.pop(job_id, []),
            self.processes.pop(job_id, None),
        )
        reason = self.cancels.pop(job_id, None)
        if reason is not None:  # a cancel request goes with its job (undone with it)
            self._undo.append((self._restore, (self.cancels, job_id, reason)))
        if job.dedupe_key is not None:
            identity = (job.plugin, job.command, job.dedupe_key)
            ids = self._by_identity[identity]
            ids.remove(job_id)
            if not ids:
                del self._by_identity[identity]
        if job.parent_job_id is not None and job.source_event_id is not None:
            self._children.pop((job.parent_job_id, job.source_event_id, job.plugin, job.command), None)
        self._track_running(job, None)
        self.index.job_written(job, None)
        return kept

    # ----------------------------------------------------------------- plugin state and breakers
    def get_state(self, plugin: str) -> dict[str, Any]:
        return self.states.get(plugin, {})

    def put_state(self, plugin: str, state: dict[str, Any]) -> None:
        self._put(self.states, plugin, copy_state(state))

    def get_breaker(self, plugin: str, command: str) -> Breaker | None:
        return self.breakers.get((plugin, command))

    def breakers_of(self, plugin: str) -> list[Breaker]:
        return [b for (p, _), b in sorted(self.breakers.items()) if p == plugin]

    def open_breakers(self) -> list[Breaker]:
        return [b for _, b in sorted(self.breakers.items()) if b.is_open]

    def put_breaker(self, breaker: Breaker) -> None:
        self._put(self.breakers, (breaker.plugin, breaker.command), breaker)

    # ----------------------------------------------------------------- facts and pauses
    def add_fact(self, fact: Fact) -> None:
        self.facts.append(attrs.evolve(fact, seq=next(self._fact_numbers), body=copy.deepcopy(fact.body)))
        self._undo.append((self.facts.pop, ()))

    def delete_facts_before(self, before: datetime, *, limit: int | None = None) -> int:
        newest: dict[tuple[str, str], int] = {}
        for fact in self.facts:
            newest[(fact.plugin, fact.fact_type)] = fact.seq
        budget = len(self.facts) if limit is None else limit
        kept = []
        for f in self.facts:  # in seq order: the oldest go first
            if budget > 0 and f.at < before and newest[(f.plugin, f.fact_type)] != f.seq:
                budget -= 1
            else:
                kept.append(f)
        deleted = len(self.facts) - len(kept)
        if deleted:
            old = self.facts
            self.facts = kept
            self._undo.append((setattr, (self, "facts", old)))
        return deleted

    def put_pause(self, pause: Pause) -> None:
        self._put(self.pauses, (pause.plugin, pause.schedule_id), pause)

    def delete_pause(self, plugin: str, schedule_id: str | None) -> bool:
        if (plugin, schedule_id) not in self.pauses:
            return False
        self._put(self.pauses, (plugin, schedule_id), None)
        return True

    def get_pause(self, plugin: str, schedule_id: str | None) -> Pause | None:
        return self.pauses.get((plugin, schedule_id))

    # ----------------------------------------------------------------- schedule index and init records
    def get_planned(self, key: str) -> PlannedRun | None:
        return self.planned.get(key)

    def put_planned(self, run: PlannedRun) -> None:
        self._plan(run.key, run)

    def replace_planned(self, old: PlannedRun, new: PlannedRun) -> None:
        self._plan(old.key, new)

    def delete_planned(self, key: str) -> None:
        if key in self.planned:
            self._plan(key, None)

    def _plan(self, key: str, run: PlannedRun | None) -> None:
        old = self.planned.get(key)
        self._set_plan(key, run)
        self._undo.append((self._set_plan, (key, old)))

    def _set_plan(self, key: str, run: PlannedRun | None) -> None:
        old = self.planned.get(key)
        self._restore(self.planned, key, run)
        self.index.plan_written(old, run)

    def put_init(self, record: InitRecord) -> None:
        self._put(self.inits, record.plugin, record)
