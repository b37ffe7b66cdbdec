"""``GET /jobs`` pages through 10,000 jobs exactly, on real SQLite behind real uvicorn.

Newest first, 500 a page: every job once, in order, even while new jobs
arrive between pages from another process (they are newer than the cursor, so
they belong before the first page and never shift a later one). Filters page
the same way.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx

from ductile.app.bootstrap import Ductile
from ductile.domain.job import Actor, Job, SubmittedBy
from tests.integration.test_api_properties import Served

TOKEN = "paging-token-0123456789"
JOBS = 10_000


def _site(root: Path) -> Path:
    plugins = root / "plugins"
    plugins.mkdir()
    plugins.chmod(0o755)
    config = root / "ductile.yaml"
    config.write_text(
        "service: {state_dir: ./state}\nplugins_dir: ./plugins\n"
        f"api: {{listen: '127.0.0.1:0', tokens: [{{name: p, token: {TOKEN}, scopes: ['*']}}]}}\n"
    )
    return config


async def _fill(config: Path) -> list[str]:
    """10k queued jobs, oldest first, none due before tomorrow: the daemon serving the API
    claims none of them while the test pages (their statuses stay as they are)."""
    async with Ductile(config) as d:
        now = d.engine.clock.now() - timedelta(days=1)
        jobs = [
            Job(id=f"job-{i:05d}", plugin="alpha" if i % 3 else "beta", command="poll",
                submitted_by=SubmittedBy.API, created_at=now + timedelta(milliseconds=i // 2),
                next_retry_at=now + timedelta(days=3))
            for i in range(JOBS)
        ]  # fmt: skip
        store = d.engine.store
        for start in range(0, JOBS, 1000):
            await asyncio.gather(
                *(store.enqueue(j, actor=Actor.API, now=j.created_at, dedupe_ttl=timedelta(0))
                  for j in jobs[start : start + 1000])
            )  # fmt: skip
        return [j.id for j in jobs]


async def _arrive(db: Path, n: int) -> None:
    """A job arrives from another process (as ``ductile run`` writes it): newer than every page."""
    from ductile.adapters.sqlite import SqliteStore
    from ductile.domain.job import Job as J

    store = await SqliteStore.open(db)
    try:
        now = datetime.now(UTC)
        job = J(
            id=f"late-{n}",
            plugin="alpha",
            command="poll",
            submitted_by=SubmittedBy.CLI,
            created_at=now,
            next_retry_at=now + timedelta(days=3),
        )
        await store.enqueue(job, actor=Actor.CLI, now=now, dedupe_ttl=timedelta(0))
    finally:
        await store.close()


def _pages(client: httpx.Client, params: dict[str, str], *, arriving: Path | None = None) -> list[str]:
    seen: list[str] = []
    cursor = None
    while True:
        query = {**params, "limit": "500", **({"cursor": cursor} if cursor else {})}
        response = client.get("/jobs", params=query)
        assert response.status_code == 200, response.text
        doc = response.json()
        seen += [j["id"] for j in doc["jobs"]]
        cursor = doc["next_cursor"]
        if cursor is None:
            return seen
        if arriving is not None:
            asyncio.run(_arrive(arriving, len(seen)))


def test_ten_thousand_jobs_page_exactly(tmp_path: Path) -> None:
    config = _site(tmp_path)
    ids = asyncio.run(_fill(config))
    newest_first = list(reversed(ids))
    served = Served(config)
    try:
        with httpx.Client(
            base_url=f"http://127.0.0.1:{served.port}",
            headers={"Authorization": f"Bearer {TOKEN}"},
            timeout=30,
        ) as client:
            db = tmp_path / "state" / "ductile.db"
            assert _pages(client, {}, arriving=db) == newest_first  # the late ones belong before page one
            late = [f"late-{n}" for n in range(JOBS - 500, 0, -500)]  # after each page but the last
            assert _pages(client, {}) == late + newest_first
            alpha = [i for i in newest_first if int(i[4:]) % 3]
            assert _pages(client, {"plugin": "alpha", "status": "queued"}) == late + alpha
            assert _pages(client, {"plugin": "beta", "command": "nope"}) == []
    finally:
        served.close()
