"""The live activity feed: the store's activity log, followed and fanned out to subscribers.

One task (:meth:`Feed.run`) reads the entries appended since the last it saw
(:meth:`Store.activity`) and hands each to

* every *observer* (synchronous callbacks, e.g. the metrics' counters), and
* every *subscription* (an SSE client), through a bounded queue of its own.

Nothing here is on the dispatcher's path: the dispatcher commits to the store
and goes on; the feed reads what was committed, on its own time. A subscriber
whose queue is full is **dropped** (:attr:`Subscription.overflowed`; its
stream ends) rather than buffered without bound or allowed to slow anyone:
the client reconnects with ``Last-Event-ID`` and catches up from the store.

The feed reads when poked (:meth:`poke`: by this process after a change, or
by the cross-process wake-up) and otherwise every :attr:`Feed.idle_poll`
seconds, :attr:`Feed.live_poll` while anyone is subscribed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable

from ductile.domain.activity import Entry, matches
from ductile.domain.errors import DuctileError
from ductile.log import Episode, Log
from ductile.ports.store import Store
from ductile.ports.store_faults import StoreFaultError

_log = Log("feed")

#: Entries a subscriber may have waiting before it is dropped.
#: Event streams open at once (a dashboard tab holds one).
MAX_STREAMS = 32
DEFAULT_BUFFER = 1000
#: Entries read from the store at once.
PAGE = 500

Observer = Callable[[Entry], None]


class Subscription:
    """One follower of the feed: a bounded queue of entries, filtered."""

    def __init__(self, *, buffer: int, plugin: str | None, kinds: frozenset[str] | None) -> None:
        self.queue: asyncio.Queue[Entry | None] = asyncio.Queue(maxsize=buffer)
        self.plugin = plugin
        self.kinds = kinds
        #: Set when the queue filled up: the subscriber was too slow and is dropped.
        self.overflowed = False
        self.closed = False

    def wants(self, entry: Entry) -> bool:
        return matches(entry.activity, plugin=self.plugin, kinds=self.kinds)

    def offer(self, entry: Entry) -> None:
        if self.closed or not self.wants(entry):
            return
        try:
            self.queue.put_nowait(entry)
        except asyncio.QueueFull:
            self.overflowed = True
            self.close()

    def close(self) -> None:
        """End the subscription: the reader gets ``None`` after what it has."""
        if self.closed:
            return
        self.closed = True
        while self.queue.full():  # make room for the end marker: an overflowed reader is cut off now
            self.queue.get_nowait()
        self.queue.put_nowait(None)


class TooManyStreamsError(DuctileError):
    """Every stream slot is taken: a new subscriber waits and retries (the API's 503)."""


class Feed:
    def __init__(
        self,
        store: Store,
        *,
        buffer: int = DEFAULT_BUFFER,
        max_streams: int = MAX_STREAMS,
        idle_poll: float = 1.0,
        live_poll: float = 0.25,
    ) -> None:
        self.store = store
        self.buffer = buffer
        self.max_streams = max_streams
        self.idle_poll = idle_poll
        self.live_poll = live_poll
        #: The id of the last entry handed on (entries before the feed started are not).
        self.position = 0
        self._poked = asyncio.Event()
        self._subscriptions: set[Subscription] = set()
        self._observers: list[Observer] = []
        self._started = False

    # ----------------------------------------------------------------- wiring
    def observe(self, observer: Observer) -> None:
        self._observers.append(observer)

    def poke(self) -> None:
        """Something may have been appended: read now."""
        self._poked.set()

    @property
    def subscribers(self) -> int:
        return len(self._subscriptions)

    def subscribe(self, *, plugin: str | None = None, kinds: frozenset[str] | None = None) -> Subscription:
        """A new stream; :class:`TooManyStreamsError` when ``max_streams`` are open already (an
        open stream is a connection the listener's idle guard never reclaims: without a cap,
        one token could hold every connection slot with streams)."""
        if len(self._subscriptions) >= self.max_streams:
            raise TooManyStreamsError(f"{self.max_streams} event streams are open; try again later")
        sub = Subscription(buffer=self.buffer, plugin=plugin, kinds=kinds)
        self._subscriptions.add(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        sub.close()
        self._subscriptions.discard(sub)

    def end_streams(self) -> None:
        """End every subscription (the daemon is stopping): each open event stream finishes
        what it holds and closes, so the listener's graceful stop does not wait on it; its
        client resumes from its last id once the daemon is back."""
        for sub in list(self._subscriptions):
            self.unsubscribe(sub)

    # ----------------------------------------------------------------- the loop
    async def start(self) -> None:
        """Begin at the newest entry: what happened before is read from the store on demand."""
        if not self._started:
            self.position = await self.store.last_activity_id()
            self._started = True

    async def run(self) -> None:
        """Follow the log until cancelled; a store error is retried at the next poll, logged once
        per episode (a fault of the machine at warn without a traceback: the store says why)."""
        await self.start()
        episode = Episode(_log, "reading the activity log (trying again at each poll)")
        while True:
            try:
                await self.catch_up()
            except Exception as e:
                fault = isinstance(e, StoreFaultError)
                episode.failed(e, level=logging.WARNING if fault else logging.ERROR, traceback=not fault)
            else:
                episode.ended()
            timeout = self.live_poll if self._subscriptions else self.idle_poll
            # asyncio.timeout, not wait_for: in 3.11 wait_for loses a cancellation that comes
            # while the event is being set (a poke during shutdown), and this loop never ends.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._poked.wait()
            self._poked.clear()

    async def catch_up(self) -> int:
        """Hand on every entry appended since :attr:`position`; how many."""
        handed = 0
        while True:
            entries = await self.store.activity(self.position, limit=PAGE)
            for entry in entries:
                self.position = entry.id
                for observer in self._observers:
                    observer(entry)
                for sub in list(self._subscriptions):
                    sub.offer(entry)
                    if sub.overflowed:
                        self._subscriptions.discard(sub)
                        _log.warning("a slow event-stream client was disconnected (its buffer filled up)")
            handed += len(entries)
            if len(entries) < PAGE:
                return handed

    # ----------------------------------------------------------------- one follower, resumed
    async def follow(self, sub: Subscription, *, after: int) -> AsyncIterator[Entry]:
        """The entries of ``sub`` with ``id > after``: first the backlog from the store, then
        live ones, each once and in order. Ends when the subscription ends (overflow)."""
        sent = after
        while True:  # the backlog, page by page, up to the store's head
            page = await self.store.activity(sent, limit=PAGE)
            for entry in page:
                sent = entry.id
                if sub.wants(entry):
                    yield entry
            if len(page) < PAGE:
                break
        while True:
            live = await sub.queue.get()
            if live is None:
                return
            if live.id > sent:  # read already with the backlog otherwise
                sent = live.id
                yield live
