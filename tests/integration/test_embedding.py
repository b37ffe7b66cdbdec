"""ductile embedded in another Python application.

A host Starlette app mounts ``Ductile(config, listen=False).asgi_app`` next
to its own routes and runs under uvicorn in the test's event loop, together
with ``await d.serve()``: ductile opens no listener and installs no signal
handler of its own. Then the same facade on fakes: a store, a spawner, a
clock and a catalog of the embedder's choosing, driven step by step.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import socket
from collections.abc import Awaitable, Callable, Generator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import attrs
import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import BaseRoute, Mount, Route

from ductile.app.bootstrap import Ductile
from ductile.domain.config import Config, PluginConfig, ServiceConfig
from ductile.domain.job import JobStatus
from ductile.domain.plugin import Manifest
from ductile.domain.schedule import Schedule
from ductile.fakes import DictCatalog, FakeClock, InMemoryStore, ScriptedSpawner
from ductile.fakes.spawner import ok
from ductile.ports.spawner import SpawnRequest
from tests.support.plugins import recorder
from tests.support.site import SECRET, Site, plugin_processes, requests_of, signature

SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
BOUND = 10.0
POLL = 0.05


class HostServer(uvicorn.Server):
    """The host's uvicorn, kept off the signals too, so a change there could only be ductile's."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


async def own_route(_: Request) -> PlainTextResponse:
    return PlainTextResponse("the host's own page")


async def eventually(check: Callable[[], Awaitable[Any]], what: str, timeout: float = BOUND) -> Any:
    """Await ``check()`` every 50 ms until it is truthy; fail after about ``timeout`` seconds."""
    for _ in range(int(timeout / POLL) + 1):
        if value := await check():
            return value
        await asyncio.sleep(POLL)
    raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    site = Site(tmp_path)
    site.plugin("hook", recorder(site, "hook"), commands=["handle"])
    site.write_config(endpoints=[{"path": "/hook/a", "plugin": "hook", "secret": SECRET}])
    yield site
    assert plugin_processes(site.root) == []


@contextlib.contextmanager
def ductile_messages() -> Iterator[list[str]]:
    """The messages the ``ductile`` logger emits (INFO and up) while the block runs."""
    messages: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: messages.append(record.getMessage())  # type: ignore[method-assign]
    logger = logging.getLogger("ductile")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield messages
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


async def use_the_host(client: httpx.AsyncClient, d: Ductile, site: Site, prefix: str) -> None:
    """A signed POST under ``prefix`` runs the job; the host's own route and ductile's health answer."""
    body = json.dumps({"from": "the host"}).encode()
    response = await client.post(
        f"{prefix}/hook/a", content=body, headers={"X-Hub-Signature-256": signature(body)}
    )
    assert response.status_code == 202, response.text
    job_id = response.json()["job_id"]

    async def succeeded() -> bool:
        job = await d.engine.store.get_job(job_id)
        return job is not None and job.status is JobStatus.SUCCEEDED

    await eventually(succeeded, "the webhook's job to succeed")
    (request,) = requests_of(site, "hook")
    assert request["job_id"] == job_id
    assert request["event"]["payload"] == {"from": "the host"}

    own = await client.get("/own")
    assert (own.status_code, own.text) == (200, "the host's own page")
    health = await client.get(f"{prefix}/healthz")
    assert health.status_code == 200
    assert health.json()["plugins_loaded"] == 1


async def run_embedded(site: Site, mount: Callable[[Any], list[BaseRoute]], prefix: str) -> None:
    """Host app + ductile on one loop: a signed POST under ``prefix`` runs the job, the host's
    route still answers, ``d.stop()`` returns, and no signal handler changed at any point."""
    before = {s: signal.getsignal(s) for s in SIGNALS}
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    with ductile_messages() as messages, contextlib.closing(sock):
        async with Ductile(site.config_path, listen=False) as d:
            host = Starlette(routes=[Route("/own", own_route), *mount(d.asgi_app)])
            server = HostServer(uvicorn.Config(host, lifespan="off", log_config=None, access_log=False))
            serving = asyncio.create_task(d.serve(), name="ductile")
            hosting = asyncio.create_task(server.serve(sockets=[sock]), name="host")
            try:
                await eventually(lambda: asyncio.sleep(0, server.started), "the host server to start")
                assert {s: signal.getsignal(s) for s in SIGNALS} == before
                async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=BOUND) as client:
                    await use_the_host(client, d, site, prefix)
                assert {s: signal.getsignal(s) for s in SIGNALS} == before, "ductile installed a handler"
            finally:
                d.stop()
                await asyncio.wait_for(serving, BOUND)
                server.should_exit = True
                await asyncio.wait_for(hosting, BOUND)
            assert serving.result() is None
            d.stop()  # idempotent
    assert {s: signal.getsignal(s) for s in SIGNALS} == before
    assert "stopped" in messages
    assert "listening" not in messages, "listen=False: ductile started no server of its own"


def test_mounted_at_the_host_root(site: Site) -> None:
    asyncio.run(run_embedded(site, lambda app: [Mount("", app=app)], ""))


def test_mounted_under_a_prefix(site: Site) -> None:
    asyncio.run(run_embedded(site, lambda app: [Mount("/ductile", app=app)], "/ductile"))


