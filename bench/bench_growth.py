"""Growth: what the SqliteStore costs as the database grows (1k, 100k, 1M jobs), through its API.

    python bench/bench_growth.py [--sizes 1000,100000,1000000] [--samples 150] [--rounds 3]
                                 [--schedules 10000] [--rebuild]

Databases are built fast, straight into the store's schema (``ductile.adapters.sqlite.schema``
migrations, then batched ``executemany`` inserts in one transaction with
synchronous=OFF), and cached next to the bench files keyed by schema version and
size (``--rebuild`` makes them again). A database of N jobs holds N/2 finished
jobs (succeeded, each with its 3 transitions, its run record and a dedupe key)
and N/2 queued jobs (each with its creation transition). Then everything is
measured through ``SqliteStore`` opened as the daemon opens it (WAL,
synchronous=FULL):

* claim + settle: ``claim_next`` then ``settle(ok)``, one job after the other
  (``--samples`` per size per round, sizes alternating), median latency;
* dedupe lookup: ``enqueue`` of a job whose dedupe key matches a succeeded job
  (a duplicate: nothing is written), and of a job with a new key (inserted);
* due schedules: ``due(epoch, now)`` on a schedule index of ``--schedules``
  entries of which 1% are due, and ``all_planned()`` (which the scheduler's
  tick also reads), median of 30.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sqlite3
import statistics
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import closing
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TypeVar

from _common import (
    INSERT_JOB,
    INSERT_RUN,
    INSERT_TRANSITION,
    bench_dir,
    cached_database,
    fast_database,
    heading,
    loadavg,
    machine,
    median,
    table,
    verdict,
)

from ductile.adapters.sqlite import SqliteStore
from ductile.adapters.sqlite.rows import from_us, to_us
from ductile.domain.classify import classify
from ductile.domain.job import Actor, Job
from ductile.domain.outcome import SpawnOutcome
from ductile.domain.settle import SettleContext

NOW = datetime.now(UTC).replace(microsecond=0)
TTL = timedelta(hours=24)
OK = classify(SpawnOutcome(exit_code=0, stdout=b'{"status": "ok"}', duration=0.01))
PLUGINS = [f"plugin-{i}" for i in range(20)]
BATCH = 50_000
T = TypeVar("T")


def _jobs(
    n: int,
) -> Iterator[tuple[list[tuple[object, ...]], list[tuple[object, ...]], list[tuple[object, ...]]]]:
    """Rows in batches: (jobs, transitions, runs). The first half finished, the second queued."""
    base = to_us(NOW - timedelta(hours=12))
    finished = n // 2
    jobs: list[tuple[object, ...]] = []
    transitions: list[tuple[object, ...]] = []
    runs: list[tuple[object, ...]] = []
    for i in range(n):
        job_id = str(uuid.UUID(int=i + 1, version=4))
        plugin = PLUGINS[i % len(PLUGINS)]
        created = base + i * 20  # 20 us apart, in insertion order
        if i < finished:
            started, done = created + 5, created + 10
            jobs.append(
                (
                    job_id,
                    plugin,
                    "poll",
                    "{}",
                    "succeeded",
                    1,
                    4,
                    "scheduler",
                    f"key-{i}",
                    created,
                    started,
                    done,
                )
            )
            transitions += [
                (job_id, None, "queued", "created", "scheduler", created),
                (job_id, "queued", "running", "claimed", "dispatcher", started),
                (job_id, "running", "succeeded", "succeeded", "dispatcher", done),
            ]
            runs.append(
                (job_id, 1, started, done, 0.005, 0, None, 0, None, b"", b'{"status":"ok"}', "[]", plugin)
            )
        else:
            jobs.append(
                (job_id, plugin, "poll", "{}", "queued", 1, 4, "scheduler", None, created, None, None)
            )
            transitions.append((job_id, None, "queued", "created", "scheduler", created))
        if len(jobs) >= BATCH:
            yield jobs, transitions, runs
            jobs, transitions, runs = [], [], []
    if jobs:
        yield jobs, transitions, runs


def build(path: Path, n: int, schedules: int) -> float:
    """Make the database (schema + rows) in one transaction; returns seconds taken."""

    def fill(conn: sqlite3.Connection) -> None:
        for jobs, transitions, runs in _jobs(n):
            conn.executemany(INSERT_JOB, jobs)
            conn.executemany(INSERT_TRANSITION, transitions)
            conn.executemany(INSERT_RUN, runs)
        step = timedelta(days=7) / schedules
        first = NOW - step * (schedules // 100)  # 1% already due
        planned = []
        for i in range(schedules):
            at = to_us(first + step * i)
            planned.append((f"schedule-{i:05d}", f"fp-{i}", at, at, 0, 0))
        conn.executemany(
            "INSERT INTO planned (key, fingerprint, nominal_at, planned_at, offset_us, snapped) "
            "VALUES (?,?,?,?,?,?)",
            planned,
        )

    return fast_database(path, fill)


def cached(n: int, schedules: int, rebuild: bool) -> tuple[Path, float | None]:
    return cached_database(
        f"jobs{n}-schedules{schedules}", lambda path: build(path, n, schedules), rebuild=rebuild
    )


def working_copy(path: Path) -> Path:
    """A copy of a cached database to measure on (it is closed and checkpointed, so a file copy
    is a consistent one); the cache itself is never written by a measurement."""
    copy = path.with_name(f"run-{os.getpid()}-{path.name}")
    shutil.copyfile(path, copy)
    return copy


def reference_instant(path: Path) -> datetime:
    """The instant a database was built for (a cached one may be days old): where 1% of
    its schedules are due, its finished jobs 12 hours old (inside the dedupe TTL)."""
    with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as conn:
        count = conn.execute("SELECT COUNT(*) FROM planned").fetchone()[0]
        (at,) = conn.execute(
            "SELECT planned_at FROM planned ORDER BY planned_at LIMIT 1 OFFSET ?", (count // 100,)
        ).fetchone()
    return from_us(at)


async def timed(samples: list[float], call: Callable[[], Awaitable[T]]) -> T:
    started = time.perf_counter()
    result = await call()
    samples.append(time.perf_counter() - started)
    return result


async def measure(path: Path, samples: int, out: dict[str, list[float]], n: int) -> None:
    now = reference_instant(path)
    store = await SqliteStore.open(path)
    try:
        ctx = SettleContext(now=now)
        await store.queue_depth()
        for _ in range(samples):
            started = time.perf_counter()
            job = await store.claim_next(now)
            if job is None:
                raise RuntimeError(f"{path}: the queue is empty (use --rebuild)")
            await store.settle(job.id, OK, ctx=ctx, dedupe_ttl=TTL, token=job.claim_token)
            out.setdefault("claim+settle", []).append(time.perf_counter() - started)
        finished = n // 2
        for i in range(samples // 3):
            key = f"key-{(i * 7919) % finished}"
            dup = Job(
                id=str(uuid.uuid4()),
                plugin=PLUGINS[(i * 7919) % finished % len(PLUGINS)],
                command="poll",
                dedupe_key=key,
                created_at=now,
            )
            hit = await timed(
                out.setdefault("dedupe hit", []),
                lambda j=dup: store.enqueue(j, actor=Actor.WEBHOOK, now=now, dedupe_ttl=TTL),
            )
            new = Job(
                id=str(uuid.uuid4()),
                plugin="fresh",
                command="poll",
                dedupe_key=str(uuid.uuid4()),
                created_at=now,
            )
            miss = await timed(
                out.setdefault("dedupe miss (insert)", []),
                lambda j=new: store.enqueue(j, actor=Actor.WEBHOOK, now=now, dedupe_ttl=TTL),
            )
            if hit.created or not miss.created:
                raise RuntimeError(f"{path}: expected a duplicate then a new job, got {hit} and {miss}")
    finally:
        await store.close()


async def measure_schedules(path: Path, out: dict[str, list[float]], schedules: int) -> int:
    now = reference_instant(path)
    store = await SqliteStore.open(path)
    try:
        epoch = datetime(1970, 1, 1, tzinfo=UTC)
        due = await store.due(epoch, now)
        for _ in range(30):
            await timed(out.setdefault("due", []), lambda: store.due(epoch, now))
            await timed(out.setdefault("all_planned", []), store.all_planned)
        return len(due)
    finally:
        await store.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1000,100000,1000000")
    parser.add_argument("--samples", type=int, default=150, help="claim+settle per size per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--schedules", type=int, default=10_000)
    parser.add_argument("--rebuild", action="store_true")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    heading("Growth: SqliteStore latency against database size (synchronous=FULL)")
    folder = bench_dir() / "ductile-growth-cache"
    folder.mkdir(exist_ok=True)
    print(machine(folder))
    paths: dict[int, Path] = {}
    for n in sizes:
        path, took = cached(n, args.schedules, args.rebuild)
        paths[n] = path
        size = path.stat().st_size / 2**20
        how = f"built in {took:.1f} s" if took is not None else "cached"
        print(f"database of {n:,} jobs: {size:,.0f} MiB, {how}", flush=True)
    print(
        f"{args.rounds} rounds x {args.samples} claim+settle per size, sizes alternating; medians\n",
        flush=True,
    )
    results: dict[int, dict[str, list[float]]] = {n: {} for n in sizes}
    # Measured on copies: the claims and inserts of a run would drain the cached queue.
    work = {n: working_copy(paths[n]) for n in sizes}
    try:
        for r in range(args.rounds):
            for n in sizes if r % 2 == 0 else sizes[::-1]:
                asyncio.run(measure(work[n], args.samples, results[n], n))
        sched: dict[str, list[float]] = {}
        due_count = asyncio.run(measure_schedules(work[sizes[0]], sched, args.schedules))
    finally:
        for copy in work.values():
            for leftover in (copy, copy.with_name(copy.name + "-wal"), copy.with_name(copy.name + "-shm")):
                leftover.unlink(missing_ok=True)

    def ms(n: int, what: str, q: float = 0.5) -> float:
        values = sorted(results[n][what])
        return (statistics.median(values) if q == 0.5 else values[int(q * (len(values) - 1))]) * 1e3

    small, big = sizes[0], sizes[-1]
    rows = []
    for what in ("claim+settle", "dedupe hit", "dedupe miss (insert)"):
        rows.append(
            (
                what,
                *(f"{ms(n, what):.2f}" for n in sizes),
                *(f"{ms(n, what, 0.9):.2f}" for n in (big,)),
                f"{ms(big, what) / ms(small, what):.2f}",
            )
        )
    print(
        table(
            (
                "operation (ms, median)",
                *(f"{n:,} jobs" for n in sizes),
                f"p90 at {big:,}",
                f"{big:,}/{small:,}",
            ),
            rows,
        )
    )
    ratio = ms(big, "claim+settle") / ms(small, "claim+settle")
    print(f"\nclaim+settle {big:,}/{small:,} = {ratio:.2f}: {verdict(ratio, 1.5, at_least=False)}")
    due_ms = median(sched["due"]) * 1e3
    print(
        f"\nschedule index of {args.schedules:,} entries, {due_count} due: due() {due_ms:.2f} ms "
        f"(p90 {sorted(sched['due'])[int(0.9 * 29)] * 1e3:.2f}); "
        f"all_planned() {median(sched['all_planned']) * 1e3:.2f} ms"
    )
    print(f"due schedules query: {verdict(due_ms, 20, at_least=False)}")
    print(f"load average at the end: {loadavg():.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
