"""The webhook listener under idle and slow connections, pipelining and odd paths (issue 19, items 10, 12).

Before: 500 connections that sent nothing (or one header byte every few
seconds) made every later webhook and ``/healthz`` answer 503, and were never
closed; a signed request pipelined before a malformed one was queued while its
client only saw the 400; a non-path target with a body was answered without
closing, so the unread body held the client. Each test runs under both HTTP
parsers, over raw sockets on 127.0.0.1, with bounded waits on conditions.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from ductile.adapters.http import HttpParser, HttpServer, WebhookDelivery, build_app, httptools_available
from ductile.adapters.http.connections import ConnectionGuard
from ductile.domain.config import Endpoint

SECRET = "flood-secret"
HOOK = Endpoint(path="/hook/pA", plugin="p", secret=SECRET)
PARSERS = [
    "h11",
    pytest.param(
        "httptools",
        marks=pytest.mark.skipif(not httptools_available(), reason="httptools cannot be imported here"),
    ),
]


def signed(path: str, body: bytes = b'{"n": 1}', *, extra: bytes = b"") -> bytes:
    sig = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {len(body)}\r\n"
        f"X-Hub-Signature-256: {sig}\r\n"
    ).encode()
    return head + extra + b"\r\n" + body


class Listener:
    """A real HttpServer on its own event loop in a thread, and what it was asked to queue."""

    def __init__(self, parser: HttpParser, **options: Any) -> None:
        self.deliveries: list[WebhookDelivery] = []
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="flood-loop", daemon=True)
        self.thread.start()
        body_timeout = options.pop("body_timeout", 5.0)

        async def submit(delivery: WebhookDelivery) -> str:
            self.deliveries.append(delivery)
            return f"job-{len(self.deliveries)}"

        async def health() -> dict[str, Any]:
            return {"status": "ok"}

        app = build_app(endpoints=lambda: [HOOK], submit=submit, health=health, body_timeout=body_timeout)
        self.server = HttpServer(app, "127.0.0.1", 0, parser=parser, **options)
        asyncio.run_coroutine_threadsafe(self.server.start(), self.loop).result(10)
        self.port = self.server.port

    def close(self) -> None:
        try:
            asyncio.run_coroutine_threadsafe(self.server.stop(), self.loop).result(15)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)
            self.loop.close()

    def connect(self) -> socket.socket:
        return socket.create_connection(("127.0.0.1", self.port), timeout=10)

    def until(self, condition: Callable[[ConnectionGuard], bool], what: str, timeout: float = 5.0) -> None:
        """Wait (bounded) until ``condition`` holds of the server's connection guard."""
        guard = self.server.guard
        assert guard is not None
        deadline = time.monotonic() + timeout
        while not condition(guard):
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            time.sleep(0.01)


@contextlib.contextmanager
def listening(parser: HttpParser, **options: Any) -> Iterator[Listener]:
    server = Listener(parser, **options)
    try:
        yield server
    finally:
        server.close()


#: Bytes received past the last response read, per socket (two responses may come in one read).
_LEFT: dict[socket.socket, bytes] = {}


def read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """One response with a Content-Length: (status, headers, body)."""
    buffer = _LEFT.pop(sock, b"")
    while b"\r\n\r\n" not in buffer:
        more = sock.recv(65536)
        assert more, f"closed before a response: {buffer!r}"
        buffer += more
    head, _, rest = buffer.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {n.strip().lower(): v.strip() for n, _, v in (x.partition(":") for x in lines)}
    length = int(headers.get("content-length", "0"))
    while len(rest) < length:
        more = sock.recv(65536)
        assert more, "closed inside a response body"
        rest += more
    if rest[length:]:
        _LEFT[sock] = rest[length:]
    return int(status_line.split()[1]), headers, rest[:length]


