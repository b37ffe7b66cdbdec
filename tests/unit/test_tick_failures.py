"""A failing scheduler tick is never a silent stop (issue 19, item 8).

Before: one schedule whose firing could not be committed (a timer whose payload
held a lone surrogate) failed the whole tick, every tick, so *every* schedule
stopped, with a traceback every 5 s and ``/healthz`` saying ok. Now the other
schedules fire, the failing one is retried, the failure is logged once per
episode, counted, and shown by ``/healthz`` (503, ``"degraded"``) and
``ductile status``.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from ductile.adapters.status_file import read_status, write_status
from ductile.app.bootstrap import Ductile
from ductile.domain.config import PluginConfig
from ductile.domain.job import SubmittedBy
from ductile.domain.schedule import PlannedRun
from ductile.fakes import InMemoryStore
from ductile.fakes.catalog import DictCatalog
from ductile.fakes.spawner import ok
from ductile.ports.store import FireResult
from tests.support.builders import every, make_config, manifest
from tests.support.rigs import T0, Rig, async_test, records

MINUTE = timedelta(minutes=1)


class BrokenFire(InMemoryStore):
    """A store whose fire unit fails for the schedules in :attr:`broken`."""

    def __init__(self) -> None:
        super().__init__()
        self.broken: set[str] = set()

    async def fire(self, *, due: PlannedRun, **kw: Any) -> FireResult:
        if due.key in self.broken:
            raise UnicodeEncodeError("utf-8", "\ud83d", 0, 1, "surrogates not allowed")
        return await super().fire(due=due, **kw)


class BrokenDue(InMemoryStore):
    """A store whose schedule index cannot be read while :attr:`failing`."""

    failing = False

    async def due(self, start: datetime, end: datetime) -> list[PlannedRun]:
        if self.failing:
            raise OSError(28, "No space left on device")
        return await super().due(start, end)


def two_schedules(store: InMemoryStore) -> Rig:
    catalog = DictCatalog(manifest("alpha", "poll"), manifest("beta", "poll"))
    config = make_config(
        PluginConfig(name="alpha", schedule=every(MINUTE)), PluginConfig(name="beta", schedule=every(MINUTE))
    )
    rig = Rig(config, catalog, store=store)
    for name in ("alpha", "beta"):
        rig.script(name, ok())
    return rig


async def scheduled_jobs(rig: Rig, plugin: str) -> int:
    return sum(j.submitted_by is SubmittedBy.SCHEDULER for j in await rig.jobs(plugin))


@async_test
async def test_one_failing_schedule_does_not_stop_the_others_and_is_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="ductile")
    store = BrokenFire()
    rig = two_schedules(store)
    await rig.engine.start()
    await rig.engine.tick()  # both first runs, at T0
    await rig.drain()
    store.broken.add("alpha/default")
    rig.clock.set(T0 + MINUTE)
    for _ in range(3):
        wake = await rig.engine.tick()
        await rig.drain()
        # alpha's failing run stays due: retried soon, never a hot loop on a past instant
        assert rig.clock.now() < wake <= rig.clock.now() + timedelta(seconds=5)
        rig.clock.set(wake)

    assert await scheduled_jobs(rig, "beta") == 2  # beta's runs at T0 and T0 + 1 min
    assert await scheduled_jobs(rig, "alpha") == 1
    report = rig.engine.tick_report
    assert not report.ok
    assert report.failed_ticks == 3
    assert set(report.failing) == {"alpha/default"}
    assert "UnicodeEncodeError" in report.failing["alpha/default"]
    errors = records(caplog, component="scheduler", plugin="alpha", levelno=logging.ERROR)
    assert len(errors) == 1, [r.getMessage() for r in errors]
    assert "schedule 'alpha/default' could not fire" in errors[0].getMessage()

    store.broken.clear()
    await rig.engine.tick()
    assert report.ok
    assert report.failed_ticks == 3  # the history stays
    assert await scheduled_jobs(rig, "alpha") == 2  # the run that was due, late but not skipped
    assert records(caplog, component="scheduler", message="schedule 'alpha/default' fires again")


@async_test
async def test_a_whole_tick_that_fails_is_counted_logged_once_and_recovers(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="ductile")
    store = BrokenDue()
    rig = two_schedules(store)
    await rig.engine.start()
    store.failing = True
    for minute in range(1, 4):
        rig.clock.set(T0 + minute * MINUTE)
        with pytest.raises(OSError):
            await rig.engine.tick()
    report = rig.engine.tick_report
    assert report.tick_error == "OSError: [Errno 28] No space left on device"
    assert report.failed_ticks == 3
    assert len(records(caplog, component="scheduler", levelno=logging.ERROR)) == 1

    store.failing = False
    await rig.engine.tick()
    assert report.ok
    # the runs missed while ticks failed are skipped (catch_up: skip), the next ones fire
    rig.clock.set(T0 + 4 * MINUTE)
    await rig.engine.tick()
    assert await scheduled_jobs(rig, "alpha") == await scheduled_jobs(rig, "beta") == 1
    assert records(caplog, component="scheduler", message="scheduler ticks run again")


@async_test
async def test_healthz_says_degraded_with_503_and_names_the_failing_schedule() -> None:
    store = BrokenFire()
    rig = two_schedules(store)
    d = Ductile(
        rig.engine.runtime.config,
        clock=rig.clock,
        store=store,
        spawner=rig.spawner,
        inbox=rig.inbox,
        catalog=rig.catalog,
        lock=False,
        listen=False,
    )
    await d.open()
    try:
        assert (await d.health())["status"] == "ok"
        store.broken.add("alpha/default")
        rig.clock.set(T0 + MINUTE)
        await d.engine.tick()
        doc = await d.health()
        assert doc["status"] == "degraded"
        scheduler = doc["scheduler"]
        assert scheduler["ok"] is False
        assert scheduler["failed_ticks"] == 1
        assert list(scheduler["failing_schedules"]) == ["alpha/default"]
        assert scheduler["last_error_at"] == "2026-03-02T09:01:00Z"
        status, body = await get(d, "/healthz")
        assert status == 503
        assert json.loads(body)["scheduler"] == scheduler
    finally:
        await d.close()


async def get(d: Ductile, path: str) -> tuple[int, bytes]:
    """One GET through the ASGI app, without a server."""
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": "GET",
        "path": path,
        "root_path": "",
        "http_version": "1.1",
        "headers": [(b"host", b"x")],
    }
    await d.asgi_app(scope, receive, send)  # type: ignore[arg-type]
    return sent[0]["status"], b"".join(m.get("body", b"") for m in sent[1:])


def test_the_status_file_is_written_atomically_and_read_back(tmp_path: Path) -> None:
    write_status(tmp_path, {"pid": 1, "scheduler": {"ok": True}})
    write_status(tmp_path, {"pid": 2, "scheduler": {"ok": False}})
    assert read_status(tmp_path) == {"pid": 2, "scheduler": {"ok": False}}
    path = tmp_path / "daemon-status.json"
    assert path.stat().st_mode & 0o777 == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["daemon-status.json"]
    path.write_text("not json")
    assert read_status(tmp_path) is None
    path.unlink()
    path.symlink_to(tmp_path / "elsewhere.json")
    (tmp_path / "elsewhere.json").write_text('{"pid": 3}')
    assert read_status(tmp_path) is None  # never followed through a symlink
