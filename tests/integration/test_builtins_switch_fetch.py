"""builtin:switch and builtin:fetch through the real spawner (docs/builtins.md).

``fetch`` talks to real HTTP servers on 127.0.0.1, among them hostile ones:
one that offers a 1 GiB body, one that trickles a byte at a time, one that
redirects away from http.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from ductile.domain.job import JobEvent
from tests.support.builtin import run
from tests.support.receiver import receiver

# ----------------------------------------------------------------------------- switch

CASES = [
    {"match": "exact", "value": "failed", "emit": "build.failed"},
    {"match": "prefix", "value": "warn", "emit": "build.warning"},
    {"match": "contains", "value": "flaky", "emit": "build.flaky"},
    {"match": "regex", "value": r"^ok-\d+$", "emit": "build.ok"},
]


def _event(payload: Any) -> dict[str, Any]:
    return {"type": "ci.finished", "source": "ci", "event_id": "e-1", "payload": payload}


@pytest.fixture
def root(tmp_path: Path) -> Path:
    folder = tmp_path / "plugins"
    folder.mkdir(mode=0o755)
    return folder


@pytest.mark.parametrize(
    ("status", "emitted"),
    [
        ("failed", "build.failed"),
        ("warning: disk", "build.warning"),
        ("a flaky test", "build.flaky"),
        ("ok-42", "build.ok"),
        ("ok-42x", "build.other"),
        ("FAILED", "build.other"),
    ],
)
def test_switch_emits_the_first_matching_case_or_the_default(root: Path, status: str, emitted: str) -> None:
    config = {"field": "payload.status", "cases": CASES, "default": "build.other"}
    verdict = run("switch", config, event=_event({"status": status, "n": 1}), tmp=root)
    assert verdict.succeeded, verdict.error
    assert verdict.response is not None
    [event] = verdict.response.events
    assert event.type == emitted
    assert event.payload["status"] == status
    assert event.payload["n"] == 1


def test_switch_compares_a_number_as_json_and_walks_lists(root: Path) -> None:
    config = {
        "field": "payload.items.1.code",
        "cases": [{"match": "exact", "value": "200", "emit": "http.ok"}],
    }
    verdict = run("switch", config, event=_event({"items": [{"code": 500}, {"code": 200}]}), tmp=root)
    assert verdict.response is not None
    assert [e.type for e in verdict.response.events] == ["http.ok"]


def test_switch_with_a_missing_field_emits_the_default_or_nothing(root: Path) -> None:
    config: dict[str, Any] = {"field": "payload.status", "cases": CASES}
    quiet = run("switch", config, event=_event({"other": 1}), tmp=root)
    assert quiet.succeeded, quiet.error
    assert quiet.response is not None
    assert quiet.response.events == ()
    assert "payload.status is not in the event" in (quiet.response.result or "")
    fallback = run("switch", {**config, "default": "build.unknown"}, event=_event({"other": 1}), tmp=root)
    assert fallback.response is not None
    assert [e.type for e in fallback.response.events] == ["build.unknown"]
    unmatched = run("switch", config, event=_event({"status": "queued"}), tmp=root)
    assert unmatched.response is not None
    assert unmatched.response.events == ()


def test_switch_refuses_an_invalid_regex_by_case_without_a_traceback(root: Path) -> None:
    config = {"field": "type", "cases": [*CASES, {"match": "regex", "value": "(unclosed", "emit": "x"}]}
    verdict = run("switch", config, event=_event({"status": "failed"}), tmp=root)
    assert verdict.event is JobEvent.FAIL
    assert not verdict.retryable
    error = verdict.error or ""
    assert "cases[4].value is not a valid regex" in error
    assert "Traceback" not in error
    health = run("switch", config, "health", tmp=root)
    assert "cases[4].value is not a valid regex" in (health.error or "")
    bad_kind = run(
        "switch",
        {"field": "type", "cases": [{"match": "glob", "value": "a", "emit": "b"}]},
        event=_event({}),
        tmp=root,
    )
    assert "cases[0].match must be one of exact, prefix, contains, regex" in (bad_kind.error or "")


# ----------------------------------------------------------------------------- fetch


@contextmanager
def server(respond: Callable[[BaseHTTPRequestHandler], None]) -> Iterator[str]:
    """A real HTTP server on 127.0.0.1 answering every GET with ``respond``; yields its base URL."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            with suppress(BrokenPipeError, ConnectionResetError):
                respond(self)

        def log_message(self, format: str, *args: object) -> None:
            return None

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_fetch_emits_status_headers_body_and_digest_and_changed_only_keeps_quiet(root: Path) -> None:
    with receiver(answer=b"hello, world") as rx:
        config = {"url": rx.url("/page?token=s3cret"), "changed_only": True}
        first = run("fetch", config, "poll", tmp=root)
        assert first.succeeded, first.error
        assert first.response is not None
        [event] = first.response.events
        digest = hashlib.sha256(b"hello, world").hexdigest()
        assert event.type == "fetch.completed"
        assert (event.payload["status"], event.payload["body"], event.payload["sha256"]) == (
            200,
            "hello, world",
            digest,
        )
        assert event.payload["truncated"] is False
        assert event.payload["headers"]["Content-Length"] == "12"
        assert "s3cret" not in event.payload["url"]
        state = dict(first.response.state_updates)
        assert state == {"sha256": digest}
        again = run("fetch", config, "poll", tmp=root, state=state)
        assert again.succeeded
        assert again.response is not None
        assert again.response.events == ()
        assert "unchanged" in (again.response.result or "")
        rx.answer = b"hello, moon"
        moved = run("fetch", config, "poll", tmp=root, state=state)
        assert moved.response is not None
        assert [e.payload["body"] for e in moved.response.events] == ["hello, moon"]
        always = run("fetch", {**config, "changed_only": False}, "poll", tmp=root, state=state)
        assert always.response is not None
        assert len(always.response.events) == 1


