"""uvicorn's httptools protocol, bounded like h11 in what it buffers outside bodies (ADR 0017).

Importing this module imports httptools (a C extension that may be missing):
:func:`~ductile.adapters.http.parsers.bounded_httptools_protocol` imports it
only when httptools is the parser.
"""

from __future__ import annotations

import asyncio

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from ductile.adapters.http.coalesce import CoalescingTransport
from ductile.adapters.http.headers import MAX_HEAD_SIZE


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's protocol with h11's bound on buffered non-body bytes, and no trailers.

    httptools gathers a header field (and uvicorn the request target) in
    Python bytes that grow by concatenation, without any limit: measured here,
    one 60 MiB header cost the server 120 MiB of memory and 6 s of CPU (the
    copying is quadratic), where h11 refuses at 16 KiB. h11's rule: once a
    socket read leaves an event incomplete (a head, a chunk-size line, a
    trailer) with more than ``max_incomplete_event_size`` bytes buffered, the
    request is refused with 400. This class applies the same rule with
    :data:`~ductile.adapters.http.headers.MAX_HEAD_SIZE`, counting the bytes of consecutive reads in which
    the parser made no progress (no end of head, no body bytes, no end of
    message). So a head may still arrive whole in one read of up to 256 KiB
    (asyncio's read size), as under h11; anything slower is refused past
    16 KiB, and a parser's buffer never holds more than that plus two reads.

    It also drops a chunked body's trailer fields, as h11 does: uvicorn's
    httptools protocol appends them to the request's headers, where they
    would reach the signature check, the dedupe key and the plugin.

    And it answers what it parsed before it refuses what follows (issue 19,
    item 12): uvicorn's protocol answers a malformed request with 400 and
    closes at once, even when a valid request pipelined before it is still
    in the app; that request was then queued but its 202 never sent. Here
    the 400 waits until the requests before it are answered (reading stops
    meanwhile), as h11 does by parsing one request at a time.

    Its writes go through a :class:`~ductile.adapters.http.coalesce.CoalescingTransport`:
    a response's head and body leave in one socket write.
    """

    #: Bytes received in consecutive reads during which the parser made no progress.
    _stalled_bytes = 0
    #: Parser progress events so far (end of head, body bytes, end of message).
    _progress = 0
    #: The head is complete: further header fields are a trailer.
    _in_body = False
    #: A 400 held back until the requests parsed before it are answered.
    _deferred_400: str | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        # After uvicorn's own set-up: its flow control pauses the socket's transport itself.
        self.transport = CoalescingTransport(transport, self.loop)  # type: ignore[assignment]

    def _answering(self) -> bool:
        """Is a request parsed before now still being answered (or waiting in the pipeline)?"""
        return (self.cycle is not None and not self.cycle.response_complete) or bool(self.pipeline)

    def send_400_response(self, msg: str) -> None:
        # Held back only when the fault is in a *new* request: every request before it was
        # received whole. A fault inside the body (or trailer) of the request being received
        # is that request's own answer, at once.
        whole = self.cycle is None or not self.cycle.more_body
        if whole and self._answering() and not self.transport.is_closing():
            self._deferred_400 = msg
            self.flow.pause_reading()
            return
        super().send_400_response(msg)

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self._deferred_400 is not None and not self._answering() and not self.transport.is_closing():
            msg, self._deferred_400 = self._deferred_400, None
            super().send_400_response(msg)

    def data_received(self, data: bytes) -> None:
        before = self._progress
        super().data_received(data)
        if self._progress != before:
            self._stalled_bytes = 0
            return
        self._stalled_bytes += len(data)
        if self._stalled_bytes > MAX_HEAD_SIZE and not self.transport.is_closing() and not self._deferred_400:
            self.logger.warning("Request head or chunk framing over %d bytes.", MAX_HEAD_SIZE)
            self.send_400_response("Invalid HTTP request received.")

    def on_message_begin(self) -> None:
        self._in_body = False
        super().on_message_begin()

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._in_body:  # a chunked body's trailer field: h11 drops them, so do we
            return
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._progress += 1
        self._in_body = True
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        self._progress += 1
        super().on_body(body)

    def on_message_complete(self) -> None:
        self._progress += 1
        super().on_message_complete()
