"""docs/plugins.md cannot rot: every example in it is checked against the code.

Conventions of the page (a marker comment right before a fenced block):

- ``<!-- test: file PATH -->``: the block is the file PATH, byte for byte;
  the example plugins under examples/plugins-doc/ are then run for real
  (SubprocessSpawner + settle), below.
- ``<!-- test: request -->``: exactly what the core's ``build_request``
  writes for those fields (``request-v2``: in protocol 2, with its payload
  and context); ``response``: accepted by ``parse_response``
  (``response-v2``: under protocol 2);
  ``event``: an envelope as ``Envelope.to_json`` writes it;
  ``emitted-event``: an event a plugin may emit; ``manifest NAME``: accepted
  by ``parse_manifest`` for folder NAME (``manifest-v2 FOLDER``: a v2
  manifest, whose plugin name need not be the folder's); ``config``: a valid
  operator config.
- ``timeouts``, ``retry-defaults``: the table that follows holds the code's
  defaults; ``env``: the list that follows is exactly the inherited
  environment.

Every JSON block must carry a marker; every Python block must compile and
every sh block must pass ``sh -n``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import threading
import urllib.parse
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import attrs
import pytest
import yaml

from ductile import plugin
from ductile.adapters.config import load_config, parse_config
from ductile.adapters.plugin_dir import discover
from ductile.app.spawn import DEFAULT_PATH, INHERITED_ENV
from ductile.domain.config import Config, Timeouts
from ductile.domain.job import JobStatus
from ductile.domain.plugin import parse_manifest
from ductile.domain.protocol import build_request, parse_response
from ductile.domain.retry import RetryPolicy
from ductile.domain.routing import Envelope
from tests.support.plugins import Ran, run_plugin, spawn_env

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "plugins.md"
EXAMPLES = ROOT / "examples" / "plugins-doc"
MARKER = re.compile(r"<!-- test: (.+?) -->")
TIMER_DEADLINE = 20.0


@attrs.frozen
class Block:
    marker: str | None
    lang: str
    text: str
    line: int

    @property
    def kind(self) -> str:
        return (self.marker or "").split(" ", 1)[0]

    @property
    def argument(self) -> str:
        return (self.marker or "").split(" ", 1)[1]


def doc_lines() -> list[str]:
    return DOC.read_text(encoding="utf-8").split("\n")


def fenced_blocks() -> list[Block]:
    lines = doc_lines()
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        if lines[i].startswith("```"):
            lang = lines[i][3:].strip()
            start = i
            i += 1
            body: list[str] = []
            while not lines[i].startswith("```"):
                body.append(lines[i])
                i += 1
            before = next((lines[j] for j in range(start - 1, -1, -1) if lines[j].strip()), "")
            found = MARKER.fullmatch(before.strip())
            blocks.append(Block(found.group(1) if found else None, lang, "\n".join(body) + "\n", start + 1))
        i += 1
    return blocks


def marked(kind: str) -> list[Block]:
    return [b for b in fenced_blocks() if b.kind == kind]


def after_marker(kind: str) -> list[str]:
    """The lines after ``<!-- test: kind -->`` up to the next blank line."""
    lines = doc_lines()
    start = lines.index(f"<!-- test: {kind} -->") + 1
    end = lines.index("", start)
    return lines[start:end]


def table_after(kind: str) -> dict[str, str]:
    rows = after_marker(kind)[2:]  # header and ruler
    cells = [[c.strip() for c in row.strip("|").split("|")] for row in rows]
    return {c[0].strip("`"): c[1] for c in cells}


def seconds(text: str) -> float:
    number, unit = text.split()
    assert unit == "s", text
    return float(number)


# --------------------------------------------------------------------------- the page itself


def test_the_page_has_checked_blocks_of_every_kind() -> None:
    kinds = {b.kind for b in fenced_blocks() if b.marker}
    assert kinds == {
        "file", "request", "response", "event", "emitted-event", "manifest", "config",
        "request-v2", "response-v2", "manifest-v2",
    }  # fmt: skip
    assert len(marked("request")) == 4  # poll, handle, health, init
    assert {json.loads(b.text)["command"] for b in marked("request")} == {"poll", "handle", "health", "init"}


def test_every_json_block_is_checked() -> None:
    unchecked = [b.line for b in fenced_blocks() if b.lang == "json" and b.marker is None]
    assert unchecked == [], f"JSON blocks without a <!-- test: ... --> marker at lines {unchecked}"


def test_file_blocks_are_the_example_files_byte_for_byte() -> None:
    for block in marked("file"):
        path = ROOT / block.argument
        assert path.read_text(encoding="utf-8") == block.text, (
            f"{block.argument} differs from line {block.line}"
        )
    for block in marked("manifest"):
        on_disk = EXAMPLES / "plugins" / block.argument / "manifest.yaml"
        assert on_disk.read_text(encoding="utf-8") == block.text


def test_every_example_file_is_shown_in_the_page() -> None:
    shown = {ROOT / b.argument for b in marked("file")}
    shown |= {EXAMPLES / "plugins" / b.argument / "manifest.yaml" for b in marked("manifest")}
    # (A daemon started on the example config writes its database under state/: not an example.)
    on_disk = {p for p in (EXAMPLES / "plugins").rglob("*") if p.is_file() and "__pycache__" not in p.parts}
    on_disk |= {p for p in EXAMPLES.iterdir() if p.is_file()}
    assert on_disk - shown == set()


def test_request_examples_are_what_the_core_sends() -> None:
    for block in marked("request"):
        shown = json.loads(block.text)
        rebuilt = build_request(
            job_id=shown["job_id"],
            command=shown["command"],
            config=shown["config"],
            state=shown["state"],
            deadline_at=datetime.fromisoformat(shown["deadline_at"].replace("Z", "+00:00")),
            event=shown.get("event"),
        )
        assert json.loads(rebuilt) == shown, f"request at line {block.line}"
        request = plugin.parse_request(block.text)
        assert request.command == shown["command"]
        if "event" in shown:
            assert request.event is not None
            envelope = shown["event"]
            assert request.event.raw == envelope


def test_v2_request_examples_are_what_the_core_sends_a_v2_plugin() -> None:
    blocks = marked("request-v2")
    assert blocks
    for block in blocks:
        shown = json.loads(block.text)
        rebuilt = build_request(
            job_id=shown["job_id"],
            command=shown["command"],
            config=shown["config"],
            state=shown["state"],
            deadline_at=datetime.fromisoformat(shown["deadline_at"].replace("Z", "+00:00")),
            event=shown.get("event"),
            protocol=2,
            payload=shown.get("payload"),
            context=shown["context"],
        )
        assert json.loads(rebuilt) == shown, f"request at line {block.line}"
        assert list(json.loads(rebuilt)) == list(shown), f"field order of the request at line {block.line}"
        request = plugin.parse_request(block.text)
        assert (request.protocol, dict(request.payload)) == (2, shown.get("payload", {}))


def test_v2_response_and_manifest_examples_are_accepted() -> None:
    for block in marked("response-v2"):
        response = parse_response(block.text.encode(), protocol=2)
        assert response.result is not None
        assert all(e.payload.get("result") == response.result for e in response.events)
    for block in marked("manifest-v2"):
        manifest = parse_manifest(yaml.safe_load(block.text), directory_name=block.argument)
        assert (manifest.protocol, manifest.manifest_format) == (2, 2)
        assert manifest.name != block.argument  # the point of the example: the folder is named otherwise


def test_response_examples_are_accepted() -> None:
    for block in marked("response"):
        parse_response(block.text.encode())
    for block in marked("emitted-event"):
        (emitted,) = parse_response(
            json.dumps({"status": "ok", "events": [json.loads(block.text)]}).encode()
        ).events
        assert emitted.dedupe_key is not None


def test_event_examples_are_envelopes_as_the_core_writes_them() -> None:
    for block in marked("event"):
        shown = json.loads(block.text)
        envelope = Envelope(
            type=shown["type"],
            payload=shown["payload"],
            source=shown["source"],
            timestamp=datetime.fromisoformat(shown["timestamp"].replace("Z", "+00:00")),
            event_id=shown["event_id"],
            dedupe_key=shown.get("dedupe_key"),
        )
        assert envelope.to_json() == shown


def test_manifest_examples_are_valid() -> None:
    for block in marked("manifest"):
        manifest = parse_manifest(yaml.safe_load(block.text), directory_name=block.argument)
        assert manifest.name == block.argument


def test_config_examples_are_valid(tmp_path: Path) -> None:
    for block in marked("config"):
        parse_config(
            block.text, source=f"plugins.md:{block.line}", base_dir=str(tmp_path), env={}, local_tz=UTC
        )


def test_code_fragments_compile() -> None:
    for block in fenced_blocks():
        if block.lang == "python":
            compile(block.text, f"plugins.md:{block.line}", "exec")
        elif block.lang == "sh":
            done = subprocess.run(["sh", "-n"], input=block.text, capture_output=True, text=True, check=False)
            assert done.returncode == 0, f"sh block at line {block.line}: {done.stderr}"


def test_the_documented_defaults_are_the_code_defaults() -> None:
    timeouts = table_after("timeouts")
    assert {k: seconds(v) for k, v in timeouts.items()} == {
        command: getattr(Timeouts(), command).total_seconds()
        for command in ("poll", "handle", "health", "init")
    }
    retry = table_after("retry-defaults")
    assert int(retry["retry.max_attempts"]) == RetryPolicy().max_attempts
    assert seconds(retry["retry.backoff_base"]) == RetryPolicy().backoff_base.total_seconds()


def test_the_documented_environment_is_the_inherited_one() -> None:
    listed = set(re.findall(r"`([A-Z_]+)`", " ".join(after_marker("env"))))
    assert listed == set(INHERITED_ENV)
    assert f"`{DEFAULT_PATH}`" in " ".join(after_marker("env"))
    text = DOC.read_text(encoding="utf-8")
    for name in ("DUCTILE_PLUGIN", "DUCTILE_COMMAND", "DUCTILE_JOB_ID", "DUCTILE_ATTEMPT", "PYTHONPATH"):
        assert f"`{name}`" in text


def test_the_smallest_plugin_is_complete(tmp_path: Path) -> None:
    """The first two blocks of the page: make the plugin as shown, load it with the config shown, run it."""
    make, config_block = fenced_blocks()[:2]
    assert "mkdir -p plugins/hello" in make.text
    done = subprocess.run(["sh", "-c", make.text], cwd=tmp_path, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    config = parse_config(
        config_block.text, source="plugins.md", base_dir=str(tmp_path), env={}, local_tz=UTC
    )
    found = discover(config.plugins_dir, {"hello": {}})
    assert found.refused == ()
    hello = found.plugins["hello"]
    ran = run_plugin(Path(hello.executable), plugin_name="hello")
    assert ran.job.status is JobStatus.SUCCEEDED, ran.stderr
    assert [line.message for line in ran.settlement.run.logs] == ["hello"]


# --------------------------------------------------------------------------- the example setup


def example_config() -> Config:
    return load_config(EXAMPLES / "ductile.yaml", env={})


def test_the_example_config_loads_every_example_plugin() -> None:
    config = example_config()
    found = discover(config.plugins_dir, {n: dict(p.config) for n, p in config.plugins.items()})
    assert found.refused == ()
    assert sorted(found.plugins) == ["disk-usage", "oauth-feed", "outbox"]


def install(tmp_path: Path, name: str) -> Path:
    """A copy of an example plugin, its Python shebang pointed at this interpreter.

    (``/usr/bin/env python3`` here is a slow version-manager shim without ductile;
    the file is otherwise run exactly as shipped.)
    """
    target = tmp_path / "plugins" / name
    shutil.copytree(EXAMPLES / "plugins" / name, target)
    manifest = parse_manifest(yaml.safe_load((target / "manifest.yaml").read_text()), directory_name=name)
    entry = target / manifest.entrypoint
    text = entry.read_text(encoding="utf-8")
    if text.startswith("#!/usr/bin/env python3\n"):
        entry.write_text(f"#!{sys.executable}\n" + text.split("\n", 1)[1], encoding="utf-8")
    return entry


def run_example(entry: Path, command: str, **kwargs: Any) -> Ran:
    config = example_config()
    name = entry.parent.name
    kwargs.setdefault("config", dict(config.plugin(name).config))
    return run_plugin(
        entry, command, plugin_name=name, routes=config.routes, timeout=TIMER_DEADLINE, **kwargs
    )


# --------------------------------------------------------------------------- disk-usage (sh)


def tool_dir(tmp_path: Path, *, jq: bool) -> str:
    """A PATH holding only the tools run.sh uses (with or without jq)."""
    tools = tmp_path / ("with-jq" if jq else "without-jq")
    tools.mkdir()
    for tool in ("cat", "sed", "df", "awk", "date") + (("jq",) if jq else ()):
        found = shutil.which(tool)
        assert found is not None, tool
        (tools / tool).symlink_to(found)
    return str(tools)


@pytest.mark.parametrize("jq", [True, False], ids=["with-jq", "without-jq"])
def test_disk_usage_polls_and_emits_with_or_without_jq(tmp_path: Path, jq: bool) -> None:
    if jq and shutil.which("jq") is None:
        pytest.skip("jq is not installed")
    entry = install(tmp_path, "disk-usage")
    env = spawn_env("disk-usage", "poll", "job-poll-1")
    env["PATH"] = tool_dir(tmp_path, jq=jq)

    full = run_example(
        entry, "poll", config={"path": "/", "threshold_percent": 0}, state={"last_percent": 7}, env=env
    )
    assert full.job.status is JobStatus.SUCCEEDED, full.stderr
    assert full.settlement.state is not None
    percent = full.settlement.state["last_percent"]
    assert isinstance(percent, int)
    assert 0 <= percent <= 100
    (event,) = full.settlement.events
    assert event.type == "disk.full"
    assert event.payload == {"path": "/", "percent": percent, "threshold_percent": 0}
    assert re.fullmatch(r"disk-full:/:\d{4}-\d{2}-\d{2}", event.dedupe_key or "")
    (child,) = full.settlement.children  # routed to outbox by the example config
    assert (child.plugin, child.command, child.dedupe_key) == ("outbox", "handle", event.dedupe_key)
    assert [line.message for line in full.settlement.run.logs] == [f"/ is {percent}% full (last check: 7)"]

    calm = run_example(entry, "poll", config={"path": "/", "threshold_percent": 101}, env=env)
    assert calm.job.status is JobStatus.SUCCEEDED, calm.stderr
    assert calm.settlement.events == ()
    (line,) = calm.settlement.run.logs
    assert re.fullmatch(r"/ is \d+% full \(last check: none\)", line.message)


def test_disk_usage_refuses_bad_config_and_reports_health(tmp_path: Path) -> None:
    entry = install(tmp_path, "disk-usage")
    bad = run_example(entry, "poll", config={"path": "/", "threshold_percent": "ninety"})
    assert bad.outcome.exit_code == 78
    assert bad.job.status is JobStatus.DEAD
    assert bad.job.last_error == (
        "config key 'threshold_percent' must be a whole number (exit code 78, EX_CONFIG: not retried)"
    )
    healthy = run_example(entry, "health")
    assert healthy.job.status is JobStatus.SUCCEEDED, healthy.stderr
    assert healthy.settlement.run.logs[0].message.startswith("/ can be measured (")
    missing = run_example(entry, "health", config={"path": str(tmp_path / "no such dir")})
    assert missing.outcome.exit_code == 1
    assert (missing.job.last_error or "").startswith("cannot measure the filesystem of ")
    unknown = run_example(entry, "handle", event={})
    assert unknown.outcome.exit_code == 78
    assert (unknown.job.last_error or "").startswith("disk-usage does not handle 'handle'")


# --------------------------------------------------------------------------- outbox (stdlib Python)


def test_disk_usage_events_reach_the_outbox_once(tmp_path: Path) -> None:
    """The example pipeline end to end: poll -> settle -> routed handle -> the file."""
    disk = install(tmp_path, "disk-usage")
    outbox = install(tmp_path, "outbox")
    polled = run_example(disk, "poll", config={"path": "/", "threshold_percent": 0})
    (child,) = polled.settlement.children
    file = tmp_path / "outbox.jsonl"
    config = {"path": str(file)}

    first = run_example(outbox, "handle", event=child.payload, config=config, state={"written": 4})
    assert first.job.status is JobStatus.SUCCEEDED, first.stderr
    assert first.settlement.state == {"written": 5}
    assert [line.message for line in first.settlement.run.logs] == ["wrote disk.full from disk-usage (#5)"]
    lines = [json.loads(line) for line in file.read_text(encoding="utf-8").splitlines()]
    assert lines == [
        {
            "event_id": child.payload["event_id"],
            "type": "disk.full",
            "source": "disk-usage",
            "timestamp": child.payload["timestamp"],
            "payload": child.payload["payload"],
        }
    ]
    # At-least-once: the same event again (a retry after a crash) is not written twice.
    again = run_example(outbox, "handle", event=child.payload, config=config, state={"written": 5})
    assert again.job.status is JobStatus.SUCCEEDED
    assert again.settlement.state is None  # nothing changed
    assert [line.message for line in again.settlement.run.logs] == [
        f"event {child.payload['event_id']} was already written"
    ]
    assert len(file.read_text(encoding="utf-8").splitlines()) == 1


def test_outbox_health_and_config_errors(tmp_path: Path) -> None:
    outbox = install(tmp_path, "outbox")
    healthy = run_example(outbox, "health", config={"path": str(tmp_path / "out.jsonl")})
    assert healthy.job.status is JobStatus.SUCCEEDED, healthy.stderr
    sick = run_example(outbox, "health", config={"path": str(tmp_path / "nowhere" / "out.jsonl")})
    assert sick.job.status is not JobStatus.SUCCEEDED
    assert sick.job.last_error == f"cannot write to {tmp_path / 'nowhere'}"
    unset = run_example(outbox, "handle", event={}, config={})
    assert unset.outcome.exit_code == 78
    assert unset.job.status is JobStatus.DEAD


# --------------------------------------------------------------------------- oauth-feed (ductile.plugin)


class Provider:
    """A tiny OAuth2 API: rotating refresh tokens, bearer-protected measurements."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.refresh_tokens = {"r1"}
        self.access_tokens: set[str] = set()
        self.issued = 1
        self.presented: list[str] = []
        self.measurements: list[dict[str, Any]] = [{"id": 1, "kg": 80.4}, {"id": 2, "kg": 80.1}]
        self.fail_measurements = False

    def token(self, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        with self.lock:
            if (form.get("client_id"), form.get("client_secret")) != ("cid", "csecret"):
                return 401, {"error": "invalid_client"}
            used = form.get("refresh_token", "")
            self.presented.append(used)
            if form.get("grant_type") != "refresh_token" or used not in self.refresh_tokens:
                return 400, {"error": "invalid_grant"}
            self.refresh_tokens.discard(used)  # rotation: the old one dies now
            self.issued += 1
            self.refresh_tokens.add(f"r{self.issued}")
            self.access_tokens.add(f"a{self.issued}")
            return 200, {
                "access_token": f"a{self.issued}",
                "refresh_token": f"r{self.issued}",
                "expires_in": 3600,
            }

    def list(self, authorization: str, since: int) -> tuple[int, dict[str, Any]]:
        with self.lock:
            if authorization.removeprefix("Bearer ") not in self.access_tokens:
                return 401, {"error": "invalid_token"}
            if self.fail_measurements:
                return 500, {"error": "oops"}
            return 200, {"measurements": [m for m in self.measurements if m["id"] > since]}


@pytest.fixture
def provider() -> Iterator[tuple[Provider, str]]:
    api = Provider()

    class Handler(BaseHTTPRequestHandler):
        def _send(self, status: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            form = dict(urllib.parse.parse_qsl(self.rfile.read(length).decode()))
            self._send(*api.token(form) if self.path == "/v1/oauth/token" else (404, {}))

        def do_GET(self) -> None:
            url = urllib.parse.urlsplit(self.path)
            if url.path != "/v1/measurements":
                self._send(404, {})
                return
            since = int(urllib.parse.parse_qs(url.query)["since"][0])
            self._send(*api.list(self.headers.get("Authorization", ""), since))

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield api, f"http://127.0.0.1:{server.server_address[1]}/v1"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_oauth_feed_keeps_its_tokens_through_rotation_revocation_and_failures(
    tmp_path: Path, provider: tuple[Provider, str]
) -> None:
    api, url = provider
    entry = install(tmp_path, "oauth-feed")
    config = {"api_url": url, "client_id": "cid", "client_secret": "csecret", "initial_refresh_token": "r1"}
    state: dict[str, Any] = {}

    def poll() -> Ran:
        nonlocal state
        ran = run_example(entry, "poll", config=config, state=state)
        if ran.settlement.state is not None:
            state = ran.settlement.state
        return ran

    def messages(ran: Ran) -> list[str]:
        return [line.message for line in ran.settlement.run.logs]

    # 1. No tokens yet: refresh with the operator's token, save every field together.
    first = poll()
    assert first.job.status is JobStatus.SUCCEEDED, first.stderr
    assert api.presented == ["r1"]
    assert {k: state[k] for k in ("access_token", "refresh_token", "cursor")} == {
        "access_token": "a2",
        "refresh_token": "r2",
        "cursor": 2,
    }
    assert not plugin.tokens_expired(state)
    assert [(e.type, e.payload, e.dedupe_key) for e in first.settlement.events] == [
        ("measurement.new", {"id": 1, "kg": 80.4}, "measurement-1"),
        ("measurement.new", {"id": 2, "kg": 80.1}, "measurement-2"),
    ]
    assert messages(first) == ["refreshed the access token", "2 new measurement(s)"]

    # 2. A valid token: no refresh; only what is new since the cursor.
    api.measurements.append({"id": 3, "kg": 79.9})
    second = poll()
    assert api.presented == ["r1"]
    assert [e.dedupe_key for e in second.settlement.events] == ["measurement-3"]
    assert state["cursor"] == 3

    # 3. Revoked before its expiry: one refresh, with the rotated token, and on.
    api.access_tokens.clear()
    third = poll()
    assert third.job.status is JobStatus.SUCCEEDED, third.stderr
    assert api.presented == ["r1", "r2"]
    assert state["refresh_token"] == "r3"

    # 4. Expired, and the API fails after the refresh: the new tokens are saved anyway.
    state = {**state, "expires_at": "2000-01-01T00:00:00Z"}
    api.fail_measurements = True
    fourth = poll()
    assert fourth.job.status is JobStatus.SUCCEEDED, fourth.stderr
    assert api.presented == ["r1", "r2", "r3"]
    assert (state["refresh_token"], state["cursor"]) == ("r4", 3)
    assert messages(fourth)[-1] == (
        "fetching failed after a token refresh (tokens saved): "
        "HTTPError: HTTP Error 500: Internal Server Error"
    )

    # 5. The next poll works with what was saved (r3 is dead by now: losing r4 would be fatal).
    api.fail_measurements = False
    api.measurements.append({"id": 4, "kg": 79.8})
    fifth = poll()
    assert api.presented == ["r1", "r2", "r3"]
    assert [e.dedupe_key for e in fifth.settlement.events] == ["measurement-4"]

    # health reads the same state.
    health = run_example(entry, "health", config=config, state=state)
    assert health.job.status is JobStatus.SUCCEEDED, health.stderr
    assert messages(health) == [f"access token valid until {state['expires_at']}"]

    # 6. A refused refresh token needs a human: not retried.
    dead = run_example(
        entry, "poll", config=config, state={**state, "refresh_token": "r2", "expires_at": None}
    )
    assert dead.outcome.exit_code == 78
    assert dead.job.status is JobStatus.DEAD
    assert dead.job.last_error == (
        "the refresh token was refused (HTTP 400): authorize again and set initial_refresh_token "
        "(exit code 78, EX_CONFIG: not retried)"
    )


def test_oauth_feed_health_needs_its_config(tmp_path: Path) -> None:
    entry = install(tmp_path, "oauth-feed")
    ran = run_example(entry, "health", config={"api_url": "http://127.0.0.1:9/v1"})
    assert ran.outcome.exit_code == 78
    assert "config key 'client_id' is missing: set it under plugins.oauth-feed.config" in (
        ran.job.last_error or ""
    )
    fine = run_example(entry, "health", config={"api_url": "x", "client_id": "c", "client_secret": "s"})
    assert fine.job.status is JobStatus.SUCCEEDED
    assert [line.message for line in fine.settlement.run.logs] == [
        "no valid access token: the next poll refreshes it"
    ]


def test_the_documented_hand_test_command_works() -> None:
    """The 'Testing a plugin' shell snippet, run as written (from the example's folder)."""
    (snippet,) = [
        b for b in fenced_blocks() if b.lang == "sh" and "DUCTILE_PLUGIN=disk-usage ./run.sh" in b.text
    ]
    body = snippet.text.split("\n", 1)[1]  # without the `cd`
    done = subprocess.run(
        ["sh", "-c", body],
        cwd=EXAMPLES / "plugins" / "disk-usage",
        capture_output=True,
        text=True,
        check=False,
        env={"PATH": os.environ.get("PATH", DEFAULT_PATH)},
    )
    answer_line, exit_line = done.stdout.strip().split("\n")
    assert exit_line == "exit code 0"
    response = parse_response(answer_line.encode())
    assert response.ok
    assert [e.type for e in response.events] == ["disk.full"]


def test_the_documented_respond_example_runs() -> None:
    (snippet,) = [b for b in fenced_blocks() if b.lang == "python" and "plugin.respond(" in b.text]
    exec(compile(snippet.text, "plugins.md", "exec"), {})
