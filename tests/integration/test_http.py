"""The webhook/healthz HTTP adapter over real HTTP on 127.0.0.1 (SPEC D11, D20; PITFALLS "HTTP").

Every test runs under both of uvicorn's HTTP parsers, h11 and httptools (ADR 0017): the
``parser`` fixture is parametrized over them, and the answers must not depend on it. Where the
two parsers themselves answer malformed framing differently,
``test_documented_differences_between_the_parsers`` pins each difference (the ADR lists them).

Every test starts its own server on an ephemeral port (or shares one per parser). Well-formed
requests go through httpx; malformed or hostile ones (non-ASCII header bytes, lying
Content-Length, smuggling, floods) through raw sockets, since httpx refuses to send them. Timing
bounds are deadlines on conditions ("answered within 2 s"), generous for a busy 2-core machine
but far below what the failure would take (a server that read a declared 10 MB body would wait
for it until the body timeout).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import os
import select
import signal
import socket
import ssl
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from typing import Any

import attrs
import httpx
import pytest

from ductile.adapters.http import (
    MAX_HEAD_SIZE,
    HttpParser,
    HttpServer,
    ListenError,
    WebhookDelivery,
    build_app,
    httptools_available,
)
from ductile.adapters.http.answers import RefusalLog, refusals
from ductile.domain.config import Endpoint

SECRET = "It's a Secret to Everybody"
HOOK = Endpoint(path="/hook/github", plugin="github-handler", secret=SECRET)
SMALL = Endpoint(path="/hook/small", plugin="small", secret=SECRET, max_body_size=1000)
DEDUPED = Endpoint(
    path="/hook/dedupe", plugin="dd", secret=SECRET, dedupe_header="X-GitHub-Delivery", event_type="push"
)
ALL = (HOOK, SMALL, DEDUPED)
HEALTH = {
    "status": "ok",
    "uptime_seconds": 12.5,
    "queue_depth": 3,
    "plugins_loaded": 2,
    "plugins_circuit_open": 0,
}
#: The shared server's body deadline. A server that waited for an unsent body would answer 408 after it;
#: the "at once" tests below require 413 well inside it.
BODY_TIMEOUT = 1.0
PROMPT = 0.8


PARSERS = [
    "h11",
    pytest.param(
        "httptools",
        marks=pytest.mark.skipif(not httptools_available(), reason="httptools cannot be imported here"),
    ),
]

#: http:// only; one shared context spares every client httpx's ~50 ms of certificate loading.
NO_TLS = ssl.create_default_context()


def signature(body: bytes, secret: str = SECRET) -> str:
    """Computed independently of the adapter's own helper."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


@attrs.define
class Recorder:
    deliveries: list[WebhookDelivery] = attrs.field(factory=list)
    fail: bool = False

    async def submit(self, delivery: WebhookDelivery) -> str:
        if self.fail:
            raise RuntimeError("disk on fire at /var/lib/secret-path")
        self.deliveries.append(delivery)
        return f"job-{len(self.deliveries)}"

    async def health(self) -> dict[str, Any]:
        return dict(HEALTH)


class SharedServer:
    """One real server for the whole module, on its own event loop in a thread.

    Starting and stopping uvicorn costs ~0.3 s; sharing it keeps ~80 cases fast. Tests
    reset the recorder and the endpoint list through the ``shared`` fixture.
    """

    def __init__(self, parser: HttpParser) -> None:
        self.parser = parser
        self.recorder = Recorder()
        self.endpoints: list[Endpoint] = list(ALL)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="http-test-loop", daemon=True)
        self.thread.start()
        app = build_app(
            endpoints=lambda: self.endpoints,
            submit=self.recorder.submit,
            health=self.recorder.health,
            body_timeout=BODY_TIMEOUT,
        )
        self.server = HttpServer(app, "127.0.0.1", 0, parser=parser)
        asyncio.run_coroutine_threadsafe(self.server.start(), self.loop).result(10)
        self.port = self.server.port

    def close(self) -> None:
        try:
            asyncio.run_coroutine_threadsafe(self.server.stop(), self.loop).result(10)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)
            self.loop.close()

    def client(self) -> httpx.Client:
        return httpx.Client(
            base_url=f"http://127.0.0.1:{self.port}", trust_env=False, verify=NO_TLS, timeout=10
        )

    def post(
        self, path: str, body: bytes, *, sig: str | None = "auto", headers: dict[str, str] | None = None
    ) -> httpx.Response:
        all_headers = dict(headers or {})
        if sig == "auto":
            all_headers["X-Hub-Signature-256"] = signature(body)
        elif sig is not None:
            all_headers["X-Hub-Signature-256"] = sig
        with self.client() as client:
            return client.post(path, content=body, headers=all_headers)

    @property
    def deliveries(self) -> list[WebhookDelivery]:
        return self.recorder.deliveries


@pytest.fixture(scope="module", params=PARSERS)
def parser(request: pytest.FixtureRequest) -> HttpParser:
    """Every test runs once per HTTP parser; pytest groups them so each shared server starts once."""
    value: HttpParser = request.param
    return value


@pytest.fixture(scope="module")
def module_server(parser: HttpParser) -> Iterator[SharedServer]:
    server = SharedServer(parser)
    yield server
    server.close()


@pytest.fixture
def shared(module_server: SharedServer) -> SharedServer:
    module_server.recorder.deliveries.clear()
    module_server.recorder.fail = False
    module_server.endpoints[:] = ALL
    return module_server


@contextlib.asynccontextmanager
async def serving(
    parser: HttpParser,
    endpoints: Callable[[], Sequence[Endpoint]] = lambda: ALL,
    *,
    health: Callable[[], Awaitable[dict[str, Any]]] | None = None,
    max_connections: int = 128,
) -> AsyncIterator[HttpServer]:
    """A server of its own, on the caller's loop (in the main thread)."""
    rec = Recorder()
    app = build_app(endpoints=endpoints, submit=rec.submit, health=health or rec.health)
    server = HttpServer(app, "127.0.0.1", 0, parser=parser, max_connections=max_connections)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@attrs.frozen
class RawResponse:
    status: int
    headers: dict[str, str]
    body: bytes
    #: The server closed the connection after this response.
    closed: bool
    elapsed: float


