"""Which HTTP/1.1 parser uvicorn runs (ADR 0017), and the bounds we add to httptools.

httptools (C, llhttp) when it can be imported, else uvicorn's pure-Python h11,
which costs about twice the CPU per request. With httptools we run uvicorn's
protocol with two changes that give it h11's bounds
(:func:`bounded_httptools_protocol`).
"""

from __future__ import annotations

import asyncio
import functools
import importlib
from typing import Literal, get_args

#: The most bytes of an incomplete request head (or chunk-size line, or trailer) buffered
#: before the request is refused with 400: h11's default, applied to httptools too.
MAX_HEAD_SIZE = 16 * 1024


#: uvicorn's HTTP/1.1 implementations that we allow.
ConcreteParser = Literal["h11", "httptools"]
#: What a caller may ask for: "auto" is httptools when it can be imported, else h11.
HttpParser = Literal["auto", "h11", "httptools"]
PARSERS: tuple[str, ...] = get_args(HttpParser)


@functools.cache
def httptools_available() -> bool:
    """Whether ``import httptools`` works here (a C extension: it may be missing or broken)."""
    try:
        importlib.import_module("httptools")
    except ImportError:
        return False
    return True


def resolve_parser(requested: str, *, httptools_importable: bool | None = None) -> ConcreteParser:
    """The parser to run for ``requested`` (ADR 0017).

    "auto" is httptools when it can be imported (about twice the throughput
    of h11's pure-Python parser), else h11, so a platform without a wheel
    still works. Asking for httptools explicitly when it cannot be imported,
    or for a parser we do not know, is a :class:`ValueError` naming the value.
    """
    available = httptools_available() if httptools_importable is None else httptools_importable
    if requested == "auto":
        return "httptools" if available else "h11"
    if requested == "h11":
        return "h11"
    if requested == "httptools":
        if not available:
            raise ValueError(
                "HTTP parser 'httptools' was requested but the httptools module cannot be imported"
            )
        return "httptools"
    raise ValueError(f"unknown HTTP parser {requested!r}; expected one of {', '.join(PARSERS)}")


@functools.cache
def bounded_httptools_protocol() -> type[asyncio.Protocol]:
    """uvicorn's httptools protocol, bounded like h11 in what it buffers outside bodies.

    httptools gathers a header field (and uvicorn the request target) in
    Python bytes that grow by concatenation, without any limit: measured here,
    one 60 MiB header cost the server 120 MiB of memory and 6 s of CPU (the
    copying is quadratic), where h11 refuses at 16 KiB. h11's rule: once a
    socket read leaves an event incomplete (a head, a chunk-size line, a
    trailer) with more than ``max_incomplete_event_size`` bytes buffered, the
    request is refused with 400. This class applies the same rule with
    :data:`MAX_HEAD_SIZE`, counting the bytes of consecutive reads in which
    the parser made no progress (no end of head, no body bytes, no end of
    message). So a head may still arrive whole in one read of up to 256 KiB
    (asyncio's read size), as under h11; anything slower is refused past
    16 KiB, and a parser's buffer never holds more than that plus two reads.

    It also drops a chunked body's trailer fields, as h11 does: uvicorn's
    httptools protocol appends them to the request's headers, where they
    would reach the signature check, the dedupe key and the plugin.
    """
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol  # noqa: PLC0415 - needs httptools

    class BoundedHttpToolsProtocol(HttpToolsProtocol):
        #: Bytes received in consecutive reads during which the parser made no progress.
        _stalled_bytes = 0
        #: Parser progress events so far (end of head, body bytes, end of message).
        _progress = 0
        #: The head is complete: further header fields are a trailer.
        _in_body = False

        def data_received(self, data: bytes) -> None:
            before = self._progress
            super().data_received(data)
            if self._progress != before:
                self._stalled_bytes = 0
                return
            self._stalled_bytes += len(data)
            if self._stalled_bytes > MAX_HEAD_SIZE and not self.transport.is_closing():
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

    return BoundedHttpToolsProtocol
