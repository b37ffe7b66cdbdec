"""The activity feed (``ductile.app.feed``) over the in-memory store.

Observers see every entry once; a subscriber gets the backlog after its id,
then live entries, each once and in order; a full queue drops the subscriber
instead of growing; and the loop always ends when cancelled, even right after
a poke (asyncio.wait_for in 3.11 can lose that cancellation).
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from ductile.app.feed import Feed, TooManyStreamsError
from ductile.domain.activity import Activity, Entry, Kind
from ductile.fakes.memory_store import InMemoryStore

T0 = datetime(2026, 3, 1, tzinfo=UTC)


async def note(store: InMemoryStore, n: int, plugin: str = "p") -> None:
    for i in range(n):
        await store.note(Activity(kind=Kind.CONFIG_RELOADED, at=T0, plugin=plugin, data={"i": i}))


def test_observers_see_every_new_entry_once() -> None:
    async def main() -> None:
        store = InMemoryStore()
        await note(store, 3)  # before the feed started: not handed on
        feed = Feed(store)
        seen: list[int] = []
        feed.observe(lambda e: seen.append(e.id))
        await feed.start()
        await note(store, 700)  # more than one page
        assert await feed.catch_up() == 700
        assert await feed.catch_up() == 0
        assert seen == list(range(4, 704))

    asyncio.run(main())


def test_a_follower_gets_the_backlog_then_live_entries_once_in_order() -> None:
    async def main() -> None:
        store = InMemoryStore()
        feed = Feed(store)
        await feed.start()
        await note(store, 5)
        sub = feed.subscribe()
        await feed.catch_up()  # 1-5 reach the queue too: the follower must not repeat them
        got: list[Entry] = []

        async def follow() -> None:
            async for entry in feed.follow(sub, after=2):
                got.append(entry)
                if entry.id == 8:
                    return

        task = asyncio.create_task(follow())
        await asyncio.sleep(0)
        await note(store, 3)
        await feed.catch_up()
        await asyncio.wait_for(task, 5)
        assert [e.id for e in got] == [3, 4, 5, 6, 7, 8]

    asyncio.run(main())


def test_filters_apply_to_backlog_and_live_entries() -> None:
    async def main() -> None:
        store = InMemoryStore()
        feed = Feed(store)
        await note(store, 2, plugin="a")
        await note(store, 2, plugin="b")
        sub = feed.subscribe(plugin="b")
        sub.close()  # the stream ends after the backlog
        got = [e.activity.plugin async for e in feed.follow(sub, after=0)]
        assert got == ["b", "b"]

    asyncio.run(main())


def test_a_full_subscriber_is_dropped_not_grown() -> None:
    async def main() -> None:
        store = InMemoryStore()
        feed = Feed(store, buffer=3)
        await feed.start()
        slow = feed.subscribe()
        await note(store, 10)
        await feed.catch_up()
        assert slow.overflowed
        assert feed.subscribers == 0
        assert slow.queue.qsize() <= 3
        left = [e.id async for e in _drain(slow)]  # what it had, then the end marker
        assert left == sorted(left)
        assert len(left) < 3

    asyncio.run(main())


async def _drain(sub: object) -> object:
    queue = sub.queue  # type: ignore[attr-defined]
    while True:
        entry = await queue.get()
        if entry is None:
            return
        yield entry


def test_the_loop_ends_when_cancelled_right_after_a_poke() -> None:
    async def main() -> None:
        feed = Feed(InMemoryStore(), idle_poll=60)
        for _ in range(20):
            task = asyncio.create_task(feed.run())
            await asyncio.sleep(0.01)
            feed.poke()
            task.cancel()
            await asyncio.wait_for(asyncio.gather(task, return_exceptions=True), 5)
            assert task.done()

    asyncio.run(main())


def test_streams_beyond_the_cap_are_refused_and_a_closed_one_frees_its_slot() -> None:
    feed = Feed(InMemoryStore(), max_streams=2)
    first, _second = feed.subscribe(), feed.subscribe()
    with pytest.raises(TooManyStreamsError, match="2 event streams are open"):
        feed.subscribe()
    feed.unsubscribe(first)
    feed.subscribe()
    assert feed.subscribers == 2
