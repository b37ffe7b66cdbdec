"""The webhook/healthz HTTP adapter over real HTTP on 127.0.0.1 (SPEC D11, D20; PITFALLS "HTTP").

Every test starts its own server on an ephemeral port. Well-formed requests go
through httpx; malformed or hostile ones (non-ASCII header bytes, lying
Content-Length, smuggling, floods) through raw sockets, since httpx refuses to
send them. Timing bounds are deadlines on conditions ("answered within 2 s"),
generous for a busy 2-core machine but far below what the failure would take
(a server that read a declared 10 MB body would wait for it until the body
timeout).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
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
    HttpServer,
    ListenError,
    WebhookDelivery,
    build_app,
)
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

    def __init__(self) -> None:
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
        self.server = HttpServer(app, "127.0.0.1", 0)
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


@pytest.fixture(scope="module")
def module_server() -> Iterator[SharedServer]:
    server = SharedServer()
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
    endpoints: Callable[[], Sequence[Endpoint]] = lambda: ALL,
    *,
    health: Callable[[], Awaitable[dict[str, Any]]] | None = None,
) -> AsyncIterator[HttpServer]:
    """A server of its own, on the caller's loop (in the main thread)."""
    rec = Recorder()
    app = build_app(endpoints=endpoints, submit=rec.submit, health=health or rec.health)
    server = HttpServer(app, "127.0.0.1", 0)
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


def test_private_headers_are_stripped_and_repeats_joined(shared: SharedServer) -> None:
    body = b'{"a": 1}'
    head = request_head(
        "/hook/github",
        [
            (b"X-Hub-Signature-256", signature(body).encode()),
            (b"Content-Length", str(len(body)).encode()),
            (b"Authorization", b"Bearer hunter2"),
            (b"Cookie", b"session=abc"),
            (b"Proxy-Authorization", b"Basic Zm9vOmJhcg=="),
            (b"X-Multi", b"one"),
            (b"x-multi", b"two"),
            (b"X-Latin", b"caf\xe9"),
        ],
    )
    assert exchange(shared.port, head + body).status == 202
    headers = shared.deliveries[0].headers
    assert not {"authorization", "cookie", "proxy-authorization"} & set(headers)
    assert headers["x-multi"] == "one, two"
    assert headers["x-latin"] == "café"
    assert all(name == name.lower() for name in headers)
    assert "hunter2" not in repr(shared.deliveries[0])


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
    assert any(r.levelno == logging.WARNING and "signature" in r.getMessage() for r in http_log)


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
    [warning] = [r for r in http_log if r.levelno == logging.WARNING]
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


