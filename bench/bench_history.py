"""Growth of the read paths (issue 18, goal 7): API job pages and the dashboard's overview with
1M jobs in history against 1k, server time.

    python bench/bench_history.py [--sizes 1000,1000000] [--repeat 15] [--rebuild] [--plans]

A database of N jobs in history is built fast, straight into the store's schema
(like bench_growth's) and cached by schema version and size for a day: jobs of 20 plugins
over the last 3 days, nine in ten succeeded and one in ten dead, each with its
run record; 5 queued and 2 running. A site with those plugins and an API token
is opened on a copy of it (``Ductile(config, listen=False)``: the real API app
and dashboard), and each page is asked for in-process through the ASGI app (no
socket): the time is the server's, from the request to the last byte. Sizes
alternate page by page; medians of ``--repeat`` requests after one warm-up each.
``--plans`` prints SQLite's query plan of each job listing shape.
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
from contextlib import AsyncExitStack, closing
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import yaml
from _common import (
    INSERT_RUN,
    cached_database,
    fast_database,
    goal_row,
    heading,
    machine,
    median,
    scratch,
    sh_plugin,
    table,
    write_site,
)

from ductile import Ductile
from ductile.adapters.sqlite.rows import to_us

TOKEN = "bench-history-token-0123456789abcdef"
PLUGINS = [f"plugin-{i}" for i in range(20)]
BATCH = 50_000
GOAL_RATIO, GOAL_MS = 1.5, 50.0
#: Seconds a cached database is used for.
MAX_AGE = 86_400
PAGES = {
    "7a": ("GET /jobs newest 50", "/jobs"),
    # A status the plugin has none of: the listing must not read the plugin's whole history.
    "7b": ("GET /jobs?plugin=plugin-3&status=failed", "/jobs?plugin=plugin-3&status=failed"),
    "7c": ("dashboard overview /ui/", "/ui/"),
}
EXTRA = {
    "GET /jobs?plugin=plugin-3&status=dead (50 at 1M, 5 at 1k)": "/jobs?plugin=plugin-3&status=dead",
    # A page of the same length at both sizes: at 1k jobs plugin-3 has 5 dead ones.
    "GET /jobs?plugin=plugin-3&status=dead&limit=5": "/jobs?plugin=plugin-3&status=dead&limit=5",
    "GET /jobs?status=dead": "/jobs?status=dead",
    "GET /jobs?plugin=plugin-3": "/jobs?plugin=plugin-3",
    "dashboard job list /ui/jobs": "/ui/jobs",
}

Rows = list[tuple[object, ...]]


def _rows(n: int, end: int) -> Iterator[tuple[Rows, Rows]]:
    """(jobs, runs) in batches; created over the 3 days before ``end`` (us)."""
    step = to_us(datetime(1970, 1, 4, tzinfo=UTC)) // max(n, 1)
    jobs: Rows = []
    runs: Rows = []
    for i in range(n):
        job_id = str(uuid.UUID(int=i + 1, version=4))
        plugin = PLUGINS[i % len(PLUGINS)]
        created = end - (n - i) * step
        started, done = created + 1000, created + 2000
        if i >= n - 7:
            status = "queued" if i < n - 2 else "running"
            jobs.append(
                (job_id, plugin, "poll", "{}", status, 1, 4, "scheduler", None, created, None, None, None)
            )
            continue
        dead = (i // len(PLUGINS)) % 10 == 0  # one in ten of every plugin's jobs
        jobs.append(
            (
                job_id,
                plugin,
                "poll",
                "{}",
                "dead" if dead else "succeeded",
                1,
                1 if dead else 4,
                "scheduler",
                None,
                created,
                started,
                done,
                "upstream said no" if dead else None,
            )
        )
        out = b'{"status": "error", "error": "no", "retry": false}' if dead else b'{"status": "ok"}'
        runs.append((job_id, 1, started, done, 0.001, 0, None, 0, None, b"", out, "[]", plugin))
        if len(jobs) >= BATCH:
            yield jobs, runs
            jobs, runs = [], []
    yield jobs, runs


def build(path: Path, n: int) -> float:
    end = to_us(datetime.now(UTC))

    def fill(conn: sqlite3.Connection) -> None:
        for jobs, runs in _rows(n, end):
            conn.executemany(
                "INSERT INTO jobs (id, plugin, command, payload, status, attempt, max_attempts, "
                "submitted_by, dedupe_key, created_at, started_at, completed_at, last_error) "
                "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                jobs,
            )
            conn.executemany(INSERT_RUN, runs)

    return fast_database(path, fill)


def cached(n: int, rebuild: bool) -> tuple[Path, float | None]:
    # Its jobs are of the 3 days before it was built: a week later, "the last 24 h" is empty.
    return cached_database(f"history{n}", lambda path: build(path, n), rebuild=rebuild, max_age=MAX_AGE)


def site(root: Path, db: Path) -> Path:
    config = write_site(root, {p: sh_plugin() for p in PLUGINS})
    doc = yaml.safe_load(config.read_text())
    doc["api"] = {"listen": "127.0.0.1:0", "tokens": [{"name": "bench", "token": TOKEN, "scopes": ["*"]}]}
    config.write_text(yaml.safe_dump(doc, sort_keys=False))
    (root / "state").mkdir()
    shutil.copyfile(db, root / "state" / "ductile.db")
    return config


async def client(stack: AsyncExitStack, config: Path) -> httpx.AsyncClient:
    instance = await stack.enter_async_context(Ductile(config, listen=False))
    transport = httpx.ASGITransport(app=instance.api_app)
    http = await stack.enter_async_context(httpx.AsyncClient(transport=transport, base_url="http://bench"))
    signed = await http.post("/ui/login", data={"token": TOKEN})
    assert signed.status_code == 303, signed.text
    http.headers["Authorization"] = f"Bearer {TOKEN}"
    return http


async def timed(http: httpx.AsyncClient, path: str) -> float:
    t = time.perf_counter()
    response = await http.get(path)
    took = (time.perf_counter() - t) * 1000
    assert response.status_code == 200, (path, response.status_code, response.text[:300])
    return took


async def measure(
    dbs: dict[int, Path], paths: dict[str, str], repeat: int
) -> dict[str, dict[int, list[float]]]:
    out: dict[str, dict[int, list[float]]] = {name: {n: [] for n in dbs} for name in paths}
    with scratch("ductile-bench-history-") as root:
        async with AsyncExitStack() as stack:
            clients = {}
            for n, db in dbs.items():
                (root / str(n)).mkdir()
                clients[n] = await client(stack, site(root / str(n), db))
            for name, path in paths.items():
                for http in clients.values():
                    await timed(http, path)  # warm-up
                for r in range(repeat):
                    for n in dbs if r % 2 == 0 else list(dbs)[::-1]:
                        out[name][n].append(await timed(clients[n], path))
    return out


def plans(db: Path) -> None:
    from ductile.adapters.sqlite.queries import find_jobs_statement
    from ductile.domain.job import JobStatus
    from ductile.ports.store_values import JobQuery

    now = datetime.now(UTC)
    queries = {
        "newest 50": JobQuery(limit=50),
        "plugin + dead": JobQuery(plugin="plugin-3", statuses=frozenset({JobStatus.DEAD}), limit=50),
        "plugin + dead or succeeded": JobQuery(
            plugin="plugin-3", statuses=frozenset({JobStatus.DEAD, JobStatus.SUCCEEDED}), limit=50
        ),
        "plugin + failed": JobQuery(plugin="plugin-3", statuses=frozenset({JobStatus.FAILED}), limit=50),
        "dead, 24h": JobQuery(
            statuses=frozenset({JobStatus.DEAD}), since=now - timedelta(hours=24), limit=20
        ),
        "running": JobQuery(statuses=frozenset({JobStatus.RUNNING}), limit=20),
    }
    with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
        for name, q in queries.items():
            sql, params = find_jobs_statement(q)
            plan = conn.execute("EXPLAIN QUERY PLAN " + sql, params).fetchall()
            print(f"{name}: {'; '.join(str(row[3]) for row in plan)}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1000,1000000")
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--rebuild", action="store_true")
    parser.add_argument("--plans", action="store_true")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    heading("Read paths against history size: server ms per page (API app and dashboard, in-process)")
    dbs: dict[int, Path] = {}
    for n in sizes:
        dbs[n], took = cached(n, args.rebuild)
        how = f"built in {took:.1f} s" if took is not None else "cached"
        print(f"database of {n:,} jobs: {dbs[n].stat().st_size / 2**20:,.0f} MiB, {how}", flush=True)
    print(machine(dbs[sizes[-1]].parent))
    if args.plans:
        plans(dbs[sizes[-1]])
    paths = {name: path for name, path in PAGES.values()} | EXTRA
    results = asyncio.run(measure(dbs, paths, args.repeat))
    small, big = sizes[0], sizes[-1]
    rows: list[tuple[Any, ...]] = []
    for name in paths:
        ms = {n: median(results[name][n]) for n in sizes}
        rows.append((name, *(f"{ms[n]:.1f}" for n in sizes), f"{ms[big] / ms[small]:.2f}"))
    print(table(("page (server ms, median)", *(f"{n:,} jobs" for n in sizes), f"{big:,}/{small:,}"), rows))
    for goal, (name, _) in PAGES.items():
        small_ms, big_ms = median(results[name][small]), median(results[name][big])
        ratio = big_ms / small_ms
        goal_row(
            goal,
            f"{name}, {big:,} vs {small:,} jobs",
            f"{ratio:.2f}x, {big_ms:.1f} ms",
            f"<= {GOAL_RATIO:g}x and <= {GOAL_MS:g} ms",
            met=ratio <= GOAL_RATIO and big_ms <= GOAL_MS,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
