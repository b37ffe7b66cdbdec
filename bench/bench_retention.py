"""Retention of a big backlog (issue 18, goal 8): the longest stall of the dispatcher's writes.

    python bench/bench_retention.py [--jobs 1000000] [--chunk 100] [--variants chunked,one-step]
                                    [--idle-cap 30] [--rebuild]

A SQLite database of ``--jobs`` finished jobs, all expired (completed 40 days
ago), each with its 3 transitions, its run record and 3 activity entries, is
built fast straight into the store's schema and cached (like bench_growth's,
keyed by schema version and size; ``--rebuild`` makes it again). Each variant
runs on a fresh copy, opened as the daemon opens it (WAL, synchronous=FULL):

* ``chunked``: the scheduler's retention, steps of ``--chunk`` jobs
  (``delete_finished(cutoff, limit=chunk)`` until ``done``);
* ``one-step``: everything in one unit (``delete_finished(cutoff)``: what
  retention did before ADR 0064, one transaction on the one writer).

Meanwhile a dispatcher-like task runs the daemon's write units one after the
other on the same store (``enqueue``, ``claim_next``, ``settle`` of a fresh
job); the longest of those writes is the *stall* a dispatcher would have seen.
Then the same writes run alone as long again (at most ``--idle-cap`` s): what
this machine makes them cost without retention.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sqlite3
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

from _common import (
    INSERT_JOB,
    INSERT_RUN,
    INSERT_TRANSITION,
    cached_database,
    fast_database,
    goal_row,
    heading,
    loadavg,
    machine,
    table,
)

from ductile.adapters.sqlite import SqliteStore
from ductile.adapters.sqlite.rows import to_us
from ductile.app.scheduler import RETENTION_CHUNK
from ductile.domain.classify import classify
from ductile.domain.job import Actor, Job
from ductile.domain.outcome import SpawnOutcome
from ductile.domain.settle import SettleContext

NOW = datetime.now(UTC).replace(microsecond=0)
AGE = timedelta(days=40)
RETENTION = timedelta(days=30)
OK = classify(SpawnOutcome(exit_code=0, stdout=b'{"status": "ok"}', duration=0.01))
PLUGINS = [f"plugin-{i}" for i in range(20)]
BATCH = 50_000
GOAL_MS = 50.0

Rows = list[tuple[object, ...]]


def _rows(n: int) -> Iterator[tuple[Rows, Rows, Rows, Rows]]:
    """(jobs, transitions, runs, activity) in batches: ``n`` succeeded jobs, 20 us apart."""
    base = to_us(NOW - AGE)
    jobs: Rows = []
    transitions: Rows = []
    runs: Rows = []
    activity: Rows = []
    for i in range(n):
        job_id = str(uuid.UUID(int=i + 1, version=4))
        plugin = PLUGINS[i % len(PLUGINS)]
        created = base + i * 20
        started, done = created + 5, created + 10
        jobs.append(
            (job_id, plugin, "poll", "{}", "succeeded", 1, 4, "scheduler", f"key-{i}", created, started, done)
        )
        transitions += [
            (job_id, None, "queued", "created", "scheduler", created),
            (job_id, "queued", "running", "claimed", "dispatcher", started),
            (job_id, "running", "succeeded", "succeeded", "dispatcher", done),
        ]
        runs.append(
            (job_id, 1, started, done, 0.005, 0, None, 0, None, b"", b'{"status":"ok"}', "[]", plugin)
        )
        activity += [
            ("job.queued", created, plugin, "poll", job_id, "{}"),
            ("job.started", started, plugin, "poll", job_id, "{}"),
            ("job.succeeded", done, plugin, "poll", job_id, "{}"),
        ]
        if len(jobs) >= BATCH:
            yield jobs, transitions, runs, activity
            jobs, transitions, runs, activity = [], [], [], []
    if jobs:
        yield jobs, transitions, runs, activity


def build(path: Path, n: int) -> float:
    """Make the database in one transaction (synchronous=OFF); seconds taken."""

    def fill(conn: sqlite3.Connection) -> None:
        for jobs, transitions, runs, activity in _rows(n):
            conn.executemany(INSERT_JOB, jobs)
            conn.executemany(INSERT_TRANSITION, transitions)
            conn.executemany(INSERT_RUN, runs)
            conn.executemany(
                "INSERT INTO activity (kind, at, plugin, command, job_id, data) VALUES (?,?,?,?,?,?)",
                activity,
            )

    return fast_database(path, fill)


def cached(n: int, rebuild: bool) -> tuple[Path, float | None]:
    return cached_database(f"expired{n}", lambda path: build(path, n), rebuild=rebuild)


async def dispatcher(store: SqliteStore, stop: asyncio.Event, samples: list[float]) -> None:
    """The daemon's write units, one after the other, each timed."""
    while not stop.is_set():
        now = datetime.now(UTC)
        job = Job(id=str(uuid.uuid4()), plugin="busy", command="poll", created_at=now)
        t = time.perf_counter()
        await store.enqueue(job, actor=Actor.API, now=now, dedupe_ttl=timedelta(0))
        samples.append(time.perf_counter() - t)
        t = time.perf_counter()
        claimed = await store.claim_next(now)
        samples.append(time.perf_counter() - t)
        if claimed is None:
            raise RuntimeError("the job just enqueued was not claimable")
        t = time.perf_counter()
        await store.settle(
            claimed.id, OK, ctx=SettleContext(now=now), dedupe_ttl=timedelta(0), token=claimed.claim_token
        )
        samples.append(time.perf_counter() - t)
        await asyncio.sleep(0.001)  # a dispatcher waits for its plugin between two jobs