def test_a_100_mb_chunked_flood_is_refused_with_flat_server_memory() -> None:
    """The server runs in its own process so its peak RSS (VmHWM) is its alone."""
    script = textwrap.dedent(
        """
        import asyncio, sys
        from ductile.adapters.http import HttpServer, build_app
        from ductile.domain.config import Endpoint

        async def submit(d): return "job"
        async def health(): return {}

        async def main():
            app = build_app(endpoints=lambda: [Endpoint(path="/hook", plugin="p", secret="s")],
                            submit=submit, health=health)
            server = HttpServer(app, "127.0.0.1", 0)
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

        def peak_kib() -> int:
            with open(f"/proc/{proc.pid}/status") as status:
                for line in status:
                    if line.startswith("VmHWM:"):
                        return int(line.split()[1])
            raise AssertionError("no VmHWM line")

        before = peak_kib()
        sent, reply = flood(port, total=100 * 1024 * 1024)
        after = peak_kib()
        print(
            f"flood: {sent / 2**20:.1f} MiB sent before the server closed; peak RSS {before} -> {after} KiB"
        )
        assert sent < 32 * 1024 * 1024, "the server kept reading a body far over its limit"
        assert after - before < 8 * 1024, f"the server's peak RSS grew by {after - before} KiB"
        if reply:  # the 413 usually arrives before the reset; when it does, it must be a 413
            assert reply.startswith(b"HTTP/1.1 413"), reply[:60]
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


def flood(port: int, *, total: int) -> tuple[int, bytes]:
    """Send up to ``total`` bytes of chunked body; return (bytes sent, what came back)."""
    piece = chunk(b"a" * 65536)
    sent = 0
    reply = b""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(
            request_head(
                "/hook",
                [(b"X-Hub-Signature-256", b"sha256=" + b"0" * 64), (b"Transfer-Encoding", b"chunked")],
            )
        )
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


# ----------------------------------------------------------------- submit failure, smuggling


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


@pytest.mark.parametrize("order", ["cl-first", "te-first"])
def test_content_length_with_transfer_encoding_is_400(shared: SharedServer, order: str) -> None:
    framing = [(b"Content-Length", str(len(A_BODY)).encode()), (b"Transfer-Encoding", b"chunked")]
    if order == "te-first":
        framing.reverse()
    head = request_head("/hook/github", [(b"X-Hub-Signature-256", signature(A_BODY).encode()), *framing])
    response = exchange(shared.port, head + chunk(A_BODY) + b"0\r\n\r\n", check_close=True)
    assert response.status == 400
    assert response.closed
    assert shared.deliveries == []
    assert shared.post("/hook/github", A_BODY).status_code == 202  # and the server still serves


@pytest.mark.parametrize(
    "framing",
    [
        [(b"Content-Length", b"8"), (b"Content-Length", b"9")],
        [(b"Content-Length", b"-1")],
        [(b"Content-Length", b"0x8")],
        [(b"Transfer-Encoding", b"gzip, chunked")],
    ],
    ids=["conflicting-lengths", "negative-length", "hex-length", "unsupported-coding"],
)
def test_malformed_framing_is_400_from_the_http_layer(
    shared: SharedServer, framing: list[tuple[bytes, bytes]]
) -> None:
    head = request_head("/hook/github", [(b"X-Hub-Signature-256", signature(A_BODY).encode()), *framing])
    response = exchange(shared.port, head + A_BODY, check_close=True)
    assert response.status == 400
    assert response.closed
    assert shared.deliveries == []


# ----------------------------------------------------------------- servers of their own


async def _submit(delivery: WebhookDelivery) -> str:
    return "x"


async def _health() -> dict[str, Any]:
    return {"status": "ok"}


def _app() -> Any:
    return build_app(endpoints=lambda: [], submit=_submit, health=_health)


def test_a_failing_health_check_is_503(http_log: list[logging.LogRecord]) -> None:
    async def broken() -> dict[str, Any]:
        raise RuntimeError("store closed")

    async def scenario() -> None:
        async with (
            serving(health=broken) as server,
            httpx.AsyncClient(trust_env=False, verify=NO_TLS) as client,
        ):
            response = await client.get(f"http://127.0.0.1:{server.port}/healthz")
            assert response.status_code == 503
            assert b"store closed" not in response.content

    asyncio.run(scenario())
    assert any(r.exc_info for r in http_log)


def test_stop_is_idempotent_and_frees_the_port() -> None:
    async def scenario() -> None:
        first = HttpServer(_app(), "127.0.0.1", 0)
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
        second = HttpServer(_app(), "127.0.0.1", port)
        await second.start()
        try:
            async with httpx.AsyncClient(trust_env=False, verify=NO_TLS) as client:
                assert (await client.get(f"http://127.0.0.1:{port}/healthz")).status_code == 200
        finally:
            await second.stop()

    asyncio.run(scenario())


def test_stop_answers_the_request_in_flight_before_closing() -> None:
    release = asyncio.Event()
    entered = asyncio.Event()

    async def slow_submit(delivery: WebhookDelivery) -> str:
        entered.set()
        await release.wait()
        return "job-slow"

    async def scenario() -> None:
        app = build_app(endpoints=lambda: [HOOK], submit=slow_submit, health=_health)
        server = HttpServer(app, "127.0.0.1", 0)
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


def test_a_busy_port_is_a_listen_error_naming_the_address() -> None:
    async def scenario() -> None:
        with socket.socket() as holder:
            holder.bind(("127.0.0.1", 0))
            holder.listen()
            port = holder.getsockname()[1]
            server = HttpServer(_app(), "127.0.0.1", port)
            with pytest.raises(ListenError) as caught:
                await server.start()
            assert str(caught.value) == f"cannot listen on 127.0.0.1:{port}: address already in use"
            await server.stop()  # nothing started, nothing to stop

    asyncio.run(scenario())


def test_an_unresolvable_host_is_a_listen_error() -> None:
    async def scenario() -> None:
        server = HttpServer(_app(), "no-such-host.invalid", 0)
        with pytest.raises(ListenError, match=r"^cannot listen on no-such-host\.invalid:0: \S"):
            await server.start()

    asyncio.run(scenario())


def test_the_server_leaves_the_process_signal_handlers_alone() -> None:
    """Runs in the main thread, where uvicorn's own serve() would replace them."""
    signals = (signal.SIGINT, signal.SIGTERM)

    async def scenario() -> None:
        before = {sig: signal.getsignal(sig) for sig in signals}  # asyncio.run's own SIGINT handler
        async with serving():
            assert {sig: signal.getsignal(sig) for sig in signals} == before
        assert {sig: signal.getsignal(sig) for sig in signals} == before

    asyncio.run(scenario())