def exchange(port: int, data: bytes, *, check_close: bool = False, timeout: float = 10.0) -> RawResponse:
    """Send raw bytes and read one response (by its Content-Length, else to EOF).

    With ``check_close``, wait up to 1 s more to see whether the server closes the connection.
    """
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        buffer = b""
        while b"\r\n\r\n" not in buffer:
            more = sock.recv(65536)
            assert more, f"connection closed before a response: {buffer!r}"
            buffer += more
        elapsed = time.monotonic() - started
        head, _, rest = buffer.partition(b"\r\n\r\n")
        status_line, *lines = head.decode("latin-1").split("\r\n")
        headers = {}
        for line in lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        status = int(status_line.split()[1])
        if "content-length" not in headers:  # uvicorn's own 400: body delimited by the close
            while more := sock.recv(65536):
                rest += more
            return RawResponse(status, headers, rest, True, elapsed)
        length = int(headers["content-length"])
        while len(rest) < length:
            more = sock.recv(65536)
            assert more, "connection closed inside the response body"
            rest += more
        closed = False
        if check_close:
            sock.settimeout(1.0)
            try:
                closed = sock.recv(1) == b""
            except TimeoutError:
                closed = False
            except ConnectionResetError:
                closed = True
        return RawResponse(status, headers, rest[:length], closed, elapsed)


