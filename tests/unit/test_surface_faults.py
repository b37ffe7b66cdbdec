"""A store fault met by the operator surface (the activity log's own entries, an API call, the
feed's reads) is the
machine's: the store logs its episode's error line once, so each refusal here is one line at warn,
without a traceback (issue 19, item 1); anything else stays an error with its traceback."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import pytest
from starlette.requests import Request
from starlette.responses import Response

from ductile.adapters.sqlite.errors import StoreBusyError, StoreFullError
from ductile.app.api.app import _answer
from ductile.app.feed import Feed
from ductile.app.surface import Surface
from ductile.domain.activity import Activity, Entry, Kind
from ductile.fakes import InMemoryStore
from tests.support.builders import two_plugins
from tests.support.rigs import Rig, async_test, records


class RefusingStore(InMemoryStore):
    """An in-memory store whose activity appends fail with ``error``."""

    def __init__(self, error: Exception) -> None:
        super().__init__()
        self.error = error

    async def note(self, entry: Activity, *, alerts: object = None) -> None:
        raise self.error


async def _idle() -> dict[str, Any]:
    return {}


def surface_on(store: InMemoryStore) -> Surface:
    config, catalog = two_plugins()
    rig = Rig(config, catalog, store=store)
    return Surface(rig.engine, reload=_idle, health=_idle, webhooks=lambda: None)  # type: ignore[arg-type, return-value]


@async_test
async def test_a_store_fault_while_recording_an_entry_is_one_warning_without_a_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="ductile")
    surface = surface_on(RefusingStore(StoreFullError("the disk is full. Free at least 1 MiB")))
    await surface.record(Kind.CONFIG_RELOADED, {"reloaded": True})
    [line] = records(caplog, message="could not record config.reloaded")
    assert line.levelno == logging.WARNING
    assert line.exc_info is None
    assert "Free at least 1 MiB" in line.getMessage()


@async_test
async def test_any_other_failure_while_recording_an_entry_is_an_error_with_its_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="ductile")
    surface = surface_on(RefusingStore(RuntimeError("a bug")))
    await surface.record(Kind.CONFIG_RELOADED, {"reloaded": True})
    [line] = records(caplog, message="could not record config.reloaded")
    assert line.levelno == logging.ERROR
    assert line.exc_info is not None


def _request() -> Request:
    return Request(
        {"type": "http", "method": "POST", "path": "/job/x/retry", "headers": [], "query_string": b""}
    )


@pytest.mark.parametrize(
    ("error", "level"),
    [(StoreFullError("the disk is full"), logging.WARNING), (RuntimeError("x"), None)],
)
@async_test
async def test_an_api_call_refused_by_a_store_fault_is_a_503_logged_at_warn(
    caplog: pytest.LogCaptureFixture, error: Exception, level: int | None
) -> None:
    caplog.set_level(logging.DEBUG, logger="ductile")

    async def handler(request: Request, ctx: Any, token: Any) -> Response:
        raise error

    if level is None:  # not the machine's fault: not turned into a 503 here
        with pytest.raises(RuntimeError):
            await _answer(_request(), None, None, handler)  # type: ignore[arg-type]
        return
    response = await _answer(_request(), None, None, handler)  # type: ignore[arg-type]
    assert response.status_code == 503
    [line] = records(caplog, message="POST /job/x/retry failed")
    assert (line.levelno, line.exc_info) == (level, None)


class UnreadableStore(InMemoryStore):
    """Reading the activity log fails while ``broken`` is set; :meth:`reached` waits for a read."""

    def __init__(self) -> None:
        super().__init__()
        self.broken = True
        self.reads = 0
        self._waiting: dict[int, asyncio.Event] = {}

    async def activity(self, after: int, *, limit: int = 500) -> list[Entry]:
        self.reads += 1
        if (event := self._waiting.get(self.reads)) is not None:
            event.set()
        if self.broken:
            raise StoreBusyError("the database is locked by another process")
        return await super().activity(after, limit=limit)

    async def reached(self, reads: int) -> None:
        await self._waiting.setdefault(reads, asyncio.Event()).wait()


@async_test
async def test_the_feed_logs_a_store_fault_once_per_episode_and_its_end(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="ductile")
    store = UnreadableStore()
    feed = Feed(store, idle_poll=0.001)
    task = asyncio.create_task(feed.run())
    try:
        async with asyncio.timeout(10):
            await store.reached(20)  # twenty failed polls
            store.broken = False
            await store.reached(22)  # one that worked, and the loop went round once more
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    [failed] = records(caplog, message="reading the activity log (trying again at each poll) failed")
    assert (failed.levelno, failed.exc_info) == (logging.WARNING, None)
    assert "locked by another process" in failed.getMessage()
    [ended] = records(caplog, message="works again, after 20 failure(s)")
    assert ended.levelno == logging.INFO