async def run_variant(path: Path, chunk: int | None, idle_cap: float) -> dict[str, float]:
    """Retention with the dispatcher's writes running; then those writes alone, as long again
    (at most ``idle_cap`` seconds): what this machine's disk and load make them cost anyway."""
    store = await SqliteStore.open(path)
    try:
        busy: list[float] = []
        stop = asyncio.Event()
        task = asyncio.create_task(dispatcher(store, stop, busy))
        cutoff = NOW - RETENTION
        started = time.perf_counter()
        deleted, step_times = 0, []
        while True:
            t = time.perf_counter()
            pruned = await store.delete_finished(cutoff, limit=chunk)
            step_times.append(time.perf_counter() - t)
            deleted += pruned.jobs
            if pruned.done:
                break
        took = time.perf_counter() - started
        stop.set()
        await task
        idle: list[float] = []
        stop = asyncio.Event()
        task = asyncio.create_task(dispatcher(store, stop, idle))
        await asyncio.sleep(min(took, idle_cap))
        stop.set()
        await task
    finally:
        await store.close()
    busy.sort()
    step_times.sort()
    return {
        "deleted": deleted,
        "steps": len(step_times),
        "seconds": took,
        "rows/s": deleted / took,
        "stall ms": busy[-1] * 1e3,
        "p99 ms": _q(busy, 0.99) * 1e3,
        "writes": len(busy),
        "over": sum(1 for b in busy if b * 1e3 > GOAL_MS),
        "idle over": sum(1 for b in idle if b * 1e3 > GOAL_MS),
        "idle writes": len(idle),
        "idle max ms": max(idle) * 1e3,
        "idle p99 ms": _q(sorted(idle), 0.99) * 1e3,
        "step ms": _q(step_times, 0.5) * 1e3,
        "step p99 ms": _q(step_times, 0.99) * 1e3,
    }


def _q(ordered: list[float], q: float) -> float:
    return ordered[int(q * (len(ordered) - 1))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=200_000)
    parser.add_argument("--chunk", type=int, default=RETENTION_CHUNK, help="jobs per step")
    parser.add_argument("--variants", default="chunked,one-step")
    parser.add_argument("--idle-cap", type=float, default=30.0, help="longest idle measurement, seconds")
    parser.add_argument("--rebuild", action="store_true")
    args = parser.parse_args()
    heading(
        f"Retention of {args.jobs:,} expired jobs: the longest dispatcher write meanwhile (synchronous=FULL)"
    )
    path, took = cached(args.jobs, args.rebuild)
    print(machine(path.parent))
    how = f"built in {took:.1f} s" if took is not None else "cached"
    print(f"database: {path.stat().st_size / 2**20:,.0f} MiB, {how}\n", flush=True)
    results = {}
    for variant in args.variants.split(","):
        chunk = {"chunked": args.chunk, "one-step": None}[variant]
        copy = path.with_name(f"run-{variant}-{path.name}")
        shutil.copyfile(path, copy)
        try:
            results[variant] = asyncio.run(run_variant(copy, chunk, args.idle_cap))
        finally:
            for leftover in (copy, Path(f"{copy}-wal"), Path(f"{copy}-shm")):
                leftover.unlink(missing_ok=True)
    rows = [
        (
            f"{v} ({'steps of ' + str(args.chunk) if v == 'chunked' else 'one transaction'})",
            r["steps"],
            f"{r['seconds']:.1f}",
            f"{r['rows/s']:,.0f}",
            f"{r['step ms']:.1f} / {r['step p99 ms']:.1f}",
            f"{r['stall ms']:.1f}",
            f"{r['p99 ms']:.1f}",
            f"{r['over']} of {r['writes']:,}",
            f"{r['idle max ms']:.1f}",
            f"{r['idle p99 ms']:.1f}",
            f"{r['idle over']} of {r['idle writes']:,}",
        )
        for v, r in results.items()
    ]
    print(
        table(
            (
                "retention",
                "steps",
                "s",
                "jobs/s",
                "step ms median / p99",
                "longest write ms",
                "p99 write ms",
                f"writes > {GOAL_MS:g} ms",
                "then alone: longest ms",
                "p99 ms",
                f"> {GOAL_MS:g} ms",
            ),
            rows,
        )
    )
    if "chunked" in results:
        stall = results["chunked"]["stall ms"]
        before = results.get("one-step")
        was = f" (one step: {before['stall ms']:,.0f} ms)" if before else ""
        alone = results["chunked"]["idle max ms"]
        goal_row(
            "8",
            f"retention of {args.jobs:,} expired jobs: longest dispatcher stall",
            f"{stall:.0f} ms{was}; same writes alone: {alone:.0f} ms; "
            f"{results['chunked']['rows/s']:,.0f} jobs/s",
            f"<= {GOAL_MS:g} ms",
            met=stall <= GOAL_MS,
        )
    print(f"load average at the end: {loadavg():.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