def closed_by_peer(sock: socket.socket, within: float) -> bool:
    """Whether the server closes ``sock`` within ``within`` seconds (anything it sends is skipped)."""
    deadline = time.monotonic() + within
    while (left := deadline - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            if sock.recv(65536) == b"":
                return True
        except TimeoutError:
            return False
        except ConnectionResetError:
            return True
    return False


def ask(listener: Listener, data: bytes) -> tuple[int, float]:
    """A new connection, one request: (status, seconds to the answer)."""
    started = time.monotonic()
    with listener.connect() as sock:
        sock.sendall(data)
        status, _, _ = read_response(sock)
    return status, time.monotonic() - started


def open_many(listener: Listener, count: int, first_bytes: bytes = b"") -> list[socket.socket]:
    socks = []
    for _ in range(count):
        sock = listener.connect()
        if first_bytes:
            sock.sendall(first_bytes)
        socks.append(sock)
    return socks


# --------------------------------------------------------------------------- item 10: floods


@pytest.mark.parametrize("parser", PARSERS)
def test_a_webhook_gets_its_202_within_5_s_while_500_idle_connections_are_open(parser: HttpParser) -> None:
    with listening(parser) as listener:
        idle = open_many(listener, 500)
        try:
            status, took = ask(listener, signed("/hook/pA"))
            assert (status, len(listener.deliveries)) == (202, 1)
            assert took < 5.0
            health, took = ask(listener, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            assert health == 200
            assert took < 5.0
        finally:
            for sock in idle:
                sock.close()


@pytest.mark.parametrize("parser", PARSERS)
def test_slowloris_connections_are_closed_at_the_head_deadline_and_starve_nobody(parser: HttpParser) -> None:
    with listening(parser, head_timeout=2.0) as listener:
        slow = open_many(listener, 500, first_bytes=b"POST /hook/pA HTTP/1.1\r\nHo")
        stop = threading.Event()

        def dribble() -> None:  # one more header byte a second on every connection
            while not stop.wait(1.0):
                for sock in slow:
                    with contextlib.suppress(OSError):
                        sock.send(b"s")

        dribbler = threading.Thread(target=dribble, daemon=True)
        dribbler.start()
        try:
            status, took = ask(listener, signed("/hook/pA"))
            assert status == 202
            assert took < 5.0
            # every dribbling connection is closed by the head deadline (2 s), none lasts
            survivors = [s for s in slow if not closed_by_peer(s, within=0.01)]
            deadline = time.monotonic() + 6.0
            while survivors and time.monotonic() < deadline:
                survivors = [s for s in survivors if not closed_by_peer(s, within=0.05)]
            assert survivors == []
        finally:
            stop.set()
            dribbler.join(5)
            for sock in slow:
                sock.close()


@pytest.mark.parametrize("parser", PARSERS)
def test_the_head_deadline_closes_idle_connections_but_not_one_whose_request_is_in_the_app(
    parser: HttpParser,
) -> None:
    with listening(parser, head_timeout=0.5, body_timeout=5.0) as listener:
        idle = listener.connect()
        partial = listener.connect()
        partial.sendall(b"POST /hook/pA HTTP/1.1\r\n")
        body = b'{"slow": "body"}'
        in_app = listener.connect()
        in_app.sendall(signed("/hook/pA", body)[: -len(body)])  # the head; the body comes later
        assert closed_by_peer(idle, within=3.0)
        assert closed_by_peer(partial, within=3.0)
        # by now in_app is past the head deadline too: it must not have been closed
        in_app.sendall(body)
        status, _, _ = read_response(in_app)
        assert status == 202
        # after its answer it waits for a next request: the head deadline applies again
        assert closed_by_peer(in_app, within=6.0)
        for sock in (idle, partial, in_app):
            sock.close()


@pytest.mark.parametrize("parser", PARSERS)
def test_past_the_limit_the_longest_waiting_connection_makes_room(parser: HttpParser) -> None:
    with listening(parser, max_connections=3) as listener:
        waiting = open_many(listener, 3)
        listener.until(lambda guard: guard.waiting == 3, "the three connections to be accepted")
        status, _ = ask(listener, signed("/hook/pA"))
        assert status == 202
        assert closed_by_peer(waiting[0], within=2.0), "the longest-waiting connection made room"
        assert not closed_by_peer(waiting[2], within=0.2)
        for sock in waiting:
            sock.close()


@pytest.mark.parametrize("parser", PARSERS)
def test_when_every_connection_is_inside_the_app_a_new_one_gets_503_and_then_room(
    parser: HttpParser,
) -> None:
    with listening(parser, max_connections=2, body_timeout=1.0) as listener:
        body = b'{"slow": 1}'
        busy = open_many(listener, 2, first_bytes=signed("/hook/pA", body)[: -len(body)])
        listener.until(lambda g: g.open == 2 and g.waiting == 0, "both heads to be in the app")
        with listener.connect() as extra:
            status, headers, _ = read_response(extra)
            assert (status, headers.get("connection")) == (503, "close")
        for sock in busy:  # the body deadline (1 s) ends them: nobody is locked out for long
            status, _, _ = read_response(sock)
            assert status == 408
            sock.close()
        status, _ = ask(listener, signed("/hook/pA"))
        assert status == 202


# --------------------------------------------------------------------------- item 12: answers


@pytest.mark.parametrize("parser", PARSERS)
def test_a_signed_request_pipelined_before_a_malformed_one_gets_its_202_before_the_400(
    parser: HttpParser,
) -> None:
    with listening(parser) as listener, listener.connect() as sock:
        sock.sendall(signed("/hook/pA") + b"GARBAGE \x01\x02 / HTTP/1.1\r\n\r\n")
        first, _, body = read_response(sock)
        second, _, _ = read_response(sock)
        assert (first, second) == (202, 400)
        assert body == b'{"job_id":"job-1"}'
        assert len(listener.deliveries) == 1
        assert closed_by_peer(sock, within=2.0)


@pytest.mark.parametrize("parser", PARSERS)
@pytest.mark.parametrize("target", ["/hook/pA", "/hook/p%41", "/hook/%70%41", "/hook/pA?x=1"])
def test_percent_encoded_paths_match_as_decoded(parser: HttpParser, target: str) -> None:
    with listening(parser) as listener:
        status, took = ask(listener, signed(target))
        assert status == 202
        assert took < 2.0


@pytest.mark.parametrize("parser", PARSERS)
@pytest.mark.parametrize("target", ["/hook/p%0aA", "/hook/p%2541", "/hook/p%41%0d%0a"])
def test_a_path_that_names_no_endpoint_is_404_and_never_stalls(parser: HttpParser, target: str) -> None:
    with listening(parser) as listener, listener.connect() as sock:
        started = time.monotonic()
        sock.sendall(signed(target))
        status, headers, _ = read_response(sock)
        assert status == 404
        assert headers.get("connection") == "close"  # its body was not read: never left hanging
        assert closed_by_peer(sock, within=2.0)
        assert time.monotonic() - started < 2.0
        assert listener.deliveries == []
