"""SqliteStore: what the shared contract suite cannot show.

Persistence across close/reopen, schema migrations and the refusal of a newer
schema, several writers on one file (two stores, another process), group
commit and its per-unit savepoints, close() with pending work, a locked
database, fork safety, a SIGKILL of a writer mid-loop, and a differential
test that drives the SQLite store and the in-memory fake with the same random
operations and requires the same answers.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ductile.adapters.sqlite import (
    MigrationError,
    SchemaVersionError,
    SqliteStore,
    StoreBusyError,
    StoreClosedError,
    StoreError,
)
from ductile.adapters.sqlite.rows import from_us, to_us
from ductile.adapters.sqlite.schema import MIGRATIONS, SCHEMA_VERSION, migrate, user_version
from ductile.adapters.sqlite.tx import SqliteTx
from ductile.domain.breaker import BreakerPolicy
from ductile.domain.classify import RunEnd, Verdict, classify
from ductile.domain.errors import DuctileError
from ductile.domain.job import Actor, Claim, Job, JobEvent, JobStatus, SubmittedBy, apply
from ductile.domain.outcome import Interrupted, NotRun, SpawnOutcome
from ductile.domain.retry import RetryPolicy
from ductile.domain.routing import Route, Target
from ductile.domain.schedule import PlannedRun
from ductile.domain.settle import SettleContext
from ductile.fakes.memory_store import InMemoryStore
from ductile.ports.spawner import ProcessHandle
from ductile.ports.store import ClaimConflictError, Guard, InitRecord, StaleJobError, Store
from tests.support.builders import job

T = TypeVar("T")
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
TTL = timedelta(hours=24)


def run(coro: Awaitable[T]) -> T:
    async def main() -> T:
        return await coro

    return asyncio.run(main())


async def enqueue(store: Store, job_id: str, **kw: Any) -> str:
    result = await store.enqueue(job(job_id, **kw), actor=Actor.API, now=T0, dedupe_ttl=TTL)
    return result.job_id


def ok(body: dict[str, Any] | None = None) -> Verdict:
    return classify(
        SpawnOutcome(exit_code=0, stdout=json.dumps(body or {"status": "ok"}).encode(), duration=0.25)
    )


def integrity(path: Path) -> tuple[str, list[Any]]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute("PRAGMA integrity_check").fetchone()[0], conn.execute(
            "PRAGMA foreign_key_check"
        ).fetchall()
    finally:
        conn.close()


def store_threads(path: Path) -> list[threading.Thread]:
    """The live threads of stores on ``path`` (named after the file)."""
    return [
        t for t in threading.enumerate() if t.name.startswith("ductile-sqlite") and t.name.endswith(path.name)
    ]


class Gate:
    """A write unit that holds the writer thread until released: makes batches deterministic."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()

    def unit(self, conn: sqlite3.Connection) -> str:
        self.entered.set()
        if not self.release.wait(10):
            raise AssertionError("gate never released")
        return "gate"

    async def hold(self, store: SqliteStore) -> asyncio.Task[str]:
        task = asyncio.ensure_future(store._write("gate", self.unit))
        entered = await asyncio.to_thread(self.entered.wait, 10)
        assert entered, "the writer never picked up the gate unit"
        return task


# --------------------------------------------------------------------------- values


@given(
    st.datetimes(
        min_value=datetime(2, 1, 1),
        max_value=datetime(9998, 12, 31),
        timezones=st.builds(timezone, st.integers(-23 * 60, 23 * 60).map(lambda m: timedelta(minutes=m))),
    ),
    st.datetimes(min_value=datetime(2, 1, 1), max_value=datetime(9998, 12, 31), timezones=st.just(UTC)),
)
def test_instants_round_trip_exactly_and_keep_their_order(a: datetime, b: datetime) -> None:
    assert from_us(to_us(a)) == a
    assert from_us(to_us(a)).tzinfo is UTC
    assert (a < b) == (to_us(a) < to_us(b))
    assert (a == b) == (to_us(a) == to_us(b))


def test_naive_instants_are_refused_with_a_clear_message() -> None:
    with pytest.raises(ValueError, match="aware"):
        to_us(datetime(2026, 1, 1))


# --------------------------------------------------------------------------- persistence