def exchange_all(port: int, data: bytes, *, count: int, timeout: float = 10.0) -> list[tuple[int, bytes]]:
    """Send raw bytes on one connection and read ``count`` responses (each with a Content-Length)."""
    answers: list[tuple[int, bytes]] = []
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        buffer = b""
        while len(answers) < count:
            while b"\r\n\r\n" not in buffer:
                more = sock.recv(65536)
                assert more, f"connection closed after {len(answers)} responses: {buffer!r}"
                buffer += more
            head, _, buffer = buffer.partition(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            length = next(
                int(v) for n, _, v in (x.partition(":") for x in lines[1:]) if n.lower() == "content-length"
            )
            while len(buffer) < length:
                more = sock.recv(65536)
                assert more, "connection closed inside a response body"
                buffer += more
            answers.append((int(lines[0].split()[1]), buffer[:length]))
            buffer = buffer[length:]
    return answers


def request_head(path: str, headers: Sequence[tuple[bytes, bytes]], method: bytes = b"POST") -> bytes:
    lines = [method + b" " + path.encode() + b" HTTP/1.1", b"Host: 127.0.0.1"]
    lines += [name + b": " + value for name, value in headers]
    return b"\r\n".join(lines) + b"\r\n\r\n"


def chunk(data: bytes) -> bytes:
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


@pytest.fixture
def http_log() -> Iterator[list[logging.LogRecord]]:
    """Records what the adapter logs, whatever another test did to logger propagation."""
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    logger = logging.getLogger("ductile.http")
    handler = Keep(level=logging.DEBUG)
    old_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    refusals.reset()  # the shared server's earlier refusals must not rate-limit this test's lines
    yield records
    logger.removeHandler(handler)
    logger.setLevel(old_level)


# ----------------------------------------------------------------- accepted deliveries


def test_a_verified_post_is_submitted_with_its_payload_shape_and_answered_202(shared: SharedServer) -> None:
    payload = {
        "action": "opened",
        "list": [1, 2.5, "three", None, True, False, [], {}],
        "nested": {"deep": {"deeper": [{"x": -1}]}},
        "unicode": "héllo 世界 🎉 \u0000 \u00e9",
        "big": 10**40,
        "neg_zero": -0.0,
        "exp": 1.5e300,
    }
    body = json.dumps(payload, ensure_ascii=False).encode()

    response = shared.post("/hook/github", body, headers={"X-GitHub-Event": "issues"})

    assert response.status_code == 202
    assert response.json() == {"job_id": "job-1"}
    assert response.headers["content-type"] == "application/json"
    [delivery] = shared.deliveries
    assert delivery.endpoint == HOOK
    assert delivery.payload == payload
    assert json.dumps(delivery.payload, ensure_ascii=False) == json.dumps(payload, ensure_ascii=False)
    assert delivery.headers["x-github-event"] == "issues"
    assert delivery.headers["x-hub-signature-256"] == signature(body)
    assert delivery.headers["content-length"] == str(len(body))
    assert delivery.dedupe_key is None


def test_escaped_unicode_arrives_decoded(shared: SharedServer) -> None:
    body = rb'{"emoji": "\ud83d\ude00", "e": "caf\u00e9"}'
    assert shared.post("/hook/github", body).status_code == 202
    assert shared.deliveries[0].payload == {"emoji": "😀", "e": "café"}


@pytest.mark.parametrize(
    "payload",
    [[1, [2, [3]]], "just a string", 42, None, True, 3.25, []],
    ids=["array", "string", "int", "null", "bool", "float", "empty-array"],
)
def test_any_json_value_is_a_payload(shared: SharedServer, payload: Any) -> None:
    assert shared.post("/hook/github", json.dumps(payload).encode()).status_code == 202
    assert shared.deliveries[0].payload == payload


@pytest.mark.parametrize(
    "make_sig",
    [
        signature,
        lambda b: signature(b).removeprefix("sha256="),
        lambda b: signature(b).upper(),
        lambda b: "sha256=" + signature(b).removeprefix("sha256=").upper(),
    ],
    ids=["prefixed", "bare-hex", "all-upper", "upper-hex"],
)
def test_accepted_signature_forms(shared: SharedServer, make_sig: Callable[[bytes], str]) -> None:
    body = b'{"zen": "Keep it logically awesome."}'
    response = shared.post("/hook/github", body, sig=make_sig(body))
    assert response.status_code == 202, response.text
    assert len(shared.deliveries) == 1


def test_a_custom_signature_header_is_the_one_checked(shared: SharedServer) -> None:
    endpoint = Endpoint(path="/custom", plugin="c", secret=SECRET, signature_header="X-Signature")
    shared.endpoints[:] = [endpoint]
    body = b'{"ok": true}'
    wrong_header = shared.post("/custom", body)
    right_header = shared.post("/custom", body, sig=None, headers={"x-signature": signature(body)})
    assert (wrong_header.status_code, right_header.status_code) == (403, 202)


def test_a_body_of_exactly_the_limit_is_accepted_by_either_framing(shared: SharedServer) -> None:
    body = b"[" + b" " * (SMALL.max_body_size - 2) + b"]"
    assert len(body) == SMALL.max_body_size
    assert shared.post("/hook/small", body).status_code == 202
    head = request_head(
        "/hook/small",
        [(b"X-Hub-Signature-256", signature(body).encode()), (b"Transfer-Encoding", b"chunked")],
    )
    assert exchange(shared.port, head + chunk(body[:500]) + chunk(body[500:]) + b"0\r\n\r\n").status == 202
    assert [d.payload for d in shared.deliveries] == [[], []]


def test_a_large_valid_body_is_parsed_in_the_worker_thread_path(shared: SharedServer) -> None:
    payload = {f"key{i}": [i, f"value {i}", i + 0.5] for i in range(5000)}
    body = json.dumps(payload).encode()
    assert len(body) > 64 * 1024
    assert shared.post("/hook/github", body).status_code == 202
    assert shared.deliveries[0].payload == payload


def test_keep_alive_serves_many_requests_on_one_connection(shared: SharedServer) -> None:
    with shared.client() as client:
        for i in range(5):
            body = json.dumps({"n": i}).encode()
            response = client.post(
                "/hook/github", content=body, headers={"X-Hub-Signature-256": signature(body)}
            )
            assert response.status_code == 202
            assert response.json() == {"job_id": f"job-{i + 1}"}
    assert [d.payload["n"] for d in shared.deliveries] == list(range(5))


# ----------------------------------------------------------------- dedupe and headers


def test_the_dedupe_header_becomes_the_dedupe_key_when_present(shared: SharedServer) -> None:
    body = b'{"ref": "refs/heads/main"}'
    with_key = shared.post("/hook/dedupe", body, headers={"X-GitHub-Delivery": "72d3162e-cc78-11e3-81ab"})
    without = shared.post("/hook/dedupe", body)
    blank = shared.post("/hook/dedupe", body, headers={"X-GitHub-Delivery": ""})
    not_configured = shared.post("/hook/github", body, headers={"X-GitHub-Delivery": "abc"})
    assert [r.status_code for r in (with_key, without, blank, not_configured)] == [202] * 4
    assert [d.dedupe_key for d in shared.deliveries] == ["72d3162e-cc78-11e3-81ab", None, None, None]
    assert shared.deliveries[0].endpoint.event_type == "push"


def test_credentials_in_headers_are_masked_and_repeats_joined(shared: SharedServer) -> None:
    """Issue 19, item 13: names kept, values replaced, for every header that carries a credential."""
    body = b'{"a": 1}'
    head = request_head(
        "/hook/github",
        [
            (b"X-Hub-Signature-256", signature(body).encode()),
            (b"Content-Length", str(len(body)).encode()),
            (b"Authorization", b"Bearer hunter2"),
            (b"Cookie", b"session=abc"),
            (b"Proxy-Authorization", b"Basic Zm9vOmJhcg=="),
            (b"X-Api-Key", b"k-123456"),
            (b"X-Gitlab-Token", b"glpat-abcdef"),
            (b"X-Session-Id", b"s-987"),
            (b"X-Multi", b"one"),
            (b"x-multi", b"two"),
            (b"X-Latin", b"caf\xe9"),
        ],
    )
    assert exchange(shared.port, head + body).status == 202
    headers = shared.deliveries[0].headers
    secret = ("authorization", "cookie", "proxy-authorization", "x-api-key", "x-gitlab-token", "x-session-id")
    assert {name: headers[name] for name in secret} == dict.fromkeys(secret, "[masked]")
    assert headers["x-hub-signature-256"] == signature(body)  # an HMAC, not a credential
    assert headers["x-multi"] == "one, two"
    assert headers["x-latin"] == "café"
    assert all(name == name.lower() for name in headers)
    for value in ("hunter2", "session=abc", "Zm9vOmJhcg", "k-123456", "glpat", "s-987"):
        assert value not in repr(shared.deliveries[0])


# ----------------------------------------------------------------- refused signatures

A_BODY = b'{"a": 1}'


@pytest.mark.parametrize(
    "sig",
    [
        signature(A_BODY, secret="wrong secret"),
        None,
        "",
        "sha256=",
        "sha256=" + "g" * 64,
        "sha256=" + "ab" * 31,
        "sha256=" + "ab" * 33,
        "sha1=" + "ab" * 32,
        "md5=" + signature(A_BODY).removeprefix("sha256="),
        signature(b'{"a": 2}'),
        signature(A_BODY).replace("sha256=", "sha256= "),
        signature(A_BODY)[:-1] + " 0",
    ],
    ids=[
        "wrong-secret",
        "missing",
        "empty",
        "prefix-only",
        "non-hex",
        "short",
        "long",
        "other-prefix",
        "unknown-prefix",
        "other-body",
        "space-after-prefix",
        "inner-space",
    ],
)
def test_bad_signatures_are_403_without_detail(
    shared: SharedServer, http_log: list[logging.LogRecord], sig: str | None
) -> None:
    response = shared.post("/hook/github", A_BODY, sig=sig)
    assert response.status_code == 403
    assert response.content == b'{"error":"forbidden"}'
    assert shared.deliveries == []
    assert any(r.levelno == logging.INFO and "signature" in r.getMessage() for r in http_log)


def test_two_signature_headers_are_refused_even_if_both_are_right(shared: SharedServer) -> None:
    head = request_head(
        "/hook/github",
        [
            (b"X-Hub-Signature-256", signature(A_BODY).encode()),
            (b"X-Hub-Signature-256", signature(A_BODY).encode()),
            (b"Content-Length", str(len(A_BODY)).encode()),
        ],
    )
    response = exchange(shared.port, head + A_BODY)
    assert (response.status, response.body) == (403, b'{"error":"forbidden"}')


@pytest.mark.parametrize(
    "value",
    [b"sha256=\xe9\xff" + b"a" * 62, b"sha256=" + "é".encode() * 32, b"\x80" * 64, b"\xff" * 71],
    ids=["latin-1", "utf-8-multibyte", "high-bytes", "prefix-length-garbage"],
)
def test_non_ascii_bytes_in_the_signature_header_are_403_not_500(shared: SharedServer, value: bytes) -> None:
    head = request_head(
        "/hook/github", [(b"X-Hub-Signature-256", value), (b"Content-Length", str(len(A_BODY)).encode())]
    )
    response = exchange(shared.port, head + A_BODY)
    assert (response.status, response.body) == (403, b'{"error":"forbidden"}')


def test_the_signature_is_checked_before_the_body_is_parsed(shared: SharedServer) -> None:
    assert shared.post("/hook/github", b"not json", sig="sha256=" + "0" * 64).status_code == 403


# ----------------------------------------------------------------- bodies that are not JSON


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"not json",
        b'{"a": 1} trailing',
        b'{"a": "\xff\xfe"}',
        '{"a": "é"}'.encode("utf-16"),
        b"\xef\xbb\xbf{}",
        b"NaN",
        b'{"a": Infinity}',
        b"[-Infinity]",
        b"1e400",
        b'{"n": ' + b"9" * 5000 + b"}",
        b"[" * 100_000 + b"]" * 100_000,
        b"[" * 10_000 + b"]" * 10_000,
        b'{"a": [1, 2}',
        rb'{"a": "\ud800"}',
    ],
    ids=[
        "empty",
        "text",
        "trailing",
        "invalid-utf8",
        "utf16",
        "bom",
        "nan",
        "infinity",
        "minus-infinity",
        "float-overflow",
        "huge-int",
        "deep-nesting-threaded",
        "deep-nesting-inline",
        "unbalanced",
        "lone-surrogate",
    ],
)
def test_a_correctly_signed_body_that_is_not_json_is_400(shared: SharedServer, body: bytes) -> None:
    response = shared.post("/hook/github", body)
    assert response.status_code == 400
    assert response.content == b'{"error":"body is not valid JSON"}'
    assert shared.deliveries == []


