"""How many connections the listener holds, and how long one may keep it waiting for a request.

uvicorn closes an idle keep-alive connection after 5 s, but a connection that
never sends a request head, or sends it one byte every few seconds
(slowloris), is held forever, and past ``limit_concurrency`` every new client
got a 503: 500 such connections made every webhook and ``/healthz`` fail, for
as long as the attacker liked (issue 19, item 10). So, for both parsers:

- **A head deadline.** From the moment a connection is ready for a request
  (accepted, or its last response sent), the request head must be complete
  within ``head_timeout`` seconds (10 by default), else the connection is
  closed (looked at once a second: within a second of the deadline; one
  timer for all connections, so a keep-alive request costs a dictionary
  insert and delete). The body has its own deadline in the app
  (:class:`~ductile.adapters.http.limits.BodyLimit`).
- **A connection limit that cannot lock new clients out.** At most
  ``limit`` connections are open; a new one past it closes the connection
  that has been *waiting* longest (no request of it in the app: still sending
  its head, or idle between requests). A client that sends its request at
  once is therefore always served, whatever the flood, unless ``limit``
  connections are all inside the app, where the body deadline ends each
  within seconds; only then is the new one answered 503 and closed.

:class:`ConnectionGuard` keeps the count and the waiting line; the protocol
classes (:func:`guarded`) tell it when a connection starts or stops waiting.
Both parsers go through the same guard, so the answers do not depend on the
parser. Under a flood the guard logs one line a minute, not one per
connection.
"""

from __future__ import annotations

import asyncio
import collections
import time
from typing import Any, Protocol

from ductile.adapters.http.answers import log

#: The default deadline for a request head, in seconds.
HEAD_TIMEOUT = 10.0
#: Seconds between two log lines about connections closed by the guard.
LOG_EVERY = 60.0

_REFUSED_BODY = b'{"error":"too many connections"}'
_REFUSED = (
    b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n"
    b"content-length: %d\r\ncache-control: no-store\r\nconnection: close\r\n\r\n%s"
) % (len(_REFUSED_BODY), _REFUSED_BODY)


class Guarded(Protocol):
    """What the guard needs of a connection (a protocol instance)."""

    transport: asyncio.Transport


class ConnectionGuard:
    """The listener's open connections and the ones waiting for a request (see the module's docs)."""

    def __init__(self, *, limit: int, head_timeout: float = HEAD_TIMEOUT) -> None:
        if limit < 1:
            raise ValueError("the connection limit must be at least 1")
        self.limit = limit
        self.head_timeout = head_timeout
        self._open: set[Guarded] = set()
        #: Connections waiting for a request head, the longest-waiting first, with when they began.
        self._waiting: collections.OrderedDict[Guarded, float] = collections.OrderedDict()
        #: One timer for every deadline (not one per request): it looks at the longest-waiting
        #: connections every :attr:`_sweep_every` seconds while any is waiting.
        self._sweeper: asyncio.TimerHandle | None = None
        self._sweep_every = min(1.0, head_timeout / 2)
        #: What was closed since the last log line: {"evicted": n, "timed_out": n, "refused": n}.
        self._closed: collections.Counter[str] = collections.Counter()
        self._logged_at = float("-inf")

    @property
    def open(self) -> int:
        return len(self._open)

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    def opened(self, conn: Guarded) -> bool:
        """A connection was accepted: admit it (closing the longest-waiting one if the limit is
        reached) and start its head deadline; False when it was refused (503, closed)."""
        if len(self._open) >= self.limit:
            if not self._waiting:
                conn.transport.write(_REFUSED)
                conn.transport.close()
                self._note("refused")
                return False
            oldest = next(iter(self._waiting))
            self._drop(oldest)
            oldest.transport.close()
            self._note("evicted")
        self._open.add(conn)
        self.wait(conn)
        return True

    def wait(self, conn: Guarded) -> None:
        """``conn`` waits for a request head (from now, unless it already was waiting)."""
        if conn in self._open and conn not in self._waiting and not conn.transport.is_closing():
            loop = asyncio.get_running_loop()
            self._waiting[conn] = loop.time()
            if self._sweeper is None:
                self._sweeper = loop.call_later(self._sweep_every, self._sweep)

    def busy(self, conn: Guarded) -> None:
        """``conn`` has a request in the app: no head deadline, never evicted."""
        self._waiting.pop(conn, None)

    def closed(self, conn: Guarded) -> None:
        self._drop(conn)

    def _drop(self, conn: Guarded) -> None:
        self.busy(conn)
        self._open.discard(conn)

    def _sweep(self) -> None:
        """Close the connections whose head deadline has passed (the line is in waiting order)."""
        self._sweeper = None
        loop = asyncio.get_running_loop()
        expired = loop.time() - self.head_timeout
        while self._waiting:
            conn, since = next(iter(self._waiting.items()))
            if since > expired:
                break
            del self._waiting[conn]
            self._open.discard(conn)
            conn.transport.close()
            self._note("timed_out")
        if self._waiting:
            self._sweeper = loop.call_later(self._sweep_every, self._sweep)

    def stop(self) -> None:
        """The server stops: no more sweeps."""
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None

    def _note(self, what: str) -> None:
        self._closed[what] += 1
        now = time.monotonic()
        if now - self._logged_at < LOG_EVERY:
            return
        self._logged_at = now
        counts = dict(self._closed)
        self._closed.clear()
        log.warning(
            "connections closed to keep the listener available: "
            f"{counts.get('timed_out', 0)} sent no request head within {self.head_timeout:g} s, "
            f"{counts.get('evicted', 0)} waiting ones made room for new ones (limit {self.limit}), "
            f"{counts.get('refused', 0)} refused while all were busy",
            open=len(self._open),
        )


class GuardedProtocol:
    """Mixed into uvicorn's HTTP protocols (before them): reports to a :class:`ConnectionGuard`.

    A connection waits while it has no request in the app (no request/response
    cycle, or only finished ones, and nothing pipelined); it is busy from the
    end of a request head until its response is complete.
    """

    guard: ConnectionGuard
    transport: asyncio.Transport
    cycle: Any
    _admitted = False

    def connection_made(self, transport: asyncio.Transport) -> None:
        super().connection_made(transport)  # type: ignore[misc]
        self._admitted = self.guard.opened(self)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._admitted:
            self.guard.closed(self)
        super().connection_lost(exc)  # type: ignore[misc]

    def data_received(self, data: bytes) -> None:
        super().data_received(data)  # type: ignore[misc]
        self._report()

    def on_response_complete(self) -> None:
        super().on_response_complete()  # type: ignore[misc]
        self._report()

    def _has_request(self) -> bool:
        cycle = self.cycle
        return (cycle is not None and not cycle.response_complete) or bool(getattr(self, "pipeline", None))

    def _report(self) -> None:
        if not self._admitted:
            return
        if self._has_request():
            self.guard.busy(self)
        else:
            self.guard.wait(self)


def guarded(base: type[asyncio.Protocol], guard: ConnectionGuard) -> type[asyncio.Protocol]:
    """A subclass of uvicorn's protocol ``base`` that reports to ``guard`` (one per server)."""
    return type(f"Guarded{base.__name__}", (GuardedProtocol, base), {"guard": guard})