def test_a_fresh_store_on_the_same_file_sees_everything(tmp_path: Path) -> None:
    path = tmp_path / "d.db"
    berlin = timezone(timedelta(hours=1))
    planned = PlannedRun(
        key="sched:p",
        fingerprint="f1",
        nominal_at=T0 + timedelta(hours=1),
        planned_at=T0 + timedelta(hours=1, microseconds=7),
        offset=timedelta(seconds=-90, microseconds=3),
        snapped=True,
    )
    init = InitRecord(plugin="p", fingerprint="cfg1", ok=False, error="boom", at=T0.astimezone(berlin))
    routes = (Route(source="p", event_type="e", target="q"),)
    stderr = bytes(range(256)) * 3  # not UTF-8: kept as bytes

    async def write() -> dict[str, Any]:
        store = await SqliteStore.open(path)
        try:
            await enqueue(store, "a", payload={"n": [1, 2.5, "é", None, {"x": True}]}, dedupe_key="k")
            await enqueue(
                store, "b", created_at=T0 + timedelta(microseconds=1), submitted_by=SubmittedBy.SCHEDULER
            )
            await enqueue(store, "c", created_at=T0 + timedelta(microseconds=2))
            claimed = await store.claim_next(T0)
            assert claimed is not None
            assert claimed.id == "a"
            await store.record_process("a", ProcessHandle(pid=4242, pgid=4242, start_time=987654), token=1)
            body = {
                "status": "ok",
                "state_updates": {"token": "t", "n": 1},
                "events": [{"type": "e", "payload": {"v": 1}}],
                "logs": [{"level": "warn", "message": "careful"}],
            }
            outcome = SpawnOutcome(
                exit_code=0, stdout=json.dumps(body).encode(), stderr_tail=stderr, duration=1.5
            )
            ctx = SettleContext(
                now=T0 + timedelta(seconds=2), routes=routes, targets={"q": Target(max_attempts=2)}
            )
            committed = await store.settle("a", classify(outcome), ctx=ctx, dedupe_ttl=TTL, token=1)
            assert [c.created for c in committed.children] == [True]
            second = await store.claim_next(T0 + timedelta(seconds=3))
            assert second is not None
            assert second.id == "b"
            failing = classify(SpawnOutcome(exit_code=1, stdout=b"", duration=0.1))
            ctx = SettleContext(now=T0 + timedelta(seconds=4), draw=0.5, breaker=BreakerPolicy(threshold=1))
            await store.settle("b", failing, ctx=ctx, dedupe_ttl=TTL, token=1)
            third = await store.claim_next(T0 + timedelta(seconds=5))
            assert third is not None
            await store.record_process(third.id, ProcessHandle(pid=7, pgid=7, start_time=1), token=1)
            await store.put_planned(planned)
            await store.put_init(init)
            return await everything(store)
        finally:
            await store.close()

    before = run(write())
    assert before["breakers"][0].is_open
    assert before["running"][0].process == ProcessHandle(pid=7, pgid=7, start_time=1)
    assert before["runs"]["a"][0].stderr_tail == stderr
    assert before["planned"] == [planned]
    assert before["init"] == init

    async def read() -> dict[str, Any]:
        store = await SqliteStore.open(path)
        try:
            return await everything(store)
        finally:
            await store.close()

    after = run(read())
    assert after == before
    assert integrity(path) == ("ok", [])


async def everything(store: Store) -> dict[str, Any]:
    jobs = await store.list_jobs(limit=10_000)
    return {
        "jobs": jobs,
        "transitions": {j.id: await store.transitions(j.id) for j in jobs},
        "runs": {j.id: await store.runs(j.id) for j in jobs},
        "running": await store.running(),
        "states": {p: await store.get_state(p) for p in ("a", "b", "p", "q")},
        "breakers": await store.breakers(),
        "planned": await store.all_planned(),
        "init": await store.get_init("p"),
        "depth": await store.queue_depth(),
        "next_retry_at": await store.next_retry_at(),
        "outstanding": {
            (p, c): await store.outstanding(p, c) for p in ("a", "b", "p", "q") for c in ("poll", "handle")
        },
    }


# --------------------------------------------------------------------------- schema versions


def test_a_new_file_gets_the_current_schema(tmp_path: Path) -> None:
    path = tmp_path / "new.db"

    async def main() -> None:
        store = await SqliteStore.open(path)
        await store.close()

    run(main())
    conn = sqlite3.connect(path)
    assert user_version(conn) == SCHEMA_VERSION
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()


def test_an_empty_version_0_database_is_migrated(tmp_path: Path) -> None:
    path = tmp_path / "v0.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE operator_notes (text TEXT)")  # someone else's table survives
    conn.commit()
    conn.close()

    async def main() -> None:
        store = await SqliteStore.open(path)
        try:
            assert await enqueue(store, "a") == "a"
        finally:
            await store.close()

    run(main())
    conn = sqlite3.connect(path)
    assert user_version(conn) == SCHEMA_VERSION
    assert conn.execute("SELECT count(*) FROM operator_notes").fetchone() == (0,)
    conn.close()


NEXT_STEP = (
    "ALTER TABLE jobs ADD COLUMN note TEXT",
    "UPDATE jobs SET note = 'migrated ' || id",
)


class NextVersionStore(SqliteStore):
    """The store of a future ductile whose schema has one more step."""

    migrations = (*MIGRATIONS, NEXT_STEP)


class BrokenNextVersionStore(SqliteStore):
    migrations = (*MIGRATIONS, ("ALTER TABLE jobs ADD COLUMN note TEXT", "THIS IS NOT SQL"))


def test_an_older_database_is_migrated_forward_keeping_its_data(tmp_path: Path) -> None:
    path = tmp_path / "old.db"

    async def main() -> None:
        old = await SqliteStore.open(path)
        await enqueue(old, "a")
        await old.close()
        new = await NextVersionStore.open(path)
        try:
            got = await new.get_job("a")
            assert got is not None
            assert got.id == "a"
            assert await enqueue(new, "b") == "b"
        finally:
            await new.close()

    run(main())
    conn = sqlite3.connect(path)
    assert user_version(conn) == SCHEMA_VERSION + 1
    assert conn.execute("SELECT note FROM jobs WHERE id = 'a'").fetchone() == ("migrated a",)
    conn.close()


def test_a_failing_migration_changes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "old.db"

    async def main() -> None:
        old = await SqliteStore.open(path)
        await enqueue(old, "a")
        await old.close()
        with pytest.raises(MigrationError, match=f"from schema version {SCHEMA_VERSION} to") as info:
            await BrokenNextVersionStore.open(path)
        assert isinstance(info.value, DuctileError)
        assert str(path) in str(info.value)
        again = await SqliteStore.open(path)  # still a good database of the old version
        try:
            assert await again.get_job("a") is not None
        finally:
            await again.close()

    run(main())
    conn = sqlite3.connect(path)
    assert user_version(conn) == SCHEMA_VERSION
    columns = [row[1] for row in conn.execute("PRAGMA table_info(jobs)")]
    assert "note" not in columns  # the first statement of the failed step was rolled back too
    conn.close()
    assert not store_threads(path)