# ----------------------------------------------------------------- sizes and slow bodies


def test_a_declared_oversize_body_is_413_at_once_without_reading_it(
    shared: SharedServer, http_log: list[logging.LogRecord]
) -> None:
    head = request_head(
        "/hook/github", [(b"X-Hub-Signature-256", signature(b"").encode()), (b"Content-Length", b"10000000")]
    )
    # Not one body byte is sent: a server that waited for them would answer 408 after BODY_TIMEOUT.
    response = exchange(shared.port, head, check_close=True)
    assert response.status == 413
    assert response.elapsed < PROMPT
    assert response.headers.get("connection") == "close"
    assert response.closed
    assert shared.deliveries == []
    [warning] = [r for r in http_log if "webhook refused" in r.getMessage()]
    assert warning.levelno == logging.INFO
    assert "max_body_size" in warning.getMessage()
    assert warning.fields["declared"] == 10_000_000  # type: ignore[attr-defined]


def test_an_oversize_chunked_body_is_413_while_streaming(shared: SharedServer) -> None:
    head = request_head(
        "/hook/small", [(b"X-Hub-Signature-256", b"sha256=" + b"0" * 64), (b"Transfer-Encoding", b"chunked")]
    )
    # 1,200 bytes of a body that never ends (no terminating chunk): only counting can stop it.
    response = exchange(shared.port, head + chunk(b"x" * 600) + chunk(b"y" * 600), check_close=True)
    assert response.status == 413
    assert response.elapsed < PROMPT
    assert response.closed


def test_one_byte_over_the_limit_is_413_by_either_framing(shared: SharedServer) -> None:
    body = b"[" + b" " * (SMALL.max_body_size - 1) + b"]"
    by_length = shared.post("/hook/small", body)
    head = request_head(
        "/hook/small",
        [(b"X-Hub-Signature-256", signature(body).encode()), (b"Transfer-Encoding", b"chunked")],
    )
    by_count = exchange(shared.port, head + chunk(body) + b"0\r\n\r\n")
    assert (by_length.status_code, by_count.status) == (413, 413)
    assert shared.deliveries == []


def test_a_body_shorter_than_its_content_length_is_cut_off_with_408(shared: SharedServer) -> None:
    head = request_head(
        "/hook/github", [(b"X-Hub-Signature-256", signature(A_BODY).encode()), (b"Content-Length", b"100")]
    )
    response = exchange(shared.port, head + A_BODY, check_close=True)
    assert response.status == 408
    assert BODY_TIMEOUT * 0.9 <= response.elapsed < BODY_TIMEOUT + 2.0
    assert response.closed
    assert shared.deliveries == []


def test_a_chunked_body_that_stalls_is_cut_off_with_408(shared: SharedServer) -> None:
    head = request_head(
        "/hook/github", [(b"X-Hub-Signature-256", b"sha256=" + b"0" * 64), (b"Transfer-Encoding", b"chunked")]
    )
    response = exchange(shared.port, head + chunk(b'{"a":'), check_close=True)
    assert response.status == 408
    assert response.closed


#: What each flood sends first; then it sends the same 64 KiB piece until refused (or 100 MiB).
#: The body flood is a body far over the limit; the others never finish a header or trailer field,
#: which httptools (unbounded by itself) would gather in memory, copying it for every read.
FLOODS = {
    "chunked-body": (
        request_head(
            "/hook", [(b"X-Hub-Signature-256", b"sha256=" + b"0" * 64), (b"Transfer-Encoding", b"chunked")]
        ),
        chunk(b"a" * 65536),
    ),
    "header": (b"POST /hook HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Endless: ", b"h" * 65536),
    "trailer": (
        request_head(
            "/hook", [(b"X-Hub-Signature-256", b"sha256=" + b"0" * 64), (b"Transfer-Encoding", b"chunked")]
        )
        + chunk(b"[]")
        + b"0\r\nX-Endless-Trailer: ",
        b"t" * 65536,
    ),
}


