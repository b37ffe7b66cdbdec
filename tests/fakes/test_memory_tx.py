"""MemoryTx: a unit that raises changes nothing, whatever it wrote, on either index.

The contract suite checks atomicity through the port (a fire or an enqueue
that raises midway). Here every kind of write the Tx offers is made, then
undone by a raise; the tables *and* the index (its heaps and counts included)
must answer exactly as before, and keep answering correctly afterwards.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import attrs
import pytest

from ductile import units
from ductile.domain.activity import Activity, Kind
from ductile.domain.breaker import Breaker, BreakerStatus
from ductile.domain.classify import classify
from ductile.domain.job import Actor, Claim, Job, JobEvent, JobStatus, apply, creation
from ductile.domain.schedule import PlannedRun
from ductile.domain.settle import RunRecord, SettleContext
from ductile.fakes.indexed_store import HeapIndex
from ductile.fakes.memory_tx import IndexFactory, MemoryTx, ScanIndex
from ductile.fakes.spawner import error, ok
from ductile.ports.spawner import ProcessHandle
from ductile.ports.store_values import ClaimConflictError, InitRecord, StaleJobError

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
TTL = timedelta(hours=1)
INDEXES = pytest.mark.parametrize("index", [ScanIndex, HeapIndex], ids=["scan", "heap"])


class Boom(Exception):
    pass


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def plan(key: str, seconds: float) -> PlannedRun:
    return PlannedRun(
        key=key, fingerprint="f", nominal_at=at(seconds), planned_at=at(seconds), offset=timedelta(0)
    )


def run(tx: MemoryTx, unit: Callable[[MemoryTx], Any]) -> Any:
    with tx.atomic():
        return unit(tx)


def populated(index: IndexFactory) -> MemoryTx:
    """A Tx with a bit of everything: queued, retrying, running, finished jobs; state, breaker, plans."""
    tx = MemoryTx(index=index)
    for n, key in enumerate(["a", "b", "c", "d"]):
        job = Job(id=f"job-{key}", plugin="p", command="poll", created_at=at(n), dedupe_key=key)
        run(tx, lambda t, job=job: units.enqueue(t, job, actor=Actor.API, now=job.created_at, dedupe_ttl=TTL))
    run(tx, lambda t: units.claim_next(t, at(10)))  # a: running
    run(tx, lambda t: units.claim_next(t, at(11)))  # b: running, then fails once and waits for a retry
    ctx = SettleContext(now=at(12))
    run(tx, lambda t: units.settle(t, "job-b", classify(error("x")), ctx=ctx, dedupe_ttl=TTL, token=1))
    run(tx, lambda t: units.claim_next(t, at(13)))  # c: running, then succeeds with a state update
    done = classify(ok(state_updates={"n": 1}))
    run(tx, lambda t: units.settle(t, "job-c", done, ctx=SettleContext(now=at(14)), dedupe_ttl=TTL, token=1))
    run(tx, lambda t: t.put_process("job-a", ProcessHandle(pid=1, pgid=1, start_time=1)))
    run(tx, lambda t: t.put_breaker(Breaker(plugin="p", command="poll", failures=1)))
    run(tx, lambda t: t.put_planned(plan("s1", 100)))
    run(tx, lambda t: t.put_planned(plan("s2", 200)))
    return tx


def picture(tx: MemoryTx) -> dict[str, Any]:
    """Everything the tables hold and every index answer, as one comparable value."""
    return {
        "jobs": dict(tx.jobs),
        "seq": dict(tx.seq),
        "transitions": {k: list(v) for k, v in tx.transitions.items()},
        "runs": {k: list(v) for k, v in tx.runs.items()},
        "processes": dict(tx.processes),
        "states": {k: dict(v) for k, v in tx.states.items()},
        "breakers": dict(tx.breakers),
        "planned": dict(tx.planned),
        "inits": dict(tx.inits),
        "dedupe": {k: [j.id for j in tx.dedupe_candidates("p", "poll", k)] for k in "abcdz"},
        "oldest": [tx.oldest_runnable(at(s)) for s in (0, 20, 10_000)],
        "next_retry_at": tx.index.next_retry_at(),
        "outstanding": tx.outstanding("p", "poll"),
        "queue_depth": tx.index.queue_depth(),
        "all_planned": tx.index.all_planned(),
        "due": tx.index.due(at(0), at(150)),
        "running": tx.running_jobs(),
    }


def every_write_then_boom(tx: MemoryTx) -> None:
    new = Job(id="job-new", plugin="p", command="poll", created_at=at(0), dedupe_key="z")
    tx.insert_job(new)
    tx.add_transition(creation(new, actor=Actor.API))
    queued = tx.get_job("job-d")
    assert queued is not None
    claimed, record = apply(queued, JobEvent.CLAIM, at=at(30), actor=Actor.DISPATCHER, reason="claimed")
    tx.update_job(claimed, expected=JobStatus.QUEUED, token=queued.claim_token)
    tx.add_transition(record)
    tx.add_run(
        RunRecord(
            job_id="job-a",
            attempt=1,
            started_at=at(10),
            finished_at=at(31),
            duration=1.0,
            exit_code=0,
            signal=None,
            timed_out=False,
            error=None,
            stderr_tail=b"",
            stdout_head=b"",
            logs=(),
        ),
        "p",
    )
    tx.put_process("job-d", ProcessHandle(pid=2, pgid=2, start_time=2))
    tx.delete_process("job-a")
    tx.put_state("p", {"n": 99})
    tx.put_breaker(
        Breaker(plugin="p", command="poll", status=BreakerStatus.OPEN, failures=5, opened_at=at(31))
    )
    tx.put_planned(plan("s3", 50))
    tx.replace_planned(plan("s1", 100), plan("s1", 120))
    tx.delete_planned("s2")
    tx.put_init(InitRecord(plugin="p", fingerprint="f", ok=True, error=None, at=at(32)))
    assert tx.delete_finished(at(10_000)) == 1  # job-c
    assert tx.get_job("job-c") is None
    raise Boom


@INDEXES
def test_a_unit_that_raises_leaves_tables_and_index_as_they_were(index: IndexFactory) -> None:
    tx = populated(index)
    before = picture(tx)
    with pytest.raises(Boom):
        run(tx, every_write_then_boom)
    assert picture(tx) == before


@INDEXES
def test_after_a_rollback_the_index_still_answers_for_the_restored_rows(index: IndexFactory) -> None:
    tx = populated(index)
    with pytest.raises(Boom):
        run(tx, every_write_then_boom)
    claimed = run(tx, lambda t: units.claim_next(t, at(40)))
    assert claimed is not None
    assert claimed.id == "job-d"  # the undone claim put it back in the queue
    assert run(tx, lambda t: units.delete_finished(t, at(10_000))).jobs == 1  # the undone deletion comes back
    assert tx.get_job("job-c") is None
    assert tx.index.queue_depth() == 1  # job-b, waiting for its retry: the rest ran
    assert tx.index.next_retry_at() == tx.jobs["job-b"].next_retry_at


@INDEXES
def test_a_stale_compare_and_set_writes_nothing(index: IndexFactory) -> None:
    tx = populated(index)
    before = picture(tx)
    running = tx.get_job("job-a")
    assert running is not None
    with pytest.raises(StaleJobError, match="job-a is no longer queued"):
        run(tx, lambda t: t.update_job(running, expected=JobStatus.QUEUED, token=running.claim_token))
    assert picture(tx) == before


def _note(tx: MemoryTx, seconds: float) -> None:
    tx.append_activity(Activity(kind=Kind.BREAKER_CLOSED, at=at(seconds)))


def prune_note_then_boom(tx: MemoryTx) -> None:
    assert tx.prune_activity(at(6)) == 2
    _note(tx, 0)
    raise Boom


def test_activity_pruning_skips_a_young_log_and_survives_a_rollback() -> None:
    tx = MemoryTx(index=ScanIndex)
    for s in (5, 1, 9):  # not in time order: the floor is the oldest, not the first
        run(tx, lambda t, s=s: _note(t, s))
    assert run(tx, lambda t: t.prune_activity(at(1))) == 0  # nothing older than 1 s
    with pytest.raises(Boom):
        run(tx, prune_note_then_boom)
    assert [e.activity.at for e in tx.activity] == [at(5), at(1), at(9)]
    assert run(tx, lambda t: t.prune_activity(at(6))) == 2  # the undone prune restored the floor
    assert [e.activity.at for e in tx.activity] == [at(9)]
    assert run(tx, lambda t: t.prune_activity(at(9))) == 0
    assert run(tx, lambda t: t.prune_activity(at(10))) == 1
    assert tx.activity == []


@INDEXES
def test_a_claim_into_a_taken_slot_or_a_running_identity_breaks_a_constraint_and_writes_nothing(
    index: IndexFactory,
) -> None:
    tx = populated(index)  # job-a runs in slot 0 of plugin p, with dedupe key "a"
    before = picture(tx)
    queued = tx.get_job("job-d")
    assert queued is not None
    for taken in (Claim(slot=0), Claim(slot=5)):
        claimed, _ = apply(queued, JobEvent.CLAIM, at=at(30), actor=Actor.DISPATCHER, reason="c", claim=taken)
        if taken.slot == 5:  # a free slot, but the identity of job-a
            claimed = attrs.evolve(claimed, dedupe_key="a")
        with pytest.raises(ClaimConflictError):
            run(tx, lambda t, c=claimed: t.update_job(c, expected=JobStatus.QUEUED, token=queued.claim_token))
        assert picture(tx) == before