def test_a_stop_before_serve_gets_going_is_not_lost(site: Site) -> None:
    async def scenario() -> None:
        async with Ductile(site.config_path, listen=False) as d:
            serving = asyncio.create_task(d.serve())
            d.stop()  # e.g. the host's own SIGTERM handler, firing during start-up
            try:
                await asyncio.wait_for(asyncio.shield(serving), 2.0)
            finally:
                d.stop()  # so that the failing case ends too
                await asyncio.wait_for(serving, BOUND)

    asyncio.run(scenario())


# --------------------------------------------------------------------------- on fakes

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
EXECUTABLE = "/opt/plugins/counter/run"


def test_embedding_with_fakes_touches_nothing_on_disk(tmp_path: Path) -> None:
    counter = Manifest(
        name="counter", version="1.0.0", protocol=1, entrypoint="run", commands=frozenset({"poll"})
    )
    config = Config(
        service=ServiceConfig(state_dir=str(tmp_path / "state")),
        plugins_dir="/opt/plugins",
        plugins={
            "counter": PluginConfig(name="counter", schedule=Schedule(tz=UTC, every=timedelta(hours=1)))
        },
    )
    clock = FakeClock(T0)

    def count(request: SpawnRequest) -> Any:
        state = json.loads(request.stdin)["state"]
        return ok(state_updates={"count": state.get("count", 0) + 1})

    spawner = ScriptedSpawner({EXECUTABLE: count}, clock=clock)
    store = InMemoryStore()

    async def scenario() -> None:
        async with Ductile(
            config, store=store, spawner=spawner, clock=clock, catalog=DictCatalog(counter)
        ) as d:
            # A new `every` schedule is planned at once: the schedule index answers without a loop.
            (planned,) = await d.due(T0, T0 + timedelta(hours=3))
            assert (planned.key, planned.planned_at) == ("counter/default", T0)

            job_id = await d.enqueue("counter")
            assert await d.engine.dispatch_one() is True
            job = await store.get_job(job_id)
            assert job is not None
            assert (job.status, job.attempt) == (JobStatus.SUCCEEDED, 1)
            assert await store.get_state("counter") == {"count": 1}
            assert [r["job_id"] for r in spawner.requests_for(EXECUTABLE)] == [job_id]
            assert await d.engine.dispatch_one() is False

            # The runner's step, by hand: the due run becomes a job, the next one is an hour on.
            await d.engine.tick()
            (later,) = await d.due(T0, T0 + timedelta(hours=3))
            assert later.planned_at == T0 + timedelta(hours=1)
            assert await d.engine.dispatch_one() is True
            assert await store.get_state("counter") == {"count": 2}
            assert (await d.health())["queue_depth"] == 0

    asyncio.run(scenario())
    assert not (tmp_path / "state").exists(), "no lock, no database: the store was the embedder's"


def test_advice_on_the_config_is_logged_at_start_and_after_a_reload(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="ductile")
    sound = Config(service=ServiceConfig(state_dir=str(tmp_path / "state")), plugins_dir="/opt/plugins")
    short = attrs.evolve(sound, service=attrs.evolve(sound.service, job_log_retention=timedelta(hours=1)))

    def advice() -> list[str]:
        return [r.getMessage() for r in caplog.records if r.getMessage().startswith("config: ")]

    async def scenario() -> None:
        clock = FakeClock(T0)
        async with Ductile(
            short, store=InMemoryStore(), spawner=ScriptedSpawner({}, clock=clock), clock=clock,
            catalog=DictCatalog(),
        ) as d:  # fmt: skip
            assert advice() == [
                "config: service.job_log_retention (1h) is shorter than service.dedupe_ttl (1d): a succeeded "
                "job deleted by retention no longer blocks its duplicates, so dedupe holds for 1h at most"
            ]
            caplog.clear()
            await d.reload(sound)
            assert advice() == []
            await d.reload(short)
            assert len(advice()) == 1

    asyncio.run(scenario())


def test_each_handle_job_queued_through_the_api_arrives_as_an_event_of_its_own(tmp_path: Path) -> None:
    """Ductile.enqueue(plugin, "handle", payload=...) wraps the payload in an event envelope with an
    event id of its own: a plugin that skips event ids it has seen (docs/plugins.md) runs every call.
    (The payload used to be handed over as the event itself, without an id: the second call on was
    taken for a redelivery and skipped.)"""
    outbox = Manifest(
        name="outbox", version="1.0.0", protocol=1, entrypoint="run", commands=frozenset({"handle"})
    )
    config = Config(
        service=ServiceConfig(state_dir=str(tmp_path / "state")),
        plugins_dir="/opt/plugins",
        plugins={"outbox": PluginConfig(name="outbox")},
    )
    clock = FakeClock(T0)
    written: list[dict[str, Any]] = []

    def handle(request: SpawnRequest) -> Any:
        event = json.loads(request.stdin)["event"]
        if all(w.get("event_id") != event.get("event_id") for w in written):
            written.append(event)
        return ok()

    spawner = ScriptedSpawner({"/opt/plugins/outbox/run": handle}, clock=clock)

    async def scenario() -> None:
        async with Ductile(
            config, store=InMemoryStore(), spawner=spawner, clock=clock, catalog=DictCatalog(outbox)
        ) as d:
            for n in (1, 2, 3):
                await d.enqueue("outbox", "handle", payload={"n": n})
                assert await d.engine.dispatch_one() is True

    asyncio.run(scenario())
    assert [w.get("payload") for w in written] == [{"n": 1}, {"n": 2}, {"n": 3}]
    assert len({w["event_id"] for w in written}) == 3
    assert {(w["type"], w["source"], w["timestamp"]) for w in written} == {
        ("manual", "api", "2026-03-02T09:00:00Z")
    }
