# ruff: noqa: ASYNC110, ASYNC221, ASYNC230, ASYNC240  (a benchmark: blocking on purpose, alone)
"""What the storage hardening costs (issue 19): the start-up integrity check, selfcheck, backup,
the writer's upkeep, and how fast a full disk heals.

Usage: .venv/bin/python bench/bench_storage.py [--jobs 10000,50000] [--rounds 5] [--seq 300]

* **Start-up check.** On databases of each size in ``--jobs`` (every job
  enqueued, claimed and settled: its row, three transitions and a run), the
  store opened as the CLI opens it and as the daemon opens it (``PRAGMA
  quick_check`` first), alternating, medians of ``--rounds``.
* **selfcheck / backup.** ``PRAGMA integrity_check`` in full (what
  ``ductile selfcheck`` runs) and the online backup into a new checked file.
* **Upkeep.** ``--seq`` sequential enqueues (one commit each, FULL) with the
  writer's upkeep as shipped and with it replaced by a no-op, alternating.
* **Healing** (root only: a tmpfs of 4 MiB): fill the disk, fail a write,
  free the space the error names, and time until the store says it accepts
  writes again, without any write asked; medians of ``--rounds``.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import subprocess
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from _common import bench_dir, heading, machine, median, scratch, table

from ductile.adapters.sqlite import SqliteStore
from ductile.adapters.sqlite.database import Database
from ductile.adapters.sqlite.errors import StoreFullError
from ductile.adapters.sqlite.selfcheck import backup, inspect
from ductile.domain.classify import classify
from ductile.domain.job import Actor, Job
from ductile.domain.outcome import SpawnOutcome
from ductile.domain.settle import SettleContext

T0 = datetime(2026, 1, 1, tzinfo=UTC)
TTL = timedelta(hours=24)
OK = classify(SpawnOutcome(exit_code=0, stdout=b'{"status": "ok", "logs": []}', duration=0.01))
BATCH = 250


def job(n: int, payload: int = 200) -> Job:
    return Job(id=f"job-{n:07d}", plugin="bench", command="poll", payload={"x": "y" * payload}, created_at=T0)


async def build(path: Path, jobs: int) -> None:
    """``jobs`` finished jobs, in group commits of ``BATCH``."""
    store = await SqliteStore.open(path, synchronous="NORMAL")
    ctx = SettleContext(now=T0)
    try:
        for start in range(0, jobs, BATCH):
            numbers = range(start, min(jobs, start + BATCH))
            await asyncio.gather(
                *(store.enqueue(job(n), actor=Actor.API, now=T0, dedupe_ttl=TTL) for n in numbers)
            )
            await asyncio.gather(*(store.claim(job(n).id, T0) for n in numbers))
            await asyncio.gather(*(store.settle(job(n).id, OK, ctx=ctx, dedupe_ttl=TTL) for n in numbers))
    finally:
        await store.close()


async def open_close(path: Path, check: bool) -> float:
    started = time.perf_counter()
    store = await SqliteStore.open(path, integrity_check=check)
    took = time.perf_counter() - started
    await store.close()
    return took


def timed(fn: object) -> float:
    started = time.perf_counter()
    fn()  # type: ignore[operator]
    return time.perf_counter() - started


async def sizes(work: Path, counts: list[int], rounds: int) -> None:
    rows = []
    for count in counts:
        path = work / f"db-{count}.db"
        await build(path, count)
        plain, checked = [], []
        for r in range(rounds):
            for check in (False, True) if r % 2 == 0 else (True, False):
                (checked if check else plain).append(await open_close(path, check))
        full = [timed(lambda path=path: inspect(path, daemon_running=False)) for _ in range(rounds)]
        copies = []
        for r in range(rounds):
            target = work / f"backup-{count}-{r}.db"
            copies.append(timed(lambda target=target, path=path: backup(path, target)))
            target.unlink()
        size = path.stat().st_size / (1024 * 1024)
        rows.append(
            (
                f"{count:,} jobs ({size:.1f} MiB)",
                median(plain) * 1000,
                median(checked) * 1000,
                median(checked) / median(plain),
                median(full) * 1000,
                median(copies) * 1000,
            )
        )
    print(
        table(
            (
                "database",
                "open (ms)",
                "open + quick_check (ms)",
                "ratio",
                "selfcheck (ms)",
                "backup (ms)",
            ),
            rows,
        )
    )


async def upkeep_cost(work: Path, seq: int, rounds: int) -> None:
    shipped = Database.upkeep
    results: dict[str, list[float]] = {"upkeep as shipped": [], "upkeep off": []}
    for r in range(rounds):
        for name in (
            ("upkeep as shipped", "upkeep off") if r % 2 == 0 else ("upkeep off", "upkeep as shipped")
        ):
            Database.upkeep = shipped if name == "upkeep as shipped" else (lambda self, conn, idle: conn)  # type: ignore[method-assign]
            path = work / f"upkeep-{r}-{name.replace(' ', '-')}.db"
            store = await SqliteStore.open(path)
            started = time.perf_counter()
            for n in range(seq):
                await store.enqueue(job(n, 10), actor=Actor.API, now=T0, dedupe_ttl=TTL)
            results[name].append(seq / (time.perf_counter() - started))
            await store.close()
    Database.upkeep = shipped  # type: ignore[method-assign]
    on, off = median(results["upkeep as shipped"]), median(results["upkeep off"])
    print(table(("sequential enqueues, FULL", "ops/s"), [(k, median(v)) for k, v in results.items()]))
    print(f"\nratio shipped/off: {on / off:.3f}")


async def healing(rounds: int) -> None:
    if os.geteuid() != 0:
        print("skipped: mounting a tmpfs needs root")
        return
    latencies, needs = [], []
    for _ in range(rounds):
        mount = Path(tempfile.mkdtemp(prefix="ductile-heal-"))
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m,mode=0700", "tmpfs", str(mount)], check=True)
        try:
            store = await SqliteStore.open(mount / "ductile.db")
            for n in range(150):
                await store.enqueue(job(n, 3000), actor=Actor.API, now=T0, dedupe_ttl=TTL)
            filler = mount / "filler"
            with open(filler, "wb", buffering=0) as f:
                try:
                    while True:
                        f.write(b"\0" * 65536)
                except OSError:
                    pass
            needed = None
            for n in range(150, 2000):
                try:
                    await store.enqueue(job(n, 3000), actor=Actor.API, now=T0, dedupe_ttl=TTL)
                except StoreFullError as e:
                    needed = e.needed
                    break
            assert needed is not None
            os.truncate(filler, max(0, filler.stat().st_size - (-(-needed // 4096) * 4096)))
            started = time.perf_counter()
            while store.write_fault() is not None:
                await asyncio.sleep(0.005)
            latencies.append(time.perf_counter() - started)
            needs.append(needed / 1024)
            await store.close()
        finally:
            subprocess.run(["umount", "-l", str(mount)], check=False)
            mount.rmdir()
    print(
        table(
            ("full disk, the named space freed", "median", "min", "max"),
            [
                (
                    "until writes work again (ms)",
                    median(latencies) * 1000,
                    min(latencies) * 1000,
                    max(latencies) * 1000,
                ),
                ("space the error named (KiB)", median(needs), min(needs), max(needs)),
            ],
        )
    )


async def main() -> None:
    quiet = logging.getLogger("ductile")  # the store's own lines (a full disk, on purpose) are not results
    quiet.propagate = False
    quiet.addHandler(logging.NullHandler())
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jobs", default="10000,50000")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seq", type=int, default=300)
    args = parser.parse_args()
    with scratch("ductile-bench-storage-") as work:
        print(machine(bench_dir()))
        heading("start-up check, selfcheck and backup")
        await sizes(work, [int(c) for c in args.jobs.split(",")], args.rounds)
        heading("the writer's upkeep")
        await upkeep_cost(work, args.seq, args.rounds)
        heading("healing a full disk (tmpfs)")
        await healing(args.rounds)


if __name__ == "__main__":
    asyncio.run(main())
