"""The operator API's listener under the faults of issue 19 (items 8, 10, 12, 13), like the webhooks'.

An embedded ``Ductile`` on real SQLite serving the API on real uvicorn on
127.0.0.1 (in a thread with its own event loop); raw sockets for the floods.
Before: the API's listener had the connection guard only by virtue of sharing
the webhook listener's server class, its bodies had no deadline (a client
sending a body slowly held a connection for ever), and ``GET /job/{id}`` showed
a webhook's ``Authorization`` header in full.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import socket
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from ductile.app.bootstrap import Ductile
from ductile.domain.secret_headers import MASK

TOKEN = "hostile-token-0123456789"
SECRET = "hostile-webhook-secret"
FAST = '#!/bin/sh\ncat >/dev/null\necho \'{"status": "ok"}\'\n'
AUTH = f"Authorization: Bearer {TOKEN}\r\n"


class Served:
    """Ductile serving in a thread with its own event loop, until :meth:`close`."""

    def __init__(self, config: Path, setup: Callable[[Ductile], None] = lambda d: None) -> None:
        self.port: int | None = None
        self.ductile: Ductile | None = None
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(config, setup), daemon=True)
        self._thread.start()
        assert self._ready.wait(30), "the API did not start"
        if self._error is not None:
            raise self._error

    def _run(self, config: Path, setup: Callable[[Ductile], None]) -> None:
        async def main() -> None:
            async with Ductile(config) as d:
                setup(d)
                self.ductile, self._loop = d, asyncio.get_running_loop()
                serving = asyncio.create_task(d.serve())
                while d.api_port is None:  # noqa: ASYNC110 - bound once the listener accepts connections
                    await asyncio.sleep(0.01)
                self.port = d.api_port
                self._ready.set()
                await serving

        try:
            asyncio.run(main())
        except BaseException as e:
            self._error = e
            self._ready.set()

    def close(self) -> None:
        if self._loop is not None and self.ductile is not None:
            self._loop.call_soon_threadsafe(self.ductile.stop)
        self._thread.join(30)

    def queued(self) -> int:
        """How many jobs are queued (read on the daemon's own loop)."""
        assert self._loop is not None
        assert self.ductile is not None
        depth = asyncio.run_coroutine_threadsafe(self.ductile.engine.store.queue_depth(), self._loop)
        return depth.result(10)

    def on_loop(self, fn: Callable[[Ductile], Any]) -> Any:
        """Run ``fn(ductile)`` on the daemon's own loop; its result."""
        assert self._loop is not None
        assert self.ductile is not None
        ductile = self.ductile

        async def call() -> Any:
            return fn(ductile)

        return asyncio.run_coroutine_threadsafe(call(), self._loop).result(10)

    def connect(self) -> socket.socket:
        assert self.port is not None
        return socket.create_connection(("127.0.0.1", self.port), timeout=10)


def _site(tmp_path: Path, listen: str = "127.0.0.1:0", webhooks: bool = False) -> Path:
    plugins = tmp_path / "plugins"
    folder = plugins / "fast"
    folder.mkdir(parents=True)
    for path in (plugins, folder):
        path.chmod(0o755)
    (folder / "manifest.yaml").write_text(
        "name: fast\nversion: 1.0.0\nprotocol: 1\nentrypoint: run\ncommands: [poll, handle]\n"
    )
    (folder / "run").write_text(FAST)
    (folder / "run").chmod(0o755)
    config = tmp_path / "ductile.yaml"
    text = (
        "service: {state_dir: ./state}\nplugins_dir: ./plugins\nplugins: {fast: {}}\n"
        f"api: {{listen: '{listen}', tokens: [{{name: t, token: {TOKEN}, scopes: ['*']}}]}}\n"
    )
    if webhooks:
        text += (
            f"webhooks:\n  listen: '{listen}'\n"
            f"  endpoints: [{{path: /hook/fast, plugin: fast, secret: {SECRET}}}]\n"
        )
    config.write_text(text)
    return config


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    server = Served(_site(tmp_path), lambda d: setattr(d.surface, "body_timeout", 0.5))
    try:
        yield server
    finally:
        server.close()


def _response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """One response with a Content-Length: (status, headers, body)."""
    buffer = b""
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
    return int(status_line.split()[1]), headers, rest[:length]


def _closed_by_peer(sock: socket.socket, within: float) -> bool:
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


def _ask(server: Served, data: bytes) -> tuple[int, bytes, float]:
    started = time.monotonic()
    with server.connect() as sock:
        sock.sendall(data)
        status, _, body = _response(sock)
    return status, body, time.monotonic() - started


def _trigger(body: bytes) -> bytes:
    head = f"POST /plugin/fast/poll HTTP/1.1\r\nHost: x\r\n{AUTH}Content-Length: {len(body)}\r\n"
    return head.encode() + b"Content-Type: application/json\r\n\r\n" + body


def test_the_api_answers_within_5_s_while_500_idle_connections_are_open(served: Served) -> None:
    """Item 10 on the API's listener: idle connections cannot lock out a client."""
    idle = [served.connect() for _ in range(500)]
    try:
        status, _, took = _ask(served, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert (status, took < 5.0) == (200, True)
        status, body, took = _ask(served, _trigger(b'{"payload": {"n": 1}}'))
        assert (status, took < 5.0) == (202, True), body
        # the listener holds no more than its cap: the longest-waiting idle ones made room
        assert served.ductile is not None
        server = served.ductile.surface._api_server
        assert server is not None
        guard = server.guard
        assert guard is not None
        assert guard.open <= guard.limit
    finally:
        for sock in idle:
            sock.close()


def test_a_body_that_does_not_arrive_in_time_gets_408_and_the_connection_is_closed(served: Served) -> None:
    """Item 10: the API's bodies have a deadline, as the webhooks' do (0.5 s here)."""
    with served.connect() as sock:
        sock.sendall(_trigger(b'{"payload": {}}')[:-5])  # the head and most of the body; never the rest
        started = time.monotonic()
        status, headers, body = _response(sock)
        assert status == 408, body
        assert headers.get("connection") == "close"
        assert time.monotonic() - started < 5.0
        assert _closed_by_peer(sock, within=2.0)
    assert served.queued() == 0


@pytest.mark.parametrize(
    "body", [rb'{"payload": {"s": "\ud83d"}}', rb'{"payload": {}, "dedupe_key": "\udc00"}']
)
def test_a_lone_surrogate_in_a_trigger_body_is_400_and_nothing_is_queued(served: Served, body: bytes) -> None:
    """Item 8 at the API's boundary: what JSON cannot carry is refused where it arrives."""
    status, answer, _ = _ask(served, _trigger(body))
    assert status == 400, answer
    assert b"surrogate" in answer
    assert served.queued() == 0


def _metrics(served: Served) -> dict[str, float]:
    response = httpx.get(
        f"http://127.0.0.1:{served.port}/metrics", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10
    )
    families = text_string_to_metric_families(response.text)
    return {s.name: s.value for f in families for s in f.samples if s.name.startswith("ductile_sched")}


def test_a_failing_scheduler_shows_on_the_apis_healthz_and_metrics(served: Served) -> None:
    """Item 8 on the API's listener: a failing tick is a 503 "degraded" ``/healthz`` (as on the
    webhook listener; it was a 200), counted in the metrics, never a silent stop."""
    health = httpx.get(f"http://127.0.0.1:{served.port}/healthz", timeout=10)
    assert (health.status_code, health.json()["status"]) == (200, "ok")
    assert _metrics(served)["ductile_scheduler_ok"] == 1.0
    when = datetime(2026, 3, 1, tzinfo=UTC)
    served.on_loop(lambda d: d.engine.tick_report.schedule_failed("fast", ValueError("no JSON"), when))
    served.on_loop(lambda d: d.engine.tick_report.tick_ended())
    health = httpx.get(f"http://127.0.0.1:{served.port}/healthz", timeout=10)
    assert (health.status_code, health.json()["status"]) == (503, "degraded")
    assert health.json()["scheduler"]["failing_schedules"] == {"fast": "ValueError: no JSON"}
    figures = _metrics(served)
    assert figures["ductile_scheduler_ok"] == 0.0
    assert figures["ductile_schedules_failing"] == 1.0
    assert figures["ductile_scheduler_failed_ticks_total"] == 1.0


def test_the_api_shows_a_webhooks_credentials_masked(tmp_path: Path) -> None:
    """Item 13 through the API: ``GET /job/{id}`` masks what ``ductile job`` masks."""
    with socket.socket() as probe:  # one address for both (port 0 never counts as shared)
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = Served(_site(tmp_path, f"127.0.0.1:{port}", webhooks=True))
    try:
        body = b'{"n": 1}'
        sig = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
        headers = {
            "X-Hub-Signature-256": sig,
            "Authorization": "Bearer caller-secret-1",
            "X-Api-Key": "caller-secret-2",
            "X-Plain": "shown",
        }
        base = f"http://127.0.0.1:{port}"
        hook = httpx.post(f"{base}/hook/fast", content=body, headers=headers, timeout=10)
        assert hook.status_code == 202
        job_id = hook.json()["job_id"]
        doc = httpx.get(f"{base}/job/{job_id}", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10)
        text = doc.text
        assert "caller-secret" not in text
        shown: dict[str, Any] = doc.json()["job"]["payload"]["headers"]
        assert shown["authorization"] == shown["x-api-key"] == MASK
        assert shown["x-plain"] == "shown"
    finally:
        server.close()


@pytest.mark.parametrize("target", ["/plugin/fast/poll", "/plugin/f%61st/poll", "/plugin/%66ast/p%6fll"])
def test_percent_encoded_api_paths_match_as_decoded(served: Served, target: str) -> None:
    """Item 12 on the API: both spellings of a path reach the same route, without a stall."""
    body = b"{}"
    head = f"POST {target} HTTP/1.1\r\nHost: x\r\n{AUTH}Content-Length: {len(body)}\r\n\r\n"
    status, answer, took = _ask(served, head.encode() + body)
    assert status == 202, answer
    assert took < 2.0


@pytest.mark.parametrize("target", ["*", "/plugin/f%0aast/poll", "/plugin/f%2561st/poll"])
def test_an_api_target_that_names_no_route_is_4xx_and_never_stalls(served: Served, target: str) -> None:
    """Item 12 on the API: an odd target gets its answer at once, never a hanging connection."""
    body = b'{"payload": {"n": 1}}'
    head = f"POST {target} HTTP/1.1\r\nHost: x\r\n{AUTH}Content-Length: {len(body)}\r\n\r\n"
    status, answer, took = _ask(served, head.encode() + body)
    assert 400 <= status < 500, answer
    assert took < 2.0
    assert served.queued() == 0


def test_a_dashboard_form_that_does_not_arrive_in_time_gets_408_too(served: Served) -> None:
    """Item 10 on the dashboard's forms (they share the API's listener and its body deadline):
    a sign-in whose body never arrives is cut off, not held open."""
    body = b"token=x&next=%2Fui%2F"
    head = f"POST /ui/login HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body) + 10}\r\n"
    with served.connect() as sock:
        sock.sendall(head.encode() + b"Content-Type: application/x-www-form-urlencoded\r\n\r\n" + body)
        started = time.monotonic()
        status, headers, answer = _response(sock)
        assert status == 408, answer
        assert headers.get("connection") == "close"
        assert time.monotonic() - started < 5.0
