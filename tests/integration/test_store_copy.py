"""``ductile store copy``: a SQLite installation moved into PostgreSQL, whole, or refused untouched."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg

from ductile.adapters.postgres.cluster import instance_name
from ductile.adapters.postgres.store import PostgresStore
from ductile.adapters.sqlite import SqliteStore
from ductile.domain.breaker import BreakerPolicy
from ductile.domain.classify import classify
from ductile.domain.job import Actor
from ductile.domain.schedule import PlannedRun
from ductile.domain.settle import SettleContext
from ductile.fakes import spawner
from tests.support import builders
from tests.support.plugins import gated
from tests.support.site import Site

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
TTL = timedelta(hours=1)


async def fill(path: Path) -> dict[str, object]:
    """A history worth copying: a success with state, a failure re-queued, a queued job, a breaker, a plan."""
    store = await SqliteStore.open(path)
    try:
        for n in range(3):
            await store.enqueue(
                builders.job(f"j{n}", "echo", created_at=T0 + timedelta(seconds=n), dedupe_key=f"k{n}"),
                actor=Actor.CLI,
                now=T0,
                dedupe_ttl=TTL,
            )
        first = await store.claim_next(T0)
        assert first is not None
        await store.settle(
            first.id,
            classify(spawner.ok(state_updates={"cursor": 7})),
            ctx=SettleContext(now=T0),
            dedupe_ttl=TTL,
            token=first.claim_token,
        )
        second = await store.claim_next(T0)
        assert second is not None
        await store.settle(
            second.id,
            classify(spawner.error("flaky")),
            ctx=SettleContext(now=T0, breaker=BreakerPolicy(threshold=5)),
            dedupe_ttl=TTL,
            token=second.claim_token,
        )
        plan = PlannedRun(key="echo", fingerprint="f", nominal_at=T0, planned_at=T0, offset=timedelta(0))
        await store.put_planned(plan)
        return {
            "jobs": await store.list_jobs(limit=100),
            "transitions": {j: await store.transitions(j) for j in ("j0", "j1", "j2")},
            "runs": await store.runs("j0"),
            "state": await store.get_state("echo"),
            "planned": await store.all_planned(),
        }
    finally:
        await store.close()


async def read_back(url: str) -> dict[str, object]:
    store = await PostgresStore.open(url, instance=instance_name("/nowhere"))
    try:
        return {
            "jobs": await store.list_jobs(limit=100),
            "transitions": {j: await store.transitions(j) for j in ("j0", "j1", "j2")},
            "runs": await store.runs("j0"),
            "state": await store.get_state("echo"),
            "planned": await store.all_planned(),
        }
    finally:
        await store.close()


def test_a_copy_takes_everything_and_a_daemon_carries_on_from_it(site: Site, pg_url: str) -> None:
    site.state.mkdir(mode=0o700)
    before = asyncio.run(fill(site.db_path))
    done = site.cli("store", "copy", "--from", f"sqlite:{site.state}", "--to", pg_url)
    assert done.returncode == 0, done.stderr
    assert "copied 3 job(s)" in done.stdout
    after = asyncio.run(read_back(pg_url))
    assert after == before
    # a second copy would merge two histories: refused, nothing written
    again = site.cli("store", "copy", "--from", f"sqlite:{site.db_path}", "--to", pg_url)
    assert again.returncode == 1
    assert "already holds 3 row(s) in jobs" in again.stderr
    assert asyncio.run(read_back(pg_url)) == before


def test_a_copy_refuses_a_running_job_and_a_running_daemon(site: Site, pg_url: str) -> None:
    site.plugin("echo", gated(site, "echo"))  # runs until the test (or the teardown) releases it
    site.write_config({})
    site.state.mkdir(mode=0o700)

    async def claim_one() -> None:
        store = await SqliteStore.open(site.db_path)
        try:
            await store.enqueue(builders.job("r1", "echo"), actor=Actor.CLI, now=T0, dedupe_ttl=TTL)
            assert await store.claim_next(T0) is not None
        finally:
            await store.close()

    asyncio.run(claim_one())
    done = site.cli("store", "copy", "--from", f"sqlite:{site.db_path}", "--to", pg_url)
    assert done.returncode == 1
    assert "1 job(s) are running" in done.stderr
    daemon = site.start()  # its recovery re-queues r1 and runs it (gated): it holds the lock meanwhile
    refused = site.cli("store", "copy", "--from", f"sqlite:{site.state}", "--to", pg_url)
    assert refused.returncode == 1
    assert f"a daemon (pid {daemon.pid}) is running" in refused.stderr
    with psycopg.connect(pg_url, autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM jobs").fetchone() == (0,)
    usage = site.cli("store", "copy", "--from", pg_url, "--to", pg_url)
    assert usage.returncode == 2
