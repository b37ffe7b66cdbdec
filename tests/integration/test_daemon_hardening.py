"""The real daemon against bad values and faults from outside (issue 19, items 8, 9, 11, 13, 17).

Each test reproduces one fault as it was reported against ``ductile start``
and checks what the daemon does now. The HTTP floods (items 10 and 12) are in
``test_http_floods.py``.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import site as site_module
from tests.support.plugins import gated, recorder
from tests.support.site import SCRIPT, SECRET, Site, log_match, requests_of, signature, wait_until

# --------------------------------------------------------------------------- D1: redelivery during a run


def test_a_redelivery_while_the_first_job_runs_returns_the_running_job(site: Site) -> None:
    """Item 17 (D1 as amended): same delivery id, same job, even while that job runs."""
    site.plugin("slow", gated(site, "slow"), commands=["handle"])
    site.write_config(
        endpoints=[{"path": "/hook/slow", "plugin": "slow", "secret": SECRET, "dedupe_header": "X-Delivery"}]
    )
    daemon = site.start()
    body = json.dumps({"n": 1}).encode()
    headers = {"X-Hub-Signature-256": signature(body), "X-Delivery": "d-1"}

    first = daemon.post("/hook/slow", body, headers)
    assert first.status_code == 202, first.text
    job_id = first.json()["job_id"]
    wait_until(lambda: site.runs("slow"), 10, "the first job to start running")
    assert site.job(job_id)["job"]["status"] == "running"

    again = daemon.post("/hook/slow", body, headers)

    assert again.status_code == 202, again.text
    assert again.json()["job_id"] == job_id
    assert site.query("SELECT count(*) FROM jobs") == [(1,)]
    site.release()
    wait_until(lambda: site.job(job_id)["job"]["status"] == "succeeded", 15, "the job to succeed")
    assert len(site.runs("slow")) == 1


# --------------------------------------------------------------------------- bad values in the config

#: A timer whose payload, and a plugin whose config, hold a lone surrogate escape (valid YAML).
SURROGATE_CONFIG = """\
service: {state_dir: ./state, tick_interval: 1s}
plugins_dir: ./plugins
plugins:
  p:
    config: {x: "\\ud83d"}
    schedule: {every: 2s, emit: {type: t, payload: {a: "\\ud83d"}}}
routes:
  - {from: p, event_type: t, to: p}
