"""The engine on fakes: intake (enqueue) and the dispatcher's idle wait.

This module also holds the small rig the other ``test_engine_*`` modules
share: config builders (for :class:`~ductile.fakes.catalog.DictCatalog`, the
Catalog port over a dict of manifests) and :class:`Rig`, which wires an
:class:`Engine` to a FakeClock, an InMemoryStore, a ScriptedSpawner and a FakeInbox.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import json
import logging
from collections.abc import Callable, Coroutine, Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, ParamSpec
from zoneinfo import ZoneInfo

import pytest

from ductile.app.engine import Engine, EnqueueRefusedError
from ductile.domain.config import Config, PluginConfig, ServiceConfig
from ductile.domain.job import Actor, Job, JobStatus, SubmittedBy
from ductile.domain.outcome import SpawnOutcome
from ductile.domain.plugin import Manifest
from ductile.domain.retry import RetryPolicy
from ductile.domain.routing import Route, arrival_event_id
from ductile.domain.schedule import Schedule
from ductile.fakes import DictCatalog, FakeClock, FakeInbox, InMemoryStore, ScriptedSpawner
from ductile.fakes.spawner import error, ok
from ductile.ports.spawner import OnStart, SpawnRequest
from ductile.ports.store import Store

P = ParamSpec("P")

#: A Monday, 10:00 in Berlin.
T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
BERLIN = ZoneInfo("Europe/Berlin")
PLUGINS_DIR = "/srv/ductile/plugins"
#: The daemon's environment: two secrets and a DUCTILE_* variable of its own.
DAEMON_ENV = {
    "PATH": "/opt/bin:/usr/bin",
    "HOME": "/home/op",
    "LANG": "en_US.UTF-8",
    "TZ": "Europe/Berlin",
    "GITHUB_TOKEN": "ghp_s3cr3t",
    "AWS_SECRET_ACCESS_KEY": "hunter2",
    "DUCTILE_CONFIG": "/etc/ductile/ductile.yaml",
}
ALLOWED_ENV = {"PATH", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR", "USER", "LOGNAME"}
DUCTILE_ENV = {"DUCTILE_PLUGIN", "DUCTILE_COMMAND", "DUCTILE_JOB_ID", "DUCTILE_ATTEMPT"}


# --------------------------------------------------------------------------- running async tests


def async_test(fn: Callable[P, Coroutine[Any, Any, None]]) -> Callable[P, None]:
    """Run an ``async def`` test in a fresh event loop (no pytest-asyncio here)."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> None:
        asyncio.run(fn(*args, **kwargs))

    return wrapper


# --------------------------------------------------------------------------- plugins and config


def manifest(name: str, *commands: str, version: str = "1.0.0", required: tuple[str, ...] = ()) -> Manifest:
    return Manifest(
        name=name,
        version=version,
        protocol=1,
        entrypoint="run",
        commands=frozenset(commands or ("poll", "handle")),
        required_keys=required,
    )


def directory(name: str) -> str:
    return f"{PLUGINS_DIR}/{name}"


def executable(name: str) -> str:
    return f"{PLUGINS_DIR}/{name}/run"


def every(interval: timedelta, **kw: Any) -> Schedule:
    return Schedule(tz=BERLIN, every=interval, **kw)


def make_config(
    *plugins: PluginConfig,
    routes: Iterable[Route] = (),
    tick_interval: timedelta = timedelta(seconds=60),
    retention: timedelta = timedelta(days=30),
) -> Config:
    return Config(
        service=ServiceConfig(
            state_dir="/srv/ductile/state", tick_interval=tick_interval, job_log_retention=retention
        ),
        plugins_dir=PLUGINS_DIR,
        plugins={p.name: p for p in plugins},
        routes=tuple(routes),
    )


def route(source: str, event_type: str, target: str) -> Route:
    return Route(source=source, event_type=event_type, target=target)


# --------------------------------------------------------------------------- scripts