def test_floods_are_refused_with_flat_server_memory(parser: HttpParser) -> None:
    """The server runs in its own process so its peak RSS (VmHWM) and CPU are its alone."""
    script = textwrap.dedent(
        f"""
        import asyncio, sys
        from ductile.adapters.http import HttpServer, build_app
        from ductile.domain.config import Endpoint

        async def submit(d): return "job"
        async def health(): return {{}}

        async def main():
            app = build_app(endpoints=lambda: [Endpoint(path="/hook", plugin="p", secret="s")],
                            submit=submit, health=health, body_timeout=3)
            server = HttpServer(app, "127.0.0.1", 0, parser={parser!r})
            await server.start()
            print(server.port, flush=True)
            await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
            await server.stop()

        asyncio.run(main())
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], 30)
        assert ready, "the server process did not report its port"
        port = int(proc.stdout.readline())

        def status(field: str) -> int:
            with open(f"/proc/{proc.pid}/status") as lines:
                for line in lines:
                    if line.startswith(field + ":"):
                        return int(line.split()[1])
            raise AssertionError(f"no {field} line")

        def cpu_seconds() -> float:
            with open(f"/proc/{proc.pid}/stat") as stat:
                fields = stat.read().rpartition(")")[2].split()
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

        for kind, (head, piece) in FLOODS.items():
            before, cpu_before = status("VmHWM"), cpu_seconds()
            sent, reply = flood(port, head, piece, total=100 * 1024 * 1024)
            after, cpu = status("VmHWM"), cpu_seconds() - cpu_before
            print(
                f"{parser} {kind} flood: {sent / 2**20:.1f} MiB sent before the server closed; "
                f"peak RSS {before} -> {after} KiB; server CPU {cpu:.2f} s"
            )
            assert sent < 32 * 1024 * 1024, f"{kind}: the server kept reading far past its limit"
            assert after - before < 8 * 1024, f"{kind}: the server's peak RSS grew by {after - before} KiB"
            assert cpu < 2.0, f"{kind}: the server spent {cpu:.2f} s of CPU on one refused request"
            if reply:  # the answer usually arrives before the reset; when it does, it must be the refusal
                expected = b"HTTP/1.1 413" if kind == "chunked-body" else b"HTTP/1.1 400"
                assert reply.startswith(expected), f"{kind}: {reply[:60]!r}"
    finally:
        if proc.stdin is not None:
            proc.stdin.close()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


def flood(port: int, head: bytes, piece: bytes, *, total: int) -> tuple[int, bytes]:
    """Send ``head``, then ``piece`` until ``total`` bytes; return (bytes sent, what came back)."""
    sent = 0
    reply = b""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(head)
        with contextlib.suppress(OSError):
            while sent < total:
                sock.sendall(piece)
                sent += len(piece)
        with contextlib.suppress(OSError):
            while data := sock.recv(65536):
                reply += data
    return sent, reply


# ----------------------------------------------------------------- routing


def test_unknown_paths_are_404_and_other_methods_405(shared: SharedServer) -> None:
    with shared.client() as client:
        unknown = client.post("/hook/nope", content=b"{}")
        prefix = client.post("/hook/github/extra", content=b"{}")
        slash = client.post("/hook/github/", content=b"{}")
        get = client.get("/hook/github")
        put = client.put("/hook/github", content=b"{}")
    assert [r.status_code for r in (unknown, prefix, slash, get, put)] == [404, 404, 404, 405, 405]
    assert unknown.json() == {"error": "not found"}
    assert get.headers["allow"] == "POST"
    assert shared.deliveries == []


def test_a_refused_request_with_an_unread_body_closes_the_connection(shared: SharedServer) -> None:
    """Otherwise uvicorn would keep reading and discarding an endless body."""
    head = request_head("/nowhere", [(b"Transfer-Encoding", b"chunked")])
    response = exchange(shared.port, head + chunk(b"x"), check_close=True)
    assert response.status == 404
    assert response.closed


def test_healthz_answers_get_with_the_health_document_and_refuses_other_methods(shared: SharedServer) -> None:
    with shared.client() as client:
        get = client.get("/healthz")
        head = client.head("/healthz")
        post = client.post("/healthz", content=b"{}")
    assert get.status_code == 200
    assert get.json() == HEALTH
    assert (head.status_code, head.content) == (200, b"")
    assert post.status_code == 405
    assert post.headers["allow"] == "GET, HEAD"


def test_endpoint_changes_apply_without_restarting(shared: SharedServer) -> None:
    late = Endpoint(path="/hook/late", plugin="late", secret="another secret")
    body = b'{"x": 1}'
    assert shared.post("/hook/late", body, sig=signature(body, "another secret")).status_code == 404
    shared.endpoints.append(late)
    assert shared.post("/hook/late", body, sig=signature(body, "another secret")).status_code == 202
    assert shared.deliveries[-1].endpoint == late
    shared.endpoints.remove(HOOK)
    assert shared.post("/hook/github", body).status_code == 404
    shared.endpoints[:] = [attrs.evolve(late, secret="rotated")]
    assert shared.post("/hook/late", body, sig=signature(body, "another secret")).status_code == 403
    assert shared.post("/hook/late", body, sig=signature(body, "rotated")).status_code == 202


def test_an_endpoint_with_an_empty_secret_accepts_nothing(shared: SharedServer) -> None:
    """Config validation refuses empty secrets; if one slipped through, fail closed."""
    shared.endpoints[:] = [Endpoint(path="/open", plugin="p", secret="")]
    assert shared.post("/open", A_BODY, sig=signature(A_BODY, "")).status_code == 403


# ----------------------------------------------------------------- submit failure, smuggling, heads


def test_a_failing_submit_is_503_without_a_traceback(
    shared: SharedServer, http_log: list[logging.LogRecord]
) -> None:
    shared.recorder.fail = True
    response = shared.post("/hook/github", A_BODY)
    assert response.status_code == 503
    assert response.content == b'{"error":"could not queue the delivery; try again"}'
    [record] = [r for r in http_log if r.levelno >= logging.ERROR]
    assert record.exc_info is not None
    assert "disk on fire" in str(record.exc_info[1])


@pytest.mark.parametrize("path", ["/hook/github", "/nowhere", "/healthz"])
@pytest.mark.parametrize("order", ["cl-first", "te-first"])
def test_content_length_with_transfer_encoding_is_400_on_every_path(
    shared: SharedServer, order: str, path: str
) -> None:
    """Request smuggling (RFC 9112 6.1). httptools refuses it itself; h11 would read the body as
    chunked, so the adapter refuses it, before routing, so the answer is the same 400 everywhere."""
    framing = [(b"Content-Length", str(len(A_BODY)).encode()), (b"Transfer-Encoding", b"chunked")]
    if order == "te-first":
        framing.reverse()
    head = request_head(path, [(b"X-Hub-Signature-256", signature(A_BODY).encode()), *framing])
    response = exchange(shared.port, head + chunk(A_BODY) + b"0\r\n\r\n", check_close=True)
    assert response.status == 400
    assert response.closed
    assert shared.deliveries == []
    assert shared.post("/hook/github", A_BODY).status_code == 202  # and the server still serves


def raw_request(
    headers: Sequence[tuple[bytes, bytes]], body: bytes, *, path: bytes = b"/hook/github", host: bool = True
) -> bytes:
    lines = [b"POST " + path + b" HTTP/1.1", *([b"Host: 127.0.0.1"] if host else [])]
    lines += [name + b": " + value for name, value in headers]
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


SIGNED = (b"X-Hub-Signature-256", signature(A_BODY).encode())
CHUNKED_A = chunk(A_BODY) + b"0\r\n\r\n"
A_LENGTH = (b"Content-Length", str(len(A_BODY)).encode())

#: Heads refused with 400 and a closed connection under either parser: by the parser itself or by
#: the adapter's check_head where the parser would let them through (the comment says which).
MALFORMED_HEADS = {
    "conflicting-lengths": raw_request(
        [SIGNED, (b"Content-Length", b"8"), (b"Content-Length", b"9")], A_BODY
    ),
    "negative-length": raw_request([SIGNED, (b"Content-Length", b"-1")], A_BODY),
    "hex-length": raw_request([SIGNED, (b"Content-Length", b"0x8")], A_BODY),
    "plus-length": raw_request([SIGNED, (b"Content-Length", b"+8")], A_BODY),
    "empty-length": raw_request([SIGNED, (b"Content-Length", b"")], A_BODY),
    "overflowing-length": raw_request([SIGNED, (b"Content-Length", b"9" * 30)], A_BODY),
    "unsupported-coding": raw_request([SIGNED, (b"Transfer-Encoding", b"gzip, chunked")], A_BODY),
    # httptools reads "gzip, chunked" as chunked and would hand over the still-encoded body: adapter.
    "coding-before-chunked": raw_request([SIGNED, (b"Transfer-Encoding", b"gzip, chunked")], CHUNKED_A),
    "empty-coding-before-chunked": raw_request([SIGNED, (b"Transfer-Encoding", b", chunked")], CHUNKED_A),
    "chunked-then-coding": raw_request([SIGNED, (b"Transfer-Encoding", b"chunked, gzip")], A_BODY),
    "identity-coding": raw_request([SIGNED, (b"Transfer-Encoding", b"identity")], A_BODY),
    "chunked-twice": raw_request(
        [SIGNED, (b"Transfer-Encoding", b"chunked"), (b"Transfer-Encoding", b"chunked")], CHUNKED_A
    ),
    # h11 lets control characters other than NUL through in values: adapter.
    "control-character-in-a-value": raw_request([SIGNED, (b"X-Note", b"a\x01b"), A_LENGTH], A_BODY),
    "delete-in-a-value": raw_request([SIGNED, (b"X-Note", b"a\x7fb"), A_LENGTH], A_BODY),
    "nul-in-a-value": raw_request([SIGNED, (b"X-Note", b"a\x00b"), A_LENGTH], A_BODY),
    # httptools accepts an HTTP/1.1 request without a Host or with two: adapter (RFC 9112 3.2).
    "no-host": raw_request([SIGNED, A_LENGTH], A_BODY, host=False),
    "two-hosts": raw_request([SIGNED, (b"Host", b"elsewhere"), A_LENGTH], A_BODY),
    # httptools would not hand the body of an upgrade request over: adapter.
    "upgrade-with-a-body": raw_request(
        [SIGNED, (b"Connection", b"Upgrade, HTTP2-Settings"), (b"Upgrade", b"h2c"), A_LENGTH], A_BODY
    ),
    "space-before-colon": raw_request([SIGNED, (b"Content-Length ", b"8")], A_BODY),
    "non-ascii-header-name": raw_request([SIGNED, (b"X-\xe9", b"1"), A_LENGTH], A_BODY),
    "non-ascii-path": raw_request([SIGNED, A_LENGTH], A_BODY, path=b"/hook/gith\xfcb"),
    "negative-chunk-size": raw_request([SIGNED, (b"Transfer-Encoding", b"chunked")], b"-8\r\n" + A_BODY),
    "hex-prefixed-chunk-size": raw_request([SIGNED, (b"Transfer-Encoding", b"chunked")], b"0x8\r\n" + A_BODY),
    "chunk-without-its-crlf": raw_request(
        [SIGNED, (b"Transfer-Encoding", b"chunked")], b"8\r\n" + A_BODY + b"XX0\r\n\r\n"
    ),
    "not-http": b"\x00\x01\x02hello\r\n\r\n",
}


@pytest.mark.parametrize("request_bytes", MALFORMED_HEADS.values(), ids=MALFORMED_HEADS.keys())
def test_malformed_heads_are_400_under_either_parser(shared: SharedServer, request_bytes: bytes) -> None:
    response = exchange(shared.port, request_bytes, check_close=True)
    assert response.status == 400
    assert response.closed
    assert shared.deliveries == []


def test_a_coding_other_than_chunked_is_400_on_every_path(shared: SharedServer) -> None:
    """h11 refuses it before any routing; so does the adapter (httptools would read it as chunked)."""
    request = raw_request(
        [(b"Transfer-Encoding", b"gzip, chunked")], chunk(b"x") + b"0\r\n\r\n", path=b"/nope"
    )
    response = exchange(shared.port, request, check_close=True)
    assert (response.status, response.closed) == (400, True)


def test_a_chunked_trailer_never_counts_as_a_header(shared: SharedServer) -> None:
    """h11 drops trailer fields; uvicorn's httptools protocol would append them to the headers."""
    trailer = (
        b"X-Hub-Signature-256: " + signature(A_BODY).encode() + b"\r\nX-GitHub-Delivery: from-trailer\r\n"
    )
    only_in_trailer = raw_request(
        [(b"Transfer-Encoding", b"chunked")],
        chunk(A_BODY) + b"0\r\n" + trailer + b"\r\n",
        path=b"/hook/dedupe",
    )
    also_in_head = raw_request(
        [SIGNED, (b"Transfer-Encoding", b"chunked")], only_in_trailer.partition(b"\r\n\r\n")[2]
    )
    also_in_head = also_in_head.replace(b"/hook/github", b"/hook/dedupe")
    answers = exchange_all(shared.port, only_in_trailer + also_in_head, count=2)
    assert [status for status, _ in answers] == [403, 202]  # both on one kept-alive connection
    [delivery] = shared.deliveries
    assert delivery.dedupe_key is None
    assert "x-github-delivery" not in delivery.headers


def test_an_upgrade_request_is_answered_and_the_connection_closed(shared: SharedServer) -> None:
    """We switch to no protocol; httptools stops parsing a connection after an upgrade request, so
    no request may follow it there, under either parser."""
    head = request_head("/healthz", [(b"Connection", b"Upgrade"), (b"Upgrade", b"h2c")], method=b"GET")
    response = exchange(shared.port, head, check_close=True)
    assert (response.status, response.headers.get("connection"), response.closed) == (200, "close", True)
    connect = exchange(
        shared.port, b"CONNECT /hook/github HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", check_close=True
    )
    assert (connect.status, connect.closed) == (405, True)


def test_a_header_that_never_ends_is_400_after_16_kib(shared: SharedServer) -> None:
    """h11's bound on an incomplete head, which the adapter gives httptools too."""
    with socket.create_connection(("127.0.0.1", shared.port), timeout=10) as sock:
        sock.sendall(b"POST /hook/github HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Endless: ")
        sent = 0
        with contextlib.suppress(OSError):
            for _ in range(64):  # 4 MiB at most: refused long before, the rest fills socket buffers
                sock.sendall(b"h" * 65536)
                sent += 65536
        reply = b""
        with contextlib.suppress(OSError):
            while data := sock.recv(65536):
                reply += data
    assert reply.startswith(b"HTTP/1.1 400"), reply[:60]
    assert sent < 4 * 1024 * 1024, "the server kept reading an endless header"


def test_a_large_head_under_the_bound_is_served(shared: SharedServer) -> None:
    filler = [(b"X-Filler-%d" % i, b"f" * 1000) for i in range(MAX_HEAD_SIZE // 1100)]
    request = raw_request([SIGNED, A_LENGTH, *filler], A_BODY)
    assert len(request) > MAX_HEAD_SIZE * 0.8
    assert exchange(shared.port, request).status == 202
    assert len(shared.deliveries[0].headers) >= len(filler)


#: Where the parsers themselves answer differently, the adapter cannot see the difference (the parser
#: refused the request, or normalised it, before the app saw it). ADR 0017 lists these; none lets a
#: request through unsigned, oversize or unframed. Each: the request, and the status per parser.
DIFFERENCES: dict[str, tuple[bytes, dict[str, int]]] = {
    # RFC 9110 8.6 allows both: h11 merges identical values, httptools refuses the repeat.
    "repeated-identical-content-length": (
        raw_request([SIGNED, A_LENGTH, A_LENGTH], A_BODY),
        {"h11": 202, "httptools": 400},
    ),
    "list-of-identical-content-lengths": (
        raw_request([SIGNED, (b"Content-Length", b"8, 8")], A_BODY),
        {"h11": 202, "httptools": 400},
    ),
    # Obsolete line folding (RFC 9112 5.2 allows either): h11 unfolds it, httptools refuses it.
    "obs-fold": (
        raw_request([SIGNED, (b"X-Folded", b"a\r\n b"), A_LENGTH], A_BODY),
        {"h11": 202, "httptools": 400},
    ),
    # Bare LF line ends (RFC 9112 2.2 allows either): h11 accepts them, httptools refuses them.
    "bare-lf-head": (
        raw_request([SIGNED, A_LENGTH], A_BODY).replace(b"\r\n", b"\n"),
        {"h11": 202, "httptools": 400},
    ),
    "space-before-chunk-line-end": (
        raw_request([SIGNED, (b"Transfer-Encoding", b"chunked")], b"8 \r\n" + A_BODY + b"\r\n0\r\n\r\n"),
        {"h11": 202, "httptools": 400},
    ),
    # Bad chunk framing that h11 waits on (for a line end, or for 2**72 bytes): 408 after body_timeout.
    "bare-lf-chunk-lines": (
        raw_request([SIGNED, (b"Transfer-Encoding", b"chunked")], b"8\n" + A_BODY + b"\n0\n\n"),
        {"h11": 408, "httptools": 400},
    ),
    "huge-chunk-size": (
        raw_request([SIGNED, (b"Transfer-Encoding", b"chunked")], b"f" * 18 + b"\r\n" + A_BODY),
        {"h11": 408, "httptools": 400},
    ),
    # httptools knows a fixed set of methods; h11 passes any token, which the adapter answers 405.
    "unknown-method": (
        raw_request([SIGNED, A_LENGTH], A_BODY).replace(b"POST ", b"BREW ", 1),
        {"h11": 405, "httptools": 400},
    ),
    "lower-case-method": (
        raw_request([SIGNED, A_LENGTH], A_BODY).replace(b"POST ", b"post ", 1),
        {"h11": 405, "httptools": 400},
    ),
    # Request targets: httptools parses an absolute-form target (RFC 9112 3.2.2: servers MUST accept
    # it) and drops a fragment; h11 passes both on raw, so no endpoint matches (Starlette's own 404
    # for the absolute form, ours for the fragment).
    "absolute-form-target": (
        raw_request([SIGNED, A_LENGTH], A_BODY, path=b"http://127.0.0.1/hook/github"),
        {"h11": 404, "httptools": 202},
    ),
    "fragment-in-target": (
        raw_request([SIGNED, A_LENGTH], A_BODY, path=b"/hook/github#frag"),
        {"h11": 404, "httptools": 202},
    ),
    "two-spaces-in-request-line": (
        raw_request([SIGNED, A_LENGTH], A_BODY).replace(b"POST ", b"POST  ", 1),
        {"h11": 400, "httptools": 202},
    ),
}


@pytest.mark.parametrize(("request_bytes", "expected"), DIFFERENCES.values(), ids=DIFFERENCES.keys())
def test_documented_differences_between_the_parsers(
    shared: SharedServer, request_bytes: bytes, expected: dict[str, int]
) -> None:
    refused = expected[shared.parser] in (400, 408)  # only then wait to see the connection closed
    response = exchange(shared.port, request_bytes, check_close=refused, timeout=BODY_TIMEOUT + 5)
    assert response.status == expected[shared.parser], f"{shared.parser}: {response}"
    if response.status == 202:
        assert [d.payload for d in shared.deliveries] == [{"a": 1}]
    else:
        assert shared.deliveries == []
    if refused:
        assert response.closed


# ----------------------------------------------------------------- servers of their own


async def _submit(delivery: WebhookDelivery) -> str:
    return "x"


async def _health() -> dict[str, Any]:
    return {"status": "ok"}


def _app() -> Any:
    return build_app(endpoints=lambda: [], submit=_submit, health=_health)


def test_a_failing_health_check_is_503(parser: HttpParser, http_log: list[logging.LogRecord]) -> None:
    async def broken() -> dict[str, Any]:
        raise RuntimeError("store closed")

    async def scenario() -> None:
        async with (
            serving(parser, health=broken) as server,
            httpx.AsyncClient(trust_env=False, verify=NO_TLS) as client,
        ):
            response = await client.get(f"http://127.0.0.1:{server.port}/healthz")
            assert response.status_code == 503
            assert b"store closed" not in response.content

    asyncio.run(scenario())
    assert any(r.exc_info for r in http_log)


def test_stop_is_idempotent_and_frees_the_port(parser: HttpParser) -> None:
    async def scenario() -> None:
        first = HttpServer(_app(), "127.0.0.1", 0, parser=parser)
        await first.stop()  # never started: nothing to do
        await first.start()
        port = first.port
        assert port != 0
        with pytest.raises(RuntimeError):
            await first.start()
        await asyncio.gather(first.stop(), first.stop())
        await first.stop()
        with pytest.raises(ConnectionRefusedError):
            await asyncio.open_connection("127.0.0.1", port)
        second = HttpServer(_app(), "127.0.0.1", port, parser=parser)
        await second.start()
        try:
            async with httpx.AsyncClient(trust_env=False, verify=NO_TLS) as client:
                assert (await client.get(f"http://127.0.0.1:{port}/healthz")).status_code == 200
        finally:
            await second.stop()

    asyncio.run(scenario())


def test_stop_answers_the_request_in_flight_before_closing(parser: HttpParser) -> None:
    release = asyncio.Event()
    entered = asyncio.Event()

    async def slow_submit(delivery: WebhookDelivery) -> str:
        entered.set()
        await release.wait()
        return "job-slow"

    async def scenario() -> None:
        app = build_app(endpoints=lambda: [HOOK], submit=slow_submit, health=_health)
        server = HttpServer(app, "127.0.0.1", 0, parser=parser)
        await server.start()
        async with httpx.AsyncClient(trust_env=False, verify=NO_TLS) as client:
            request = asyncio.create_task(
                client.post(
                    f"http://127.0.0.1:{server.port}/hook/github",
                    content=A_BODY,
                    headers={"X-Hub-Signature-256": signature(A_BODY)},
                )
            )
            await asyncio.wait_for(entered.wait(), 5)
            stopping = asyncio.create_task(server.stop())
            await asyncio.sleep(0.3)  # stop() must be waiting for the request, not finished
            assert not stopping.done()
            release.set()
            response = await asyncio.wait_for(request, 5)
            await asyncio.wait_for(stopping, 5)
        assert (response.status_code, response.json()) == (202, {"job_id": "job-slow"})

    asyncio.run(scenario())


def test_a_busy_port_is_a_listen_error_naming_the_address(parser: HttpParser) -> None:
    async def scenario() -> None:
        with socket.socket() as holder:
            holder.bind(("127.0.0.1", 0))
            holder.listen()
            port = holder.getsockname()[1]
            server = HttpServer(_app(), "127.0.0.1", port, parser=parser)
            with pytest.raises(ListenError) as caught:
                await server.start()
            assert str(caught.value) == f"cannot listen on 127.0.0.1:{port}: address already in use"
            await server.stop()  # nothing started, nothing to stop

    asyncio.run(scenario())


def test_an_unresolvable_host_is_a_listen_error(parser: HttpParser) -> None:
    async def scenario() -> None:
        server = HttpServer(_app(), "no-such-host.invalid", 0, parser=parser)
        with pytest.raises(ListenError, match=r"^cannot listen on no-such-host\.invalid:0: \S"):
            await server.start()

    asyncio.run(scenario())


def test_the_server_leaves_the_process_signal_handlers_alone(parser: HttpParser) -> None:
    """Runs in the main thread, where uvicorn's own serve() would replace them."""
    signals = (signal.SIGINT, signal.SIGTERM)

    async def scenario() -> None:
        before = {sig: signal.getsignal(sig) for sig in signals}  # asyncio.run's own SIGINT handler
        async with serving(parser):
            assert {sig: signal.getsignal(sig) for sig in signals} == before
        assert {sig: signal.getsignal(sig) for sig in signals} == before

    asyncio.run(scenario())


def test_the_listening_log_line_names_the_parser(
    parser: HttpParser, http_log: list[logging.LogRecord]
) -> None:
    async def scenario() -> None:
        async with serving(parser) as server:
            assert server.parser == parser

    asyncio.run(scenario())
    [listening] = [r for r in http_log if r.getMessage() == "listening"]
    assert listening.fields["parser"] == parser  # type: ignore[attr-defined]


async def _ask_health(port: int) -> tuple[int, bool]:
    """One GET /healthz on a new connection: (status, whether the server then closed it)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request_head("/healthz", [], method=b"GET"))
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
        await asyncio.wait_for(reader.readexactly(length), 5)
        try:
            closed = await asyncio.wait_for(reader.read(1), 0.5) == b""
        except TimeoutError:
            closed = False
        return int(head.split()[1]), closed
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


def test_past_max_connections_a_waiting_connection_makes_room_for_a_new_one(parser: HttpParser) -> None:
    """Issue 19, item 10: a limit that refused every new client while idle connections were held
    let anyone lock the listener; now the connection waiting longest is closed instead (more in
    test_http_floods.py)."""

    async def scenario() -> None:
        async with serving(parser, max_connections=1) as server:
            # Held open, and answered first, so the server has certainly counted it.
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(request_head("/healthz", [], method=b"GET"))
            assert (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)).startswith(b"HTTP/1.1 200")
            # it now waits for a next request: the new connection takes its place
            assert await _ask_health(server.port) == (200, False)
            await asyncio.wait_for(reader.read(), 5)  # the kept-alive one was closed (EOF)
            writer.close()
            await writer.wait_closed()

    asyncio.run(scenario())


# ----------------------------------------------------------------- GitHub's form encoding (issue 12)


def test_a_github_form_body_is_accepted_with_the_signature_over_the_raw_form(shared: SharedServer) -> None:
    import urllib.parse

    document = {"action": "opened", "text": "a & b = ü", "n": [1, 2]}
    form = urllib.parse.urlencode({"payload": json.dumps(document)}).encode()
    response = shared.post(
        "/hook/github", form, headers={"Content-Type": "application/x-www-form-urlencoded"}
    )
    assert response.status_code == 202, response.text
    assert shared.deliveries[-1].payload == document


@pytest.mark.parametrize(
    "form",
    [b"other=1", b"payload=%7B%7D&payload=%7B%7D", b"payload=not-json", b"payload=%FF", b"\xff=1"],
    ids=["no-payload", "two-payloads", "not-json", "not-utf8", "not-ascii"],
)
def test_a_form_without_one_json_payload_is_400_and_logged_with_its_reason(
    shared: SharedServer, http_log: list[logging.LogRecord], form: bytes
) -> None:
    response = shared.post(
        "/hook/github", form, headers={"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"}
    )
    assert response.status_code == 400
    assert shared.deliveries == []
    [line] = [r for r in http_log if "webhook refused (400)" in r.getMessage()]
    assert line.levelno == logging.INFO


def test_every_4xx_is_logged_at_info_with_its_reason(
    shared: SharedServer, http_log: list[logging.LogRecord]
) -> None:
    assert shared.post("/hook/github", b"not json").status_code == 400
    assert shared.post("/nowhere", A_BODY).status_code == 404
    with shared.client() as client:
        assert client.get("/hook/github").status_code == 405
    messages = [(r.levelno, r.getMessage()) for r in http_log]
    assert (
        logging.INFO,
        "webhook refused (400): body is not JSON: Expecting value: line 1 column 1 (char 0)",
    ) in (messages)
    assert any(m.startswith("no webhook endpoint at '/nowhere'") for _, m in messages), messages
    assert any("webhooks take POST only" in m for _, m in messages), messages


def test_refusals_are_rate_limited_per_status_and_path_and_say_what_was_left_out(
    http_log: list[logging.LogRecord],
) -> None:
    now = [0.0]
    limited = RefusalLog(per_window=3, window=60.0, clock=lambda: now[0])
    for _ in range(10):
        limited(403, "bad signature", path="/hook/a")
    limited(403, "bad signature", path="/hook/b")  # another path: its own window
    assert [r.fields["path"] for r in http_log] == ["/hook/a"] * 3 + ["/hook/b"]  # type: ignore[attr-defined]
    now[0] = 61.0
    limited(403, "bad signature", path="/hook/a")
    assert "(7 more like it left out of the log in the last minute)" in http_log[-1].getMessage()
    assert http_log[-1].fields["left_out"] == 7  # type: ignore[attr-defined]