def test_fetch_reads_a_huge_body_only_up_to_its_cap(root: Path) -> None:
    sent = [0]
    gib = 1024**3

    def endless(h: BaseHTTPRequestHandler) -> None:
        h.send_response(200)
        h.send_header("Content-Length", str(gib))
        h.end_headers()
        block = b"x" * 65536
        while sent[0] < gib:
            h.wfile.write(block)
            sent[0] += len(block)

    with server(endless) as base:
        verdict = run("fetch", {"url": base + "/huge", "max_bytes": 100_000}, "poll", tmp=root)
        assert verdict.succeeded, verdict.error
        assert verdict.response is not None
        [event] = verdict.response.events
        assert event.payload["truncated"] is True
        assert event.payload["bytes"] == 100_000
        assert len(event.payload["body"]) == 100_000
    # The client hung up after the cap: the server got nowhere near the whole body
    # (what it sent is what the socket buffers took).
    assert sent[0] < 64 * 1024 * 1024


def test_fetch_gives_up_on_a_trickling_body_at_its_time_cap(root: Path) -> None:
    def trickle(h: BaseHTTPRequestHandler) -> None:
        h.send_response(200)
        h.send_header("Content-Length", "100000")
        h.end_headers()
        for _ in range(200):
            h.wfile.write(b"x")
            h.wfile.flush()
            time.sleep(0.1)

    with server(trickle) as base:
        started = time.monotonic()
        verdict = run("fetch", {"url": base + "/slow", "timeout": 1}, "poll", tmp=root)
        elapsed = time.monotonic() - started
    assert verdict.event is JobEvent.FAIL
    assert verdict.retryable
    assert "longer than the timeout" in (verdict.error or "")
    assert elapsed < 15


def test_fetch_refuses_non_http_urls_and_redirects_away_from_http(root: Path) -> None:
    for url in ("file:///etc/passwd", "ftp://example.org/x", "gopher://x"):
        verdict = run("fetch", {"url": url}, "poll", tmp=root)
        assert not verdict.retryable
        assert "http:// or https://" in (verdict.error or ""), url

    def away(h: BaseHTTPRequestHandler) -> None:
        h.send_response(302)
        h.send_header("Location", "ftp://127.0.0.1/secret" if h.path == "/ftp" else "file:///etc/passwd")
        h.send_header("Content-Length", "0")
        h.end_headers()

    with server(away) as base:
        for path in ("/ftp", "/file"):
            verdict = run("fetch", {"url": base + path}, "poll", tmp=root)
            assert verdict.event is JobEvent.FAIL
            assert not verdict.retryable, verdict.error
            assert "root:" not in (verdict.error or "")


def test_fetch_retries_a_5xx_not_a_404(root: Path) -> None:
    with receiver(status=503) as rx:
        verdict = run("fetch", {"url": rx.url("/x")}, "poll", tmp=root)
    assert verdict.retryable
    assert "HTTP 503" in (verdict.error or "")
    with receiver(status=404) as rx:
        verdict = run("fetch", {"url": rx.url("/x")}, "poll", tmp=root)
    assert not verdict.retryable
    assert "HTTP 404" in (verdict.error or "")
