"""The built-in plugins (``uses: builtin:<name>``) run through the real spawner.

Each run is what the dispatcher does: the plugin loaded by discovery as an
alias of ``builtin:<name>``, the request of :func:`spawn_request`, the real
:class:`SubprocessSpawner` (its own process group, the daemon's interpreter),
and :func:`classify` of what came back. ``notify`` talks to a real HTTP
receiver on 127.0.0.1; ``sys_exec`` runs real programs.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest

from ductile.adapters.plugin_dir import discover
from ductile.adapters.plugin_dir.shipped import BUILTINS_DIR, available
from ductile.domain.config import PluginConfig
from ductile.domain.job import JobEvent
from ductile.domain.lifecycle import SOURCE
from tests.support.builtin import run
from tests.support.receiver import Received, receiver

DEAD = {
    "type": "job.dead",
    "source": SOURCE,
    "event_id": "e-1",
    "timestamp": "2026-12-02T09:00:00Z",
    "dedupe_key": "job.dead:j-1:2",
    "payload": {
        "job_id": "j-1",
        "plugin": "flaky",
        "command": "poll",
        "attempt": 2,
        "max_attempts": 2,
        "submitted_by": "scheduler",
        "reason": "attempts exhausted (2/2)",
        "last_error": "exit 1: boom",
        "stderr_tail": "Traceback...\nValueError: boom",
        "started_at": "2026-12-02T08:59:59Z",
        "completed_at": "2026-12-02T09:00:00Z",
    },
}


@pytest.fixture
def root(tmp_path: Path) -> Path:
    folder = tmp_path / "plugins"
    folder.mkdir(mode=0o755)
    return folder


def test_every_builtin_is_found_and_refusals_name_the_choices(root: Path) -> None:
    assert {"notify", "echo", "sys_exec", "switch", "fetch", "file_watch", "folder_watch"} <= set(available())
    found = discover(str(root), {"x": PluginConfig(name="x", uses="builtin:notifyy")})
    [refusal] = found.refused
    assert "no built-in plugin 'notifyy'" in refusal.reason
    assert "did you mean 'notify'" in refusal.reason
    assert os.path.isdir(BUILTINS_DIR)


# ----------------------------------------------------------------------------- notify


def _json(r: Received) -> Any:
    return json.loads(r.body)


@pytest.mark.parametrize(
    ("fmt", "check"),
    [
        ("json", lambda r: _json(r)["payload"]["job_id"] == "j-1" and _json(r)["payload"]["stderr_tail"]),
        ("ntfy", lambda r: b"j-1" in r.body and b"ValueError: boom" in r.body and r.headers["title"]),
        ("discord", lambda r: "j-1" in _json(r)["content"] and "exit 1: boom" in _json(r)["content"]),
        ("slack", lambda r: "j-1" in _json(r)["text"] and "ValueError: boom" in _json(r)["text"]),
        ("gotify", lambda r: "j-1" in _json(r)["message"] and _json(r)["title"] == "ductile: job.dead"),
        ("form", lambda r: b"message=" in r.body and b"j-1" in r.body and b"type=job.dead" in r.body),
    ],
)
def test_notify_posts_a_death_once_in_each_format(root: Path, fmt: str, check: Any) -> None:
    with receiver() as rx:
        verdict = run("notify", {"url": rx.url(f"/{fmt}"), "format": fmt}, event=DEAD, tmp=root)
        assert verdict.succeeded, verdict.error
        [sent] = rx.received()
    assert (sent.method, sent.path) == ("POST", f"/{fmt}")
    assert check(sent), sent


def test_notify_templates_headers_and_secrets_stay_out_of_errors(root: Path) -> None:
    with receiver() as rx:
        config = {
            "url": rx.url("/t?token=s3cret"),
            "format": "slack",
            "message": "{payload.plugin} died: {payload.reason} {payload.nope} {__class__}",
            "headers": {"Authorization": "Bearer abc"},
        }
        assert run("notify", config, event=DEAD, tmp=root).succeeded
        [sent] = rx.received()
    # Only {dotted.paths} of the event are filled in; one that is not there (or names an
    # attribute, not a key) is empty: a template cannot reach into Python objects.
    assert _json(sent)["text"] == "flaky died: attempts exhausted (2/2)  "
    assert sent.headers["authorization"] == "Bearer abc"


def test_notify_retries_a_5xx_not_a_4xx_and_never_prints_the_query(root: Path) -> None:
    with receiver(status=503) as rx:
        verdict = run("notify", {"url": rx.url("/x?token=s3cret")}, event=DEAD, tmp=root)
    assert verdict.event is JobEvent.FAIL
    assert verdict.retryable
    assert "HTTP 503" in (verdict.error or "")
    assert "s3cret" not in (verdict.error or "")
    with receiver(status=404) as rx:
        verdict = run("notify", {"url": rx.url("/x")}, event=DEAD, tmp=root)
    assert not verdict.retryable
    assert "HTTP 404" in (verdict.error or "")


def test_notify_against_nothing_listening_is_a_retryable_failure(root: Path) -> None:
    with receiver() as rx:
        url = rx.url("/gone")
    verdict = run("notify", {"url": url, "timeout": 5}, event=DEAD, tmp=root)
    assert verdict.event is JobEvent.FAIL
    assert verdict.retryable


def test_notify_reads_at_most_its_cap_of_a_huge_answer(root: Path) -> None:
    with receiver(answer=b"x" * (8 * 1024 * 1024)) as rx:
        verdict = run("notify", {"url": rx.url("/big"), "max_response_bytes": 1024}, event=DEAD, tmp=root)
    assert verdict.succeeded, verdict.error


def test_notify_ping_mode_pings_and_reports_failures_at_fail(root: Path) -> None:
    with receiver() as rx:
        config = {"url": rx.url("/ping/abc"), "mode": "ping"}
        assert run("notify", config, "poll", tmp=root).succeeded
        assert run("notify", config, event=DEAD, tmp=root).succeeded
        alive = {**DEAD, "type": "breaker.closed"}
        assert run("notify", config, event=alive, tmp=root).succeeded
        sent = [(r.method, r.path) for r in rx.received()]
    assert sent == [("GET", "/ping/abc"), ("POST", "/ping/abc/fail"), ("POST", "/ping/abc")]


def test_notify_refuses_a_bad_config_without_retrying(root: Path) -> None:
    verdict = run("notify", {"url": "file:///etc/passwd"}, event=DEAD, tmp=root)
    assert not verdict.retryable
    assert "http:// or https://" in (verdict.error or "")
    verdict = run("notify", {"url": "http://127.0.0.1:9/", "format": "morse"}, event=DEAD, tmp=root)
    assert "format must be one of" in (verdict.error or "")


# ----------------------------------------------------------------------------- echo


def test_echo_answers_with_its_config_and_emits_what_it_got(root: Path) -> None:
    verdict = run("echo", {"greeting": "hi", "n": 2}, "poll", payload={"k": "v"}, tmp=root)
    assert verdict.succeeded
    assert verdict.response is not None
    assert json.loads(verdict.response.result or "") == {"greeting": "hi", "n": 2}
    [event] = verdict.response.events
    assert event.type == "it.echo"
    assert event.payload["payload"] == {"k": "v"}
    quiet = run("echo", {"emit": False}, event=DEAD, tmp=root)
    assert quiet.response is not None
    assert quiet.response.events == ()


# ----------------------------------------------------------------------------- sys_exec


def test_sys_exec_passes_payload_values_as_environment_never_as_shell(root: Path, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    hostile = f"x; touch {marker}; $(touch {marker}) `touch {marker}`"
    script = "import os, sys; print(os.environ['DUCTILE_PAYLOAD_TITLE']); print(sys.argv[1:])"
    config = {"command": [sys.executable, "-c", script, "$HOME", ";", "|"]}
    verdict = run("sys_exec", config, "poll", payload={"title": hostile, "n": 3}, tmp=root)
    assert verdict.succeeded, verdict.error
    assert not marker.exists()
    assert verdict.response is not None
    [event] = verdict.response.events
    assert event.type == "it.completed"
    out = event.payload["stdout_tail"].splitlines()
    assert out == [hostile, "['$HOME', ';', '|']"]
    assert event.payload["exit_code"] == 0


def test_sys_exec_success_codes_and_tails(root: Path) -> None:
    script = "import sys; sys.stdout.write('o' * 100000); sys.stderr.write('last words'); sys.exit(3)"
    config = {"command": [sys.executable, "-c", script], "tail_bytes": 64}
    failed = run("sys_exec", config, "poll", tmp=root)
    assert failed.event is JobEvent.FAIL
    assert failed.retryable
    assert "exited with 3: last words" in (failed.error or "")
    ok = run("sys_exec", {**config, "success_exit_codes": [0, 3]}, "poll", tmp=root)
    assert ok.succeeded
    assert ok.response is not None
    [event] = ok.response.events
    assert event.payload["stdout_tail"] == "o" * 64
    assert event.payload["stderr_tail"] == "last words"


def test_sys_exec_refuses_a_shell_string_and_a_missing_program(root: Path) -> None:
    as_string = run("sys_exec", {"command": "rm -rf /"}, "poll", tmp=root)
    assert not as_string.retryable
    assert "non-empty list" in (as_string.error or "")
    missing = run("sys_exec", {"command": ["/nonexistent/prog"]}, "poll", tmp=root)
    assert not missing.retryable
    assert "could not start /nonexistent/prog" in (missing.error or "")
