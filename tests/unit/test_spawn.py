"""The one spawn-request builder, shared by the dispatcher and `ductile status`'s health checks."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

from ductile.app.spawn import HELPER_PATH, plugin_env, spawn_request
from ductile.domain.config import KILL_GRACE, PluginConfig, Timeouts
from ductile.domain.plugin import Manifest, Plugin

NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
PLUGIN = Plugin(
    manifest=Manifest(
        name="feeds",
        version="1.0.0",
        protocol=1,
        entrypoint="run",
        commands=frozenset({"poll", "handle", "health"}),
    ),
    directory="/srv/plugins/feeds",
    executable="/srv/plugins/feeds/run",
)
SETTINGS = PluginConfig(
    name="feeds", config={"url": "https://example.org"}, timeouts=Timeouts(poll=timedelta(seconds=90))
)


def test_a_request_carries_the_protocol_body_the_environment_and_the_commands_timeout() -> None:
    base = plugin_env({"PATH": "/opt/bin", "HOME": "/home/op", "GITHUB_TOKEN": "secret"})
    request = spawn_request(
        PLUGIN, "poll", job_id="j-1", attempt=2, settings=SETTINGS, state={"n": 1}, now=NOW, base_env=base
    )
    assert (request.executable, request.cwd) == ("/srv/plugins/feeds/run", "/srv/plugins/feeds")
    assert (request.timeout, request.grace) == (90.0, KILL_GRACE.total_seconds())
    assert request.env == {
        "PATH": "/opt/bin",
        "HOME": "/home/op",
        "LANG": "C.UTF-8",
        "PYTHONPATH": HELPER_PATH,
        "DUCTILE_PLUGIN": "feeds",
        "DUCTILE_COMMAND": "poll",
        "DUCTILE_JOB_ID": "j-1",
        "DUCTILE_ATTEMPT": "2",
    }
    assert json.loads(request.stdin) == {
        "protocol": 1,
        "job_id": "j-1",
        "command": "poll",
        "config": {"url": "https://example.org"},
        "state": {"n": 1},
        "deadline_at": "2026-03-02T09:01:30Z",
    }


def _body(command: str, event: dict[str, object]) -> dict[str, object]:
    request = spawn_request(
        PLUGIN, command, job_id="j", attempt=1, settings=SETTINGS, state={}, now=NOW, base_env={}, event=event
    )
    body: dict[str, object] = json.loads(request.stdin)
    return body


def test_only_a_handle_request_carries_the_event() -> None:
    event: dict[str, object] = {"type": "t", "payload": {}, "source": "api", "event_id": "e"}
    assert _body("handle", event)["event"] == event
    health = _body("health", event)
    assert "event" not in health
    assert health["deadline_at"] == "2026-03-02T09:00:10Z"  # the health timeout's default, 10 s


def test_the_helper_path_holds_a_ductile_whose_plugin_is_this_one(tmp_path: Path) -> None:
    """Any interpreter with PYTHONPATH=HELPER_PATH imports this ductile's plugin.py, and only it."""
    import subprocess
    import sys

    from ductile import plugin

    done = subprocess.run(
        [sys.executable, "-S", "-c", "from ductile import plugin; print(plugin.__file__)"],
        env={"PYTHONPATH": HELPER_PATH, "PATH": "/usr/bin:/bin"},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    )
    assert done.stdout.strip() == plugin.__file__
    listed = sorted(p.name for p in Path(HELPER_PATH).iterdir() if not p.name.startswith("__"))
    assert listed == ["ductile"], "nothing but the ductile shim may be on a plugin's PYTHONPATH"
