"""The engine on fakes: a rig, scripts for its spawner, and short ways to look at what it did.

:class:`Rig` wires an :class:`~ductile.app.engine.Engine` to a FakeClock
(at :data:`T0`), an InMemoryStore, a ScriptedSpawner and a FakeInbox, with a
:class:`~ductile.fakes.catalog.DictCatalog` the test fills
(:mod:`tests.support.builders`).
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import json
import logging
from collections.abc import Callable, Coroutine, Mapping
from datetime import UTC, datetime
from typing import Any, ParamSpec

import pytest

from ductile.app.engine import Engine
from ductile.domain.config import Config
from ductile.domain.job import Job
from ductile.domain.outcome import SpawnOutcome
from ductile.fakes import DictCatalog, FakeClock, FakeInbox, InMemoryStore, ScriptedSpawner
from ductile.ports.spawner import OnStart, SpawnRequest
from ductile.ports.store import Store
from tests.support.builders import executable

P = ParamSpec("P")

#: A Monday, 10:00 in Berlin.
T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
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


# --------------------------------------------------------------------------- running async tests


def async_test(fn: Callable[P, Coroutine[Any, Any, None]]) -> Callable[P, None]:
    """Run an ``async def`` test in a fresh event loop (no pytest-asyncio here)."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> None:
        asyncio.run(fn(*args, **kwargs))

    return wrapper


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