def test_migrate_applies_only_the_missing_steps_once(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "m.db", isolation_level=None)
    assert migrate(conn, "m.db") == (0, SCHEMA_VERSION)
    assert migrate(conn, "m.db") == (SCHEMA_VERSION, SCHEMA_VERSION)
    assert migrate(conn, "m.db", (*MIGRATIONS, NEXT_STEP)) == (SCHEMA_VERSION, SCHEMA_VERSION + 1)
    conn.close()


def test_a_database_from_a_newer_ductile_is_refused_untouched(tmp_path: Path) -> None:
    path = tmp_path / "future.db"
    run(_create_next_version(path))
    before = path.read_bytes()

    async def main() -> None:
        with pytest.raises(SchemaVersionError) as info:
            await SqliteStore.open(path)
        message = str(info.value)
        assert f"schema version {SCHEMA_VERSION + 1}" in message
        assert f"the {SCHEMA_VERSION} this ductile understands" in message
        assert str(path) in message
        assert isinstance(info.value, DuctileError)

    run(main())
    assert path.read_bytes() == before
    assert not store_threads(path)


async def _create_next_version(path: Path) -> None:
    store = await NextVersionStore.open(path)
    await store.close()


def test_a_file_that_is_not_a_database_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "junk.db"
    path.write_bytes(b"this is not sqlite, it is a text file of sufficient length" * 100)
    with pytest.raises(StoreError, match=r"junk\.db.*not a database"):
        run(SqliteStore.open(path))
    assert not store_threads(path)


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="synchronous"):
        SqliteStore("x.db", synchronous="SOMETIMES")
    with pytest.raises(ValueError, match="busy_timeout"):
        SqliteStore("x.db", busy_timeout=-1)


# --------------------------------------------------------------------------- concurrency


def test_two_stores_on_one_file_write_concurrently_without_losing_anything(tmp_path: Path) -> None:
    path = tmp_path / "shared.db"

    async def main() -> None:
        first = await SqliteStore.open(path)
        second = await SqliteStore.open(path)
        try:
            ids = [f"job-{i}" for i in range(200)]
            results = await asyncio.gather(
                *(
                    (first if i % 2 else second).enqueue(
                        job(jid, created_at=T0 + timedelta(microseconds=i)),
                        actor=Actor.API,
                        now=T0,
                        dedupe_ttl=TTL,
                    )
                    for i, jid in enumerate(ids)
                )
            )
            assert all(r.created for r in results)
            assert await first.queue_depth() == 200
            assert await second.queue_depth() == 200
            # Claims from both stores never hand out the same job twice.
            claims = await asyncio.gather(*((first if i % 2 else second).claim_next(T0) for i in range(210)))
            got = [c.id for c in claims if c is not None]
            assert sorted(got) == sorted(ids)
        finally:
            await first.close()
            await second.close()

    run(main())
    assert integrity(path) == ("ok", [])


CHILD = """
import asyncio, sys
from datetime import UTC, datetime, timedelta
from ductile.adapters.sqlite import SqliteStore
from ductile.domain.job import Actor, Job

async def main(path, prefix, count):
    store = await SqliteStore.open(path)
    try:
        i = 0
        while count < 0 or i < count:
            now = datetime.now(UTC)
            job = Job(id=f"{prefix}-{i}", plugin="cli", command="poll", created_at=now)
            result = await store.enqueue(job, actor=Actor.CLI, now=now, dedupe_ttl=timedelta(hours=1))
            assert result.created, result
            print(job.id, flush=True)
            i += 1
    finally:
        await store.close()

asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
"""