def sequence(*outcomes: SpawnOutcome | BaseException) -> Callable[[SpawnRequest], SpawnOutcome]:
    """A script answering with ``outcomes`` in turn (the last one repeats); an
    exception in the list is raised by the spawner, like a bug in it."""
    items = list(outcomes)

    def script(_: SpawnRequest) -> SpawnOutcome:
        item = items.pop(0) if len(items) > 1 else items[0]
        if isinstance(item, BaseException):
            raise item
        return item

    return script


def by_command(
    **answers: SpawnOutcome | Callable[[SpawnRequest], SpawnOutcome],
) -> Callable[[SpawnRequest], SpawnOutcome]:
    """A script answering per request ``command`` (``init=ok()``, ``poll=...``)."""

    def script(request: SpawnRequest) -> SpawnOutcome:
        command = json.loads(request.stdin)["command"]
        answer = answers[command]
        return answer(request) if callable(answer) else answer

    return script


class GatedSpawner(ScriptedSpawner):
    """A ScriptedSpawner whose run, once the process 'exists' (on_start done, the
    script answered), waits for :attr:`gate` before returning."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()
        self.started = asyncio.Event()

    async def run(self, request: SpawnRequest, *, on_start: OnStart | None = None) -> SpawnOutcome:
        outcome = await super().run(request, on_start=on_start)
        self.started.set()
        await self.gate.wait()
        return outcome


# --------------------------------------------------------------------------- the rig


class Rig:
    """An Engine on fakes, and short ways to look at what it did."""

    def __init__(
        self,
        config: Config,
        catalog: DictCatalog,
        *,
        store: InMemoryStore | None = None,
        spawner: ScriptedSpawner | None = None,
        environ: Mapping[str, str] | None = DAEMON_ENV,
        draw: Callable[[], float] = lambda: 0.5,
    ) -> None:
        self.clock = FakeClock(T0)
        self.store = store if store is not None else InMemoryStore()
        self.spawner = spawner if spawner is not None else ScriptedSpawner()
        self.spawner.clock = self.clock
        self.inbox = FakeInbox(self.clock)
        self.catalog = catalog
        self.draw = draw
        self.environ = environ
        self._ids = itertools.count(1)
        self.engine = self.new_engine(config)

    def new_engine(self, config: Config) -> Engine:
        """Another engine on the same store, clock and spawner (a restart)."""
        store: Store = self.store
        return Engine(
            config=config,
            store=store,
            spawner=self.spawner,
            clock=self.clock,
            inbox=self.inbox,
            catalog=self.catalog,
            draw=self.draw,
            new_id=lambda: f"job-{next(self._ids)}",
            environ=self.environ,
        )

    def script(self, name: str, script: Callable[[SpawnRequest], SpawnOutcome] | SpawnOutcome) -> None:
        if isinstance(script, SpawnOutcome):
            script = sequence(script)
        self.spawner.script(executable(name), script)

    def requests(self, name: str) -> list[dict[str, Any]]:
        return self.spawner.requests_for(executable(name))

    def spawns(self, name: str) -> list[SpawnRequest]:
        return [r for r in self.spawner.calls if r.executable == executable(name)]

    async def job(self, job_id: str) -> Job:
        job = await self.store.get_job(job_id)
        assert job is not None, f"job {job_id} is not in the store"
        return job

    async def jobs(self, plugin: str | None = None) -> list[Job]:
        """Oldest first."""
        return list(reversed(await self.store.list_jobs(plugin=plugin, limit=10_000)))

    async def drain(self, limit: int = 100) -> int:
        """Dispatch until nothing is runnable now; returns how many ran."""
        for n in range(limit):
            if not await self.engine.dispatch_one():
                return n
        raise AssertionError(f"still dispatching after {limit} jobs")

    async def history(self, job_id: str) -> list[tuple[str | None, str, str]]:
        """(from, to, actor) of every transition of a job."""
        return [
            (t.from_status.value if t.from_status else None, t.to_status.value, t.actor.value)
            for t in await self.store.transitions(job_id)
        ]


def records(caplog: pytest.LogCaptureFixture, **match: Any) -> list[logging.LogRecord]:
    """Log records of the ductile logger whose attributes equal ``match``
    (``message`` matches a substring of the formatted message)."""
    wanted = dict(match)
    text = wanted.pop("message", None)
    out = []
    for r in caplog.records:
        if not r.name.startswith("ductile"):
            continue
        if text is not None and text not in r.getMessage():
            continue
        if all(getattr(r, k, None) == v for k, v in wanted.items()):
            out.append(r)
    return out


def two_plugins(**alpha: Any) -> tuple[Config, DictCatalog]:
    catalog = DictCatalog(manifest("alpha", "poll", "handle"), manifest("beta", "poll", "handle"))
    config = make_config(PluginConfig(name="alpha", **alpha), PluginConfig(name="beta"))
    return config, catalog


# =========================================================================== enqueue


@async_test
async def test_enqueue_stores_a_queued_job_with_the_plugins_retry_limit_and_notifies_the_inbox(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="ductile")
    config, catalog = two_plugins(retry=RetryPolicy(max_attempts=7))
    rig = Rig(config, catalog)
    await rig.engine.start()
    before = rig.inbox.notifications

    result = await rig.engine.enqueue(
        "alpha", command="handle", payload={"n": 1}, submitted_by=SubmittedBy.CLI
    )

    assert result.created
    job = await rig.job(result.job_id)
    assert (job.plugin, job.command, job.status) == ("alpha", "handle", JobStatus.QUEUED)
    assert job.payload == {  # a handle job's payload is its event: the given payload, wrapped
        "type": "manual",
        "payload": {"n": 1},
        "source": "cli",
        "timestamp": "2026-03-02T09:00:00Z",
        "event_id": arrival_event_id(job.id),
    }
    assert (job.attempt, job.max_attempts, job.submitted_by) == (1, 7, SubmittedBy.CLI)
    assert job.created_at == T0
    assert await rig.history(job.id) == [(None, "queued", Actor.CLI.value)]
    assert rig.inbox.notifications == before + 1
    [line] = records(caplog, component="intake", job_id=job.id)
    assert line.levelno == logging.INFO
    assert line.plugin == "alpha"
    assert line.getMessage() == "job queued (handle)"


@pytest.mark.parametrize(
    ("setup", "plugin", "command", "reason"),
    [
        ("none", "ghost", "poll", f"plugin 'ghost' is not loaded (no such plugin in {PLUGINS_DIR})"),
        ("refused", "beta", "poll", "plugin 'beta' is refused: entrypoint is not executable"),
        ("disabled", "beta", "poll", "plugin 'beta' is disabled"),
        ("unhealthy", "beta", "poll", "plugin 'beta' is unhealthy: init failed: no token"),
        (
            "none",
            "alpha",
            "health",
            "plugin 'alpha' does not support 'health' (its manifest lists: handle, poll)",
        ),
    ],
)
@async_test
async def test_strict_enqueue_refuses_what_cannot_run_naming_the_reason(
    setup: str, plugin: str, command: str, reason: str
) -> None:
    catalog = DictCatalog(manifest("alpha", "poll", "handle"), manifest("beta", "poll", "init"))
    beta = PluginConfig(name="beta", enabled=setup != "disabled")
    if setup == "refused":
        catalog.refusals["beta"] = "entrypoint is not executable"
    rig = Rig(make_config(PluginConfig(name="alpha"), beta), catalog)
    rig.script("beta", by_command(init=error("no token"), poll=ok()))
    await rig.engine.start()

    with pytest.raises(EnqueueRefusedError) as caught:
        await rig.engine.enqueue(plugin, command=command)

    assert str(caught.value) == reason
    assert [j for j in await rig.jobs() if j.command != "init"] == []
    assert rig.inbox.notifications == 0


@pytest.mark.parametrize("plugin", ["ghost", "beta"])
@async_test
async def test_non_strict_enqueue_keeps_the_job_even_when_its_plugin_cannot_run(plugin: str) -> None:
    config, catalog = two_plugins()
    catalog.refusals["beta"] = "directory is world-writable"
    rig = Rig(config, catalog)
    await rig.engine.start()

    result = await rig.engine.enqueue(
        plugin, payload={"x": 1}, submitted_by=SubmittedBy.WEBHOOK, strict=False
    )

    assert result.created
    job = await rig.job(result.job_id)
    assert (job.status, job.submitted_by) == (JobStatus.QUEUED, SubmittedBy.WEBHOOK)
    assert await rig.history(job.id) == [(None, "queued", "webhook")]
    assert rig.inbox.notifications == 1


@async_test
async def test_dedupe_returns_the_existing_id_without_a_second_job_or_wake_up(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="ductile")
    config, catalog = two_plugins()
    rig = Rig(config, catalog)
    await rig.engine.start()

    first = await rig.engine.enqueue("alpha", command="handle", dedupe_key="delivery-1")
    again = await rig.engine.enqueue("alpha", command="handle", dedupe_key="delivery-1")
    other_target = await rig.engine.enqueue("beta", command="handle", dedupe_key="delivery-1")

    assert first.created
    assert (again.job_id, again.created) == (first.job_id, False)
    assert other_target.created  # identity is (plugin, command, key): fan-out never collapses
    assert other_target.job_id != first.job_id
    assert len(await rig.jobs("alpha")) == 1
    assert rig.inbox.notifications == 2
    [line] = records(caplog, component="intake", message="duplicate dropped")
    assert line.job_id == first.job_id
    assert "'delivery-1'" in line.getMessage()


@async_test
async def test_a_duplicate_of_a_job_that_succeeded_is_dropped_but_one_that_died_is_not() -> None:
    config, catalog = two_plugins()
    rig = Rig(config, catalog)
    rig.script("alpha", ok())
    rig.script("beta", error("nope", retry=False))
    await rig.engine.start()

    done = await rig.engine.enqueue("alpha", dedupe_key="k")
    dead = await rig.engine.enqueue("beta", dedupe_key="k")
    assert await rig.drain() == 2
    assert (await rig.job(dead.job_id)).status is JobStatus.DEAD

    rig.clock.advance(timedelta(hours=1))
    assert (await rig.engine.enqueue("alpha", dedupe_key="k")).job_id == done.job_id
    assert (await rig.engine.enqueue("beta", dedupe_key="k")).created


# =========================================================================== idle_wait


@async_test
async def test_idle_wait_is_one_second_when_no_retry_is_pending() -> None:
    config, catalog = two_plugins()
    rig = Rig(config, catalog)
    await rig.engine.start()
    assert await rig.engine.idle_wait() == 1.0
    await rig.engine.enqueue("alpha")  # due now, no retry time: the inbox wakes the dispatcher
    assert await rig.engine.idle_wait() == 1.0


@async_test
async def test_idle_wait_is_shorter_when_a_retry_is_due_sooner_and_never_negative() -> None:
    config, catalog = two_plugins(retry=RetryPolicy(max_attempts=3, backoff_base=timedelta(seconds=2)))
    rig = Rig(config, catalog)
    rig.script("alpha", error("flaky"))
    await rig.engine.start()
    await rig.engine.enqueue("alpha")
    assert await rig.engine.dispatch_one()
    # draw 0.5: the retry is due 2 s + 1 s after the failure
    [job] = await rig.jobs("alpha")
    assert job.next_retry_at == T0 + timedelta(seconds=3)

    assert await rig.engine.idle_wait() == 1.0
    rig.clock.advance(timedelta(seconds=2.75))
    assert await rig.engine.idle_wait() == pytest.approx(0.25)
    rig.clock.advance(timedelta(seconds=5))
    assert await rig.engine.idle_wait() == 0.0
    assert await rig.engine.dispatch_one()
