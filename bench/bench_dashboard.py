"""The dashboard's pages with 100,000 jobs in the store: server time per page (goal < 100 ms).

    python bench/bench_dashboard.py [--jobs 100000] [--repeat 9]

A real SQLite store (filled with ``synchronous=OFF``: filling is not what is
measured) holding ``--jobs`` finished jobs with their runs (one in ten dead,
with a stderr tail), a few queued, two plugins, one scheduled every 10 minutes.
Each page is asked for in-process through the API's ASGI app (no socket), signed
in with a token: the time is the server's, from the request to the last byte.
Medians of ``--repeat`` requests, after one warm-up request per page.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import yaml
from _common import heading, machine, median, scratch, sh_plugin, spread, table, verdict, write_site

from ductile import Ductile
from ductile.adapters.sqlite import SqliteStore
from ductile.domain.classify import classify
from ductile.domain.job import Actor, Job
from ductile.domain.outcome import SpawnOutcome
from ductile.domain.settle import SettleContext

TOKEN = "bench-dashboard-token-0123456789"
T0 = datetime.now(UTC) - timedelta(days=3)
STDERR = b"Traceback (most recent call last):\n  ...\nValueError: upstream said no\n" * 10
OK = classify(SpawnOutcome(exit_code=0, stdout=b'{"status": "ok"}', stderr_tail=b"fine\n"))
DEAD = classify(
    SpawnOutcome(
        exit_code=0, stdout=b'{"status": "error", "error": "no", "retry": false}', stderr_tail=STDERR
    )
)
GOAL_MS = 100.0


async def fill(db: Path, jobs: int) -> str:
    """``jobs`` finished jobs over the last three days; the id of a dead one."""
    store = await SqliteStore.open(db, synchronous="OFF")
    try:
        step = timedelta(days=3) / jobs
        batch = 5000
        for first in range(0, jobs, batch):
            fill = [
                Job(id=f"j{i:07d}", plugin="ab"[i % 2], command="poll", created_at=T0 + i * step)
                for i in range(first, min(first + batch, jobs))
            ]
            await asyncio.gather(
                *(store.enqueue(j, actor=Actor.API, now=j.created_at, dedupe_ttl=timedelta(0)) for j in fill)
            )

            async def worker() -> None:
                while (job := await store.claim_next(T0 + timedelta(days=30))) is not None:
                    verdict_ = DEAD if int(job.id[1:]) % 10 == 0 else OK
                    await store.settle(
                        job.id, verdict_, ctx=SettleContext(now=job.created_at), dedupe_ttl=timedelta(0)
                    )

            await asyncio.gather(*(worker() for _ in range(16)))
        for i in range(5):  # a few queued
            queued = Job(id=f"q{i}", plugin="a", command="poll", created_at=T0 + timedelta(days=3))
            await store.enqueue(queued, actor=Actor.API, now=queued.created_at, dedupe_ttl=timedelta(0))
    finally:
        await store.close()
    return f"j{(jobs - 1) // 10 * 10:07d}"


async def main(jobs: int, repeat: int) -> None:
    with scratch("ductile-bench-dashboard-") as root:
        config = write_site(
            root, {"a": sh_plugin(), "b": sh_plugin()}, settings={"a": {"schedule": {"every": "10m"}}}
        )
        doc = yaml.safe_load(config.read_text())
        doc["api"] = {"listen": "127.0.0.1:0", "tokens": [{"name": "bench", "token": TOKEN, "scopes": ["*"]}]}
        config.write_text(yaml.safe_dump(doc, sort_keys=False))
        (root / "state").mkdir()
        started = time.perf_counter()
        dead = await fill(root / "state" / "ductile.db", jobs)
        filled = time.perf_counter() - started
        pages = {
            "overview": "/ui/",
            "jobs (newest 50)": "/ui/jobs",
            "jobs: dead, plugin a, 24h": "/ui/jobs?status=dead&plugin=a&since=24h",
            "jobs: text found nowhere (reads all)": "/ui/jobs?q=found-nowhere",
            "job page (dead, stderr)": f"/ui/job/{dead}",
            "plugins": "/ui/plugins",
            "plugin page": "/ui/plugin/a",
            "schedule, 7 days": "/ui/schedule?hours=168",
        }
        rows = []
        async with Ductile(config, listen=False) as instance:
            transport = httpx.ASGITransport(app=instance.api_app)
            async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
                signed = await client.post("/ui/login", data={"token": TOKEN})
                assert signed.status_code == 303, signed.text
                for name, path in pages.items():
                    first = await client.get(path)
                    assert first.status_code == 200, (path, first.status_code, first.text[:300])
                    times = []
                    for _ in range(repeat):
                        t = time.perf_counter()
                        response = await client.get(path)
                        times.append((time.perf_counter() - t) * 1000)
                        assert response.status_code == 200
                    ms = median(times)
                    rows.append([name, f"{ms:.1f}", spread(times), verdict(ms, GOAL_MS, at_least=False)])
    heading(
        f"dashboard pages with {jobs:,} jobs in SQLite (filled in {filled:.0f}s): "
        f"server ms, median of {repeat}"
    )
    print(table(["page", "ms", "min-max", f"< {GOAL_MS:.0f} ms"], rows))


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=9)
    args = parser.parse_args()
    print(machine())
    asyncio.run(main(args.jobs, args.repeat))