"""


def test_a_lone_surrogate_in_the_config_is_refused_by_check_start_and_reload(site: Site) -> None:
    """Item 8: such a config passed `config check`, then every tick failed while /healthz said ok."""
    site.plugin("p", recorder(site, "p"), commands=["poll", "handle"])
    site.write_config({"p": {}}, endpoints=[])
    good = site.config_path.read_text()
    site.config_path.write_text(SURROGATE_CONFIG)

    check = site.cli("config", "check")
    assert check.returncode == 2, check
    assert "plugins.p.config.x (line 5)" in check.stderr
    assert "lone surrogate" in check.stderr
    assert "Traceback" not in check.stderr

    site.config_path.write_text(good)
    daemon = site.start()
    site.config_path.write_text(SURROGATE_CONFIG)
    os.kill(daemon.pid, signal.SIGHUP)
    line = daemon.wait_for_log(
        log_match("reload refused", level="error", component="reload"), 10, "the refused reload"
    )
    assert "lone surrogate" in line["message"]
    assert daemon.garbage == []
    assert "Logging error" not in daemon.stderr_path.read_text()
    assert daemon.health()["scheduler"]["ok"] is True
    # the running daemon's report reaches `ductile status` through its status file
    site.config_path.write_text(good)
    report = wait_until(lambda: site.cli_json("status")["daemon"]["scheduler"], 10, "the scheduler report")
    assert (report["ok"], report["failed_ticks"]) == (True, 0)


# --------------------------------------------------------------------------- secrets in stored headers


def test_credentials_in_webhook_headers_are_stored_and_shown_masked(site: Site) -> None:
    """Item 13: `ductile job` showed Authorization, Cookie, X-Api-Key... of a delivery."""
    site.plugin("a", recorder(site, "a"), commands=["handle"])
    site.write_config(endpoints=[{"path": "/hook/a", "plugin": "a", "secret": SECRET}])
    daemon = site.start()
    body = b'{"n": 1}'
    headers = {
        "X-Hub-Signature-256": signature(body),
        "Authorization": "Bearer hunter2",
        "Cookie": "session=abc",
        "X-Api-Key": "k-123456",
        "X-Gitlab-Token": "glpat-xyz",
    }
    job_id = daemon.post("/hook/a", body, headers).json()["job_id"]
    wait_until(lambda: site.runs("a"), 15, "the job to run")

    stored = site.query("SELECT payload FROM jobs WHERE id = ?", (job_id,))[0][0]
    shown = site.cli_ok("job", job_id) + json.dumps(site.job(job_id)) + json.dumps(requests_of(site, "a"))
    for secret in ("hunter2", "session=abc", "k-123456", "glpat-xyz"):
        assert secret not in stored
        assert secret not in shown
    event_headers = site.job(job_id)["job"]["payload"]["headers"]
    for name in ("authorization", "cookie", "x-api-key", "x-gitlab-token"):
        assert event_headers[name] == "[masked]"

    # a job stored unmasked (by an older version) is shown masked all the same
    with sqlite3.connect(site.db_path) as db:
        payload = json.loads(stored)
        payload["headers"]["x-api-key"] = "old-secret-1"
        db.execute("UPDATE jobs SET payload = ? WHERE id = ?", (json.dumps(payload), job_id))
    assert "old-secret-1" not in site.cli_ok("job", job_id)
    assert site.job(job_id)["job"]["payload"]["headers"]["x-api-key"] == "[masked]"


# --------------------------------------------------------------------------- the wall clock steps back

LIBFAKETIME = next(
    (
        path
        for path in (
            "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1",
            "/usr/lib/aarch64-linux-gnu/faketime/libfaketime.so.1",
            "/usr/lib/faketime/libfaketime.so.1",
        )
        if os.path.exists(path)
    ),
    None,
)


@pytest.mark.skipif(
    LIBFAKETIME is None,
    reason="LOUD SKIP: libfaketime is not installed (apt-get install faketime; .ci/run does it), "
    "so the real daemon's backward clock step is not tested here (the unit tests still run)",
)
def test_the_real_daemon_keeps_its_schedules_when_the_wall_clock_steps_back(site: Site) -> None:
    """Item 9: a -1 h step stalled every schedule for an hour. libfaketime moves the daemon's
    wall clock (not its monotonic clock) by rewriting the offset file while it runs."""
    assert LIBFAKETIME is not None
    offset = site.root / "faketime.offset"
    offset.write_text("+0\n")
    environment = site.env()
    environment.update(
        LD_PRELOAD=LIBFAKETIME,
        FAKETIME_TIMESTAMP_FILE=str(offset),
        FAKETIME_NO_CACHE="1",
        FAKETIME_DONT_FAKE_MONOTONIC="1",
    )
    site.env = lambda: dict(environment)  # type: ignore[method-assign]
    site.plugin("tick", recorder(site, "tick"), commands=["poll"])
    site.write_config({"tick": {"schedule": {"every": "2s"}}}, endpoints=[])
    daemon = site.start()
    wait_until(lambda: len(site.runs("tick")) >= 2, 15, "two scheduled runs")

    offset.write_text("-1h\n")
    daemon.wait_for_log(log_match("the wall clock stepped back by 1h", component="scheduler"), 15, "the step")
    before = len(site.runs("tick"))
    wait_until(lambda: len(site.runs("tick")) >= before + 2, 15, "two more runs after the step")
    assert not daemon.logs(log_match(level="error"))


# --------------------------------------------------------------------------- file descriptors


def test_600_idle_connections_under_a_512_fd_limit_do_not_stop_plugins_or_webhooks(
    site: Site, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Item 11: with 512 descriptors, 600 idle connections made every spawn fail with "Too many
    open files", and the job was retried as the plugin's failure. Now the listener keeps a
    reserve (it closes the longest-waiting connections instead), and a webhook still runs."""
    wrapper = tmp_path / "ductile-512"
    wrapper.write_text(f'#!/bin/sh\nexec prlimit --nofile=512:512 {SCRIPT} "$@"\n')
    wrapper.chmod(0o755)
    monkeypatch.setattr(site_module, "SCRIPT", wrapper)
    site.plugin("a", recorder(site, "a"), commands=["handle"])
    site.write_config(endpoints=[{"path": "/hook/a", "plugin": "a", "secret": SECRET}])
    daemon = site.start()
    listening = daemon.logs(log_match("listening", component="http"))[-1]
    assert listening["max_connections"] < 512 - 32, listening  # descriptors kept for the work

    idle = []
    try:
        for _ in range(600):
            idle.append(socket.create_connection(("127.0.0.1", daemon.port), timeout=10))
        body = b'{"n": 1}'
        response = daemon.post("/hook/a", body, {"X-Hub-Signature-256": signature(body)})
        assert response.status_code == 202, response.text
        job_id = response.json()["job_id"]
        wait_until(lambda: site.job(job_id)["job"]["status"] == "succeeded", 20, "the job to succeed")
        job = site.job(job_id)
        assert job["job"]["attempt"] == 1
        assert [r["error"] for r in job["runs"]] == [None]
        assert not daemon.logs(log_match("Too many open files"))
    finally:
        for sock in idle:
            sock.close()


def test_a_spawn_short_of_descriptors_says_so_and_is_not_the_plugins_fault(tmp_path: Path) -> None:
    """The real spawner, in a process whose descriptors are all taken: out_of_resources."""
    plugin = tmp_path / "run"
    plugin.write_text('#!/bin/sh\necho \'{"status": "ok"}\'\n')
    plugin.chmod(0o755)
    script = f"""
import asyncio, os, resource
from ductile.adapters.spawner import SubprocessSpawner
from ductile.ports.spawner import SpawnRequest
resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))

async def main():
    held = []
    try:
        while True:
            held.append(os.open("/dev/null", os.O_RDONLY))
    except OSError:
        pass
    request = SpawnRequest(
        executable={str(plugin)!r}, cwd={str(tmp_path)!r}, stdin=b"{{}}", env={{}}, timeout=5.0
    )
    outcome = await SubprocessSpawner().run(request)
    for fd in held:
        os.close(fd)
    print(outcome.out_of_resources, outcome.spawn_error)

asyncio.run(main())
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    flag, _, error = done.stdout.strip().partition(" ")
    assert flag == "True", done.stdout
    assert "Too many open files" in error
