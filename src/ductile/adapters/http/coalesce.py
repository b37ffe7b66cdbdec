"""One socket write per loop iteration: a transport that gathers what a connection writes.

uvicorn's protocol writes a response's head when the app sends
``http.response.start`` and its body when the app sends the body: two
``send`` system calls, two TCP segments, two wake-ups of the client, for an
answer of a few hundred bytes. Measured on the webhook path (a 202 is ~150
bytes), the second write was a tenth of the event loop's time per request.

:class:`CoalescingTransport` stands between the protocol and the socket's
transport: every write of the connection is appended to one buffer, sent as
one write at the end of the event loop's current iteration (``call_soon``),
or at once before the transport closes, or as soon as :data:`HOLD_AT_MOST`
bytes are waiting. Order is kept (every write of the connection goes through
it), nothing is held past the iteration that wrote it, and flow control stays
the socket transport's: a body streamed faster than the client reads still
reaches it within 64 KiB, so it pauses the writer as before.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

#: Bytes gathered at most before they are handed to the socket's transport at once.
HOLD_AT_MOST = 64 * 1024


class CoalescingTransport:
    """Wraps a socket transport; writes made in one loop iteration go out as one write."""

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._pending: list[bytes] = []
        self._size = 0

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not data:
            return
        if not self._pending:
            self._loop.call_soon(self.flush)
        chunk = bytes(data)
        self._pending.append(chunk)
        self._size += len(chunk)
        if self._size >= HOLD_AT_MOST:
            self.flush()

    def writelines(self, chunks: Iterable[bytes | bytearray | memoryview]) -> None:
        for chunk in chunks:
            self.write(chunk)

    def flush(self) -> None:
        """Send what was written so far (nothing when the socket is already closing)."""
        if not self._pending:
            return
        data = self._pending[0] if len(self._pending) == 1 else b"".join(self._pending)
        self._pending.clear()
        self._size = 0
        if not self._transport.is_closing():
            self._transport.write(data)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def abort(self) -> None:
        self._pending.clear()
        self._size = 0
        self._transport.abort()

    def __getattr__(self, name: str) -> Any:
        # Everything else (is_closing, get_extra_info, pause_reading...) is the socket's.
        return getattr(self._transport, name)