def start_child(tmp_path: Path, db: Path, prefix: str, count: int) -> subprocess.Popen[str]:
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    return subprocess.Popen(
        [sys.executable, str(script), str(db), prefix, str(count)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_another_process_writes_while_we_write(tmp_path: Path) -> None:
    path = tmp_path / "shared.db"
    run(_create(path))
    child = start_child(tmp_path, path, "child", 300)
    try:
        assert child.stdout is not None
        first = child.stdout.readline().strip()  # the child is writing now
        assert first == "child-0", child.stderr.read() if child.stderr else ""

        async def main() -> None:
            store = await SqliteStore.open(path)
            try:
                for i in range(300):
                    await enqueue(store, f"parent-{i}", created_at=datetime.now(UTC))
            finally:
                await store.close()

        run(main())
        out, err = child.communicate(timeout=60)
    finally:
        child.kill()
        child.wait()
    assert child.returncode == 0, err
    child_ids = [first, *out.split()]
    assert child_ids == [f"child-{i}" for i in range(300)]
    conn = sqlite3.connect(path)
    stored = {row[0] for row in conn.execute("SELECT id FROM jobs")}
    conn.close()
    assert stored == {*child_ids, *(f"parent-{i}" for i in range(300))}
    assert integrity(path) == ("ok", [])


async def _create(path: Path) -> None:
    store = await SqliteStore.open(path)
    await store.close()


def test_a_sigkilled_writer_loses_no_acknowledged_enqueue(tmp_path: Path) -> None:
    path = tmp_path / "kill.db"
    run(_create(path))
    child = start_child(tmp_path, path, "k", -1)
    acknowledged: list[str] = []
    try:
        assert child.stdout is not None
        deadline = time.monotonic() + 30
        while len(acknowledged) < 60 and time.monotonic() < deadline:
            line = child.stdout.readline()
            if not line:
                break
            acknowledged.append(line.strip())
        child.send_signal(signal.SIGKILL)  # mid-loop: it is enqueueing as fast as it can
        out, err = child.communicate(timeout=10)
    finally:
        child.kill()
        child.wait()
    assert child.returncode == -signal.SIGKILL
    acknowledged += [line for line in out.splitlines(keepends=True) if line.endswith("\n")]
    acknowledged = [a.strip() for a in acknowledged]
    assert len(acknowledged) >= 60, err

    async def check() -> list[str]:
        store = await SqliteStore.open(path)
        try:
            return [i for i in acknowledged if await store.get_job(i) is None]
        finally:
            await store.close()

    assert run(check()) == []
    assert integrity(path) == ("ok", [])


def test_a_lock_held_past_busy_timeout_is_a_clear_error_and_the_store_recovers(tmp_path: Path) -> None:
    path = tmp_path / "locked.db"

    async def main() -> None:
        store = await SqliteStore.open(path, busy_timeout=0.2)
        other = sqlite3.connect(path, isolation_level=None)
        try:
            other.execute("BEGIN IMMEDIATE")  # another process's writer, holding on
            started = time.monotonic()
            with pytest.raises(StoreBusyError, match=r"locked by another connection.*busy_timeout \(0.2 s\)"):
                await enqueue(store, "a")
            assert time.monotonic() - started < 5
            assert await store.queue_depth() == 0  # reads are not blocked by a writer (WAL)
            other.execute("ROLLBACK")
            assert await enqueue(store, "a") == "a"
            assert await store.queue_depth() == 1
        finally:
            other.close()
            await store.close()

    run(main())


# --------------------------------------------------------------------------- group commit


def test_concurrent_units_share_one_commit(tmp_path: Path) -> None:
    async def main() -> None:
        store = await SqliteStore.open(tmp_path / "g.db")
        try:
            gate = Gate()
            held = await gate.hold(store)
            commits = store.stats.commits
            tasks = [asyncio.ensure_future(enqueue(store, f"j{i}")) for i in range(32)]
            await asyncio.sleep(0)  # every task submits its unit, then waits
            assert store._writer.queued() == 32
            gate.release.set()
            assert await held == "gate"
            assert sorted(await asyncio.gather(*tasks)) == sorted(f"j{i}" for i in range(32))
            assert store.stats.commits == commits + 2  # the gate's batch, then all 32 together
            assert store.stats.largest_batch == 32
        finally:
            await store.close()

    run(main())


def test_group_commit_emerges_under_plain_concurrency(tmp_path: Path) -> None:
    async def main() -> None:
        store = await SqliteStore.open(tmp_path / "g.db")
        try:
            before = store.stats
            await asyncio.gather(*(enqueue(store, f"j{i}") for i in range(64)))
            after = store.stats
            assert after.units - before.units == 64
            assert after.commits - before.commits <= 16, after  # one commit per unit would be 64
        finally:
            await store.close()

    run(main())


def test_a_write_is_acknowledged_only_once_it_is_committed(tmp_path: Path) -> None:
    """When an enqueue returns, another connection already sees the job (so a crash cannot lose it)."""
    path = tmp_path / "ack.db"

    async def main() -> None:
        store = await SqliteStore.open(path)
        observer = sqlite3.connect(path)
        seen: dict[str, int] = {}

        async def one(i: int) -> None:
            job_id = await enqueue(store, f"j{i}")
            seen[job_id] = observer.execute("SELECT count(*) FROM jobs WHERE id = ?", (job_id,)).fetchone()[0]

        try:
            gate = Gate()
            held = await gate.hold(store)
            tasks = asyncio.gather(*(one(i) for i in range(50)))
            await asyncio.sleep(0)
            gate.release.set()
            await held
            await tasks
            assert seen == {f"j{i}": 1 for i in range(50)}
        finally:
            observer.close()
            await store.close()

    run(main())


def test_a_failing_unit_rolls_back_alone(tmp_path: Path) -> None:
    class Boom(Exception):
        pass

    def insert_then_fail(conn: sqlite3.Connection) -> None:
        conn.execute(
            "INSERT INTO jobs (id, plugin, command, payload, status, attempt, max_attempts, "
            "submitted_by, created_at) VALUES ('ghost', 'p', 'poll', '{}', 'queued', 1, 4, 'api', 0)"
        )
        raise Boom("half done")

    async def main() -> None:
        store = await SqliteStore.open(tmp_path / "g.db")
        try:
            await enqueue(store, "queued-one")
            gate = Gate()
            held = await gate.hold(store)
            commits = store.stats.commits
            before = asyncio.ensure_future(enqueue(store, "before"))
            ghost = asyncio.ensure_future(store._write("ghost", insert_then_fail))
            stale = asyncio.ensure_future(
                store.settle("queued-one", ok(), ctx=SettleContext(now=T0), dedupe_ttl=TTL, token=0)
            )
            after = asyncio.ensure_future(enqueue(store, "after"))
            await asyncio.sleep(0)
            gate.release.set()
            await held
            assert await before == "before"
            assert await after == "after"
            with pytest.raises(Boom, match="half done"):
                await ghost
            with pytest.raises(StaleJobError, match="queued-one"):
                await stale
            assert store.stats.commits == commits + 2  # the four units went in one transaction
            assert await store.get_job("ghost") is None
            queued = await store.get_job("queued-one")
            assert queued is not None
            assert queued.status is JobStatus.QUEUED
            assert [t.to_status for t in await store.transitions("queued-one")] == [JobStatus.QUEUED]
            assert {j.id for j in await store.list_jobs()} == {"queued-one", "before", "after"}
        finally:
            await store.close()

    run(main())


def test_close_commits_what_was_submitted_and_refuses_what_comes_after(tmp_path: Path) -> None:
    path = tmp_path / "c.db"

    async def main() -> None:
        store = await SqliteStore.open(path)
        gate = Gate()
        held = await gate.hold(store)
        pending = [asyncio.ensure_future(enqueue(store, f"p{i}")) for i in range(10)]
        await asyncio.sleep(0)
        closing = asyncio.ensure_future(store.close())
        await asyncio.sleep(0)
        with pytest.raises(StoreClosedError, match="closed"):
            await enqueue(store, "late")
        gate.release.set()
        await held
        assert sorted(await asyncio.gather(*pending)) == sorted(f"p{i}" for i in range(10))
        await closing
        await store.close()  # idempotent
        with pytest.raises(StoreClosedError):
            await store.queue_depth()
        assert not store_threads(path)
        reopened = await SqliteStore.open(path)
        try:
            assert await reopened.queue_depth() == 10
        finally:
            await reopened.close()

    run(main())
    assert integrity(path) == ("ok", [])


def test_a_store_that_was_never_opened_says_so() -> None:
    store = SqliteStore("never.db")
    with pytest.raises(StoreClosedError, match="not open yet"):
        run(store.queue_depth())


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
def test_a_forked_child_cannot_use_the_parents_connections(tmp_path: Path) -> None:
    store = run(SqliteStore.open(tmp_path / "f.db"))
    try:
        pid = os.fork()
        if pid == 0:  # the child: must get a clear error, never touch the parent's connection
            code = 1
            try:
                try:
                    run(store.queue_depth())
                except StoreError as e:
                    code = 0 if "forked process" in str(e) else 2
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert run(store.queue_depth()) == 0  # the parent's store still works
    finally:
        run(store.close())


# --------------------------------------------------------------------------- same answers as the fake

PLUGINS = ("a", "b")
ROUTES = (
    Route(source="a", event_type="e", target="b"),
    Route(source="b", event_type="e", target="a"),
    Route(source="a", event_type="e", target="ghost"),
    Route(source="b", event_type="e", target="b"),  # a plugin feeding itself: child shares its identity
)
TARGETS = {"a": Target(max_attempts=2), "b": Target(max_attempts=3)}

ENQUEUE = st.tuples(
    st.just("enqueue"),
    st.sampled_from(("a", "a", "b")),
    st.sampled_from(("poll", "poll", "handle")),
    st.sampled_from((None, "k1", "k1", "k2")),
    st.integers(-3, 3),  # created_at offset in microseconds: FIFO ties and reorderings
    st.sampled_from((SubmittedBy.SCHEDULER, SubmittedBy.API)),
    st.integers(1, 3),
)
CLAIM = st.tuples(st.just("claim"), st.sampled_from((0, 0, 5, 30, 120, 2000)))
SETTLE = st.tuples(
    st.just("settle"),
    st.integers(0, 3),
    st.sampled_from(("ok", "ok", "state", "events", "events", "fail", "fail", "exit78", "timeout", "notrun")),
    st.floats(0, 0.999),
)
OTHER = st.one_of(
    st.tuples(st.just("settle"), st.integers(0, 3), st.sampled_from(("interrupt", "queued")), st.just(0.0)),
    st.tuples(st.just("process"), st.integers(0, 3)),
    st.tuples(st.just("claim_one"), st.integers(0, 3)),
    st.tuples(st.just("cancel"), st.sampled_from(PLUGINS)),
    st.tuples(st.just("retention"), st.sampled_from((0, 60, 600))),
    st.tuples(st.just("recover")),
    st.tuples(st.just("reset"), st.sampled_from(PLUGINS)),
    st.tuples(st.just("plan"), st.sampled_from(("s1", "s2")), st.integers(-60, 600)),
    st.tuples(st.just("unplan"), st.sampled_from(("s1", "s2"))),
    st.tuples(
        st.just("fire"),
        st.sampled_from(("s1", "s2")),
        st.sampled_from(("none", "guard", "breaker", "both")),
        st.integers(0, 2),
        st.booleans(),
    ),
    st.tuples(st.just("reads"), st.sampled_from(PLUGINS)),
)
#: Weighted towards the paths where stores can differ: enqueue/dedupe, claim order, settle.
op = st.one_of(ENQUEUE, ENQUEUE, CLAIM, CLAIM, SETTLE, SETTLE, OTHER, OTHER)


class Driver:
    """Applies one generated operation to a store; both stores get identical inputs."""

    def __init__(self) -> None:
        self.now = T0
        self.counter = 0

    def new_id(self) -> str:
        self.counter += 1
        return f"j{self.counter}"

    def outcome(self, kind: str, plugin: str) -> RunEnd:
        if kind == "ok":
            return ok()
        if kind == "state":
            return ok({"status": "ok", "state_updates": {plugin: self.counter, "last": kind}})
        if kind == "events":
            events = [{"type": "e", "payload": {"i": i}, "dedupe_key": "k1" if i else None} for i in range(2)]
            return ok({"status": "ok", "events": events})
        if kind == "fail":
            return classify(SpawnOutcome(exit_code=1, stdout=b"", stderr_tail=b"oops\n\xff"))
        if kind == "exit78":
            return classify(SpawnOutcome(exit_code=78, stdout=b'{"status": "error", "error": "bad config"}'))
        if kind == "timeout":
            return classify(SpawnOutcome(timed_out=True, duration=60.0), timedelta(seconds=60))
        if kind == "notrun":
            return NotRun(reason="plugin unhealthy", retryable=True)
        return Interrupted()


async def call(fn: Callable[[], Awaitable[Any]]) -> Any:
    try:
        return ("ok", await fn())
    except (StaleJobError, ValueError, DuctileError) as e:
        return ("raised", type(e).__name__)


Apply = Callable[[Store], Awaitable[Any]]


async def prepare_enqueue(model: Store, d: Driver, operation: tuple[Any, ...]) -> Apply:
    _, plugin, command, key, offset, by, attempts = operation
    new = Job(
        id=d.new_id(),
        plugin=plugin,
        command=command,
        created_at=d.now + timedelta(microseconds=offset),
        dedupe_key=key,
        submitted_by=by,
        max_attempts=attempts,
        payload={"n": d.counter, "nested": {"list": [1, "two", None]}},
    )
    return lambda s: call(lambda: s.enqueue(new, actor=Actor(by.value), now=d.now, dedupe_ttl=TTL))


async def prepare_claim(model: Store, d: Driver, operation: tuple[Any, ...]) -> Apply:
    d.now += timedelta(seconds=operation[1])
    now = d.now
    return lambda s: call(lambda: s.claim_next(now))


async def prepare_settle(model: Store, d: Driver, operation: tuple[Any, ...]) -> Apply:
    """``settle`` (a running job, or with "queued" a queued one) and ``process`` (record a handle)."""
    kind = operation[0]
    candidates = [r.job for r in await model.running()]
    if kind == "settle" and operation[2] == "queued":
        candidates = await model.list_jobs(statuses=[JobStatus.QUEUED])
    chosen = candidates[operation[1] % len(candidates)] if candidates else None
    target = chosen.id if chosen else "missing"
    token = chosen.claim_token if chosen else 0
    if kind == "process":
        handle = ProcessHandle(pid=100 + d.counter, pgid=100 + d.counter, start_time=d.counter)
        return lambda s: call(lambda: s.record_process(target, handle, token=token))
    d.now += timedelta(seconds=1)
    ctx = SettleContext(
        now=d.now,
        draw=operation[3],
        retry=RetryPolicy(backoff_base=timedelta(seconds=10)),
        breaker=BreakerPolicy(threshold=2, reset_after=timedelta(minutes=5)),
        routes=ROUTES,
        targets=TARGETS,
    )
    outcome = d.outcome(operation[2], chosen.plugin if chosen else "a")
    return lambda s: call(lambda: s.settle(target, outcome, ctx=ctx, dedupe_ttl=TTL, token=token))


async def prepare_claim_one(model: Store, d: Driver, operation: tuple[Any, ...]) -> Apply:
    """A given job, even one waiting for its retry time; or one not queued."""
    now = d.now
    jobs = await model.list_jobs(limit=1000)
    target = jobs[operation[1] % len(jobs)].id if jobs else "missing"
    return lambda s: call(lambda: s.claim(target, now))


async def prepare_maintenance(model: Store, d: Driver, operation: tuple[Any, ...]) -> Apply:
    """``cancel``, ``retention``, ``recover``, ``reset``, ``plan`` and ``unplan``."""
    kind, now = operation[0], d.now
    if kind == "cancel":
        return lambda s: call(lambda: s.cancel_queued(operation[1], reason="plugin removed", now=now))
    if kind == "retention":
        return lambda s: call(lambda: s.delete_finished(now - timedelta(seconds=operation[1])))
    if kind == "recover":
        return lambda s: call(lambda: s.recover(now))
    if kind == "reset":
        return lambda s: call(lambda: s.reset_breakers(operation[1]))
    if kind == "plan":
        at = now + timedelta(seconds=operation[2])
        planned = PlannedRun(
            key=operation[1], fingerprint="f", nominal_at=at, planned_at=at, offset=timedelta(seconds=1)
        )
        return lambda s: call(lambda: s.put_planned(planned))
    assert kind == "unplan"
    return lambda s: call(lambda: s.delete_planned(operation[1]))


async def prepare_fire(model: Store, d: Driver, operation: tuple[Any, ...]) -> Apply:
    _, key, guard_kind, n_jobs, stale = operation
    now = d.now
    current = await model.planned(key)
    due = current or PlannedRun(key=key, fingerprint="f", nominal_at=now, planned_at=now, offset=timedelta(0))
    if stale:
        due = PlannedRun(
            key=key,
            fingerprint="old",
            nominal_at=due.nominal_at,
            planned_at=due.planned_at,
            offset=due.offset,
        )
    nxt = PlannedRun(
        key=key,
        fingerprint="f",
        nominal_at=due.nominal_at + timedelta(minutes=5),
        planned_at=due.planned_at + timedelta(minutes=5),
        offset=timedelta(0),
    )
    jobs = [
        Job(
            id=d.new_id(),
            plugin="a",
            command="poll",
            created_at=now,
            submitted_by=SubmittedBy.SCHEDULER,
            dedupe_key="k2" if i else None,
        )
        for i in range(n_jobs)
    ]
    guard = {
        "none": None,
        "guard": Guard(plugin="a", command="poll", max_outstanding=1),
        "breaker": Guard(plugin="a", command="poll", breaker=BreakerPolicy(threshold=2)),
        "both": Guard(plugin="a", command="poll", max_outstanding=2, breaker=BreakerPolicy(threshold=2)),
    }[guard_kind]
    return lambda s: call(
        lambda: s.fire(
            due=due, next_run=nxt, jobs=jobs, guard=guard, actor=Actor.SCHEDULER, now=now, dedupe_ttl=TTL
        )
    )


async def prepare_reads(model: Store, d: Driver, operation: tuple[Any, ...]) -> Apply:
    plugin, now = operation[1], d.now

    async def reads(s: Store) -> Any:
        return (
            await s.queue_depth(),
            await s.outstanding(plugin, "poll"),
            await s.next_retry_at(),
            await s.running(),
            await s.list_jobs(statuses=[JobStatus.QUEUED, JobStatus.DEAD], plugin=plugin, limit=3),
            await s.due(now - timedelta(minutes=10), now + timedelta(minutes=10)),
            await s.get_breaker(plugin, "poll"),
            await s.get_state(plugin),
        )

    return reads


PREPARE: dict[str, Callable[[Store, Driver, tuple[Any, ...]], Awaitable[Apply]]] = {
    "enqueue": prepare_enqueue,
    "claim": prepare_claim,
    "settle": prepare_settle,
    "process": prepare_settle,
    "claim_one": prepare_claim_one,
    "cancel": prepare_maintenance,
    "retention": prepare_maintenance,
    "recover": prepare_maintenance,
    "reset": prepare_maintenance,
    "plan": prepare_maintenance,
    "unplan": prepare_maintenance,
    "fire": prepare_fire,
    "reads": prepare_reads,
}


async def prepare(model: Store, d: Driver, operation: tuple[Any, ...]) -> Apply:
    """Decide the concrete inputs of ``operation`` once (from the model's state), for any store."""
    return await PREPARE[operation[0]](model, d, operation)


async def differential(operations: list[tuple[Any, ...]], path: Path) -> None:
    fake = InMemoryStore()
    real = await SqliteStore.open(path, synchronous="OFF")
    try:
        driver = Driver()
        for number, operation in enumerate(operations):
            apply_to = await prepare(fake, driver, operation)
            want = await apply_to(fake)
            got = await apply_to(real)
            assert got == want, f"step {number} {operation}: sqlite {got!r} != memory {want!r}"
        assert await everything(real) == await everything(fake)
    finally:
        await real.close()


S, API = SubmittedBy.SCHEDULER, SubmittedBy.API
SCENARIOS: dict[str, list[tuple[Any, ...]]] = {
    "FIFO by created_at, then insertion order": [
        ("enqueue", "a", "poll", None, 2, API, 1),
        ("enqueue", "b", "poll", None, -1, API, 1),
        ("enqueue", "a", "handle", None, -1, API, 1),
        ("claim", 0),
        ("claim", 0),
        ("claim", 0),
        ("claim", 0),
    ],
    "a success within the TTL blocks a new enqueue": [
        ("enqueue", "a", "poll", "k1", 0, API, 1),
        ("claim", 0),
        ("settle", 0, "ok", 0.0),
        ("enqueue", "a", "poll", "k1", 0, API, 1),
        ("enqueue", "a", "handle", "k1", 0, API, 1),
    ],
    "a settled job's process handle is forgotten": [
        ("enqueue", "a", "poll", None, 0, API, 3),
        ("claim", 0),
        ("process", 0),
        ("settle", 0, "fail", 0.0),
        ("claim", 120),
        ("reads", "a"),
    ],
    "the breaker opens, blocks, then admits one probe": [
        ("enqueue", "a", "poll", None, 0, S, 1),
        ("enqueue", "a", "poll", None, 1, S, 1),
        ("claim", 0),
        ("settle", 0, "fail", 0.0),
        ("claim", 0),
        ("settle", 0, "timeout", 0.0),
        ("plan", "s1", 0),
        ("fire", "s1", "breaker", 1, False),
        ("claim", 2000),
        ("fire", "s1", "breaker", 1, False),
        ("fire", "s1", "breaker", 1, False),
        ("reads", "a"),
    ],
    "children are decided while their parent is still running": [
        ("enqueue", "b", "handle", "k1", 0, API, 1),
        ("claim", 0),
        ("settle", 0, "events", 0.0),
        ("settle", 0, "events", 0.0),
        ("reads", "b"),
    ],
    "a given job is claimed at once, even before its retry time": [
        ("enqueue", "a", "poll", None, 0, API, 3),
        ("enqueue", "a", "poll", None, 1, API, 3),
        ("claim", 0),
        ("settle", 0, "fail", 0.5),
        ("claim_one", 0),
        ("claim_one", 0),
        ("claim_one", 1),
        ("reads", "a"),
    ],
    "the poll guard counts queued and running": [
        ("plan", "s2", 0),
        ("enqueue", "a", "poll", None, 0, S, 1),
        ("fire", "s2", "guard", 1, False),
        ("claim", 0),
        ("fire", "s2", "both", 2, False),
        ("fire", "s2", "both", 2, True),
    ],
    "recovery, cancellation and retention": [
        ("enqueue", "a", "poll", None, 0, API, 2),
        ("enqueue", "a", "poll", None, 0, API, 1),
        ("enqueue", "b", "poll", None, 0, API, 1),
        ("claim", 0),
        ("claim", 0),
        ("recover",),
        ("recover",),
        ("cancel", "a"),
        ("claim", 30),
        ("retention", 0),
    ],
}


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_scenario_answers_like_the_in_memory_store(name: str, tmp_path: Path) -> None:
    asyncio.run(differential(SCENARIOS[name], tmp_path / "diff.db"))


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(operations=st.lists(op, min_size=1, max_size=40))
def test_random_operations_answer_like_the_in_memory_store(operations: list[tuple[Any, ...]]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(differential(operations, Path(tmp) / "diff.db"))


def test_version_2_gives_runs_of_a_version_1_database_their_plugin(tmp_path: Path) -> None:
    """Schema v1 -> v2 (runs know their plugin): existing runs are backfilled, so
    ``recent_runs(plugin=...)`` finds runs recorded before the upgrade."""
    path = tmp_path / "v1.db"
    conn = sqlite3.connect(path, isolation_level=None)
    migrate(conn, str(path), MIGRATIONS[:1])
    assert user_version(conn) == 1
    us = int(T0.timestamp() * 1_000_000)
    conn.execute(
        "INSERT INTO jobs (id, plugin, command, payload, status, attempt, max_attempts, submitted_by, "
        "created_at, completed_at) VALUES ('old', 'legacy', 'poll', '{}', 'succeeded', 1, 4, 'api', ?, ?)",
        (us, us + 1_000_000),
    )
    conn.execute(
        "INSERT INTO runs (job_id, attempt, started_at, finished_at, duration, timed_out, stderr_tail, "
        "stdout_head, logs) VALUES ('old', 1, ?, ?, 1.0, 0, x'', x'', '[]')",
        (us, us + 1_000_000),
    )
    conn.close()

    async def main() -> None:
        store = await SqliteStore.open(path)
        try:
            [view] = await store.recent_runs(plugin="legacy")
            assert (view.job.id, view.run.attempt, view.run.finished_at) == (
                "old",
                1,
                T0 + timedelta(seconds=1),
            )
            assert await store.recent_runs(plugin="other") == []
        finally:
            await store.close()

    run(main())
    conn = sqlite3.connect(path)
    assert user_version(conn) == SCHEMA_VERSION >= 2
    conn.close()


def test_version_5_gives_jobs_a_claim_token_and_keeps_a_running_orphan_recoverable(tmp_path: Path) -> None:
    """Schema v4 -> v5 (lanes and the fence): a job left running by the old ductile has
    token 0 and no slot; crash recovery re-queues it, and its next claim takes token 1."""
    path = tmp_path / "v4.db"
    conn = sqlite3.connect(path, isolation_level=None)
    migrate(conn, str(path), MIGRATIONS[:4])
    us = to_us(T0)
    conn.execute(
        "INSERT INTO jobs (id, plugin, command, payload, status, attempt, max_attempts, submitted_by, "
        "created_at, started_at) VALUES ('left', 'legacy', 'poll', '{}', 'running', 1, 4, 'api', ?, ?)",
        (us, us),
    )
    conn.close()

    async def main() -> None:
        store = await SqliteStore.open(path)
        try:
            old = await store.get_job("left")
            assert old is not None
            assert (old.claim_token, old.slot, old.node, old.deadline_at) == (0, None, None, None)
            [settled] = await store.recover(T0 + timedelta(seconds=1))
            assert settled.job.status is JobStatus.QUEUED
            again = await store.claim_next(T0 + timedelta(seconds=2))
            assert again is not None
            assert (again.id, again.claim_token, again.slot) == ("left", 1, 0)
        finally:
            await store.close()

    run(main())
    conn = sqlite3.connect(path)
    assert user_version(conn) == SCHEMA_VERSION >= 5
    conn.close()


def test_the_running_constraints_refuse_a_second_claim_of_a_slot_or_an_identity(tmp_path: Path) -> None:
    """One running job per (plugin, slot) and per dedupe identity, kept by the schema itself:
    a claim that breaks one raises ClaimConflictError and its unit writes nothing."""

    async def main() -> None:
        store = await SqliteStore.open(tmp_path / "c.db")
        try:
            for name, key in (("a", "k"), ("c", None)):
                await store.enqueue(job(name, "p", dedupe_key=key), actor=Actor.API, now=T0, dedupe_ttl=TTL)
            # b shares a's identity: stored past the dedupe decision, as only a bug or a race could
            await store._write("plant", lambda c: SqliteTx(c).insert_job(job("b", "p", dedupe_key="k")))
            first = await store.claim_next(T0)
            assert first is not None
            assert (first.id, first.slot) == ("a", 0)

            def force(job_id: str, slot: int) -> Callable[[sqlite3.Connection], Job]:
                def unit(conn: sqlite3.Connection) -> Job:
                    tx = SqliteTx(conn)
                    queued = tx.get_job(job_id)
                    assert queued is not None
                    claimed, _ = apply(
                        queued,
                        JobEvent.CLAIM,
                        at=T0,
                        actor=Actor.DISPATCHER,
                        reason="x",
                        claim=Claim(slot=slot),
                    )
                    return tx.update_job(claimed, expected=JobStatus.QUEUED, token=0)

                return unit

            with pytest.raises(ClaimConflictError):
                await store._write("same slot", force("c", 0))
            with pytest.raises(ClaimConflictError):
                await store._write("same identity", force("b", 7))
            assert [j.id for j in await store.list_jobs(statuses=[JobStatus.RUNNING])] == ["a"]
            taken = await store._write("free slot", force("c", 1))
            assert (taken.status, taken.slot) == (JobStatus.RUNNING, 1)
        finally:
            await store.close()

    run(main())


def test_version_3_keys_a_version_2_schedule_index_by_plugin_and_schedule_id(tmp_path: Path) -> None:
    """Schema v2 -> v3 (several schedules per plugin): a plugin's planned run becomes its
    ``default`` schedule's (same fingerprint: the grid is kept), its outstanding scheduled jobs
    count for that schedule's poll guard, and old jobs and runs read back as before."""
    path = tmp_path / "v2.db"
    conn = sqlite3.connect(path, isolation_level=None)
    migrate(conn, str(path), MIGRATIONS[:2])
    us = int(T0.timestamp() * 1_000_000)
    conn.execute(
        "INSERT INTO planned (key, fingerprint, nominal_at, planned_at, offset_us, snapped) "
        "VALUES ('legacy', 'fp', ?, ?, 0, 0)",
        (us, us),
    )
    for job_id, who in (("sched", "scheduler"), ("hand", "cli")):
        conn.execute(
            "INSERT INTO jobs (id, plugin, command, payload, status, attempt, max_attempts, submitted_by, "
            "created_at) VALUES (?, 'legacy', 'poll', '{}', 'queued', 1, 4, ?, ?)",
            (job_id, who, us),
        )
    conn.close()

    async def main() -> None:
        store = await SqliteStore.open(path)
        try:
            entry = await store.planned("legacy/default")
            assert entry is not None
            assert (entry.plugin, entry.schedule_id, entry.fingerprint, entry.planned_at) == (
                "legacy",
                "default",
                "fp",
                T0,
            )
            assert await store.planned("legacy") is None
            scheduled, manual = await store.get_job("sched"), await store.get_job("hand")
            assert scheduled is not None
            assert manual is not None
            assert (scheduled.schedule_id, scheduled.route_depth) == ("default", 0)
            assert (manual.schedule_id, manual.route_depth) == (None, 0)
            assert await store.pauses() == []
            assert await store.counts() == {}
        finally:
            await store.close()

    run(main())
