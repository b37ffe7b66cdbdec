"""The real ``ductile`` console script (and ``python -m ductile``) as a subprocess.

Each test builds a config, a plugins directory with tiny ``#!/bin/sh``
plugins and a state directory in ``tmp_path``, and runs the command line
against the real config reader, plugin discovery and SQLite store. No test
starts a long-running daemon: where a daemon must seem to exist, the test
process (or a short-lived helper process) holds the instance lock; where a
job must really run, an in-process :class:`~ductile.app.bootstrap.Ductile`
dispatches exactly one job.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from ductile.adapters.config import load_config
from ductile.adapters.pidlock import InstanceLock
from ductile.adapters.sqlite import SqliteStore
from ductile.app.bootstrap import Ductile
from tests.support.plugins import plugin_folder
from tests.support.site import SCRIPT

OK_PLUGIN = """#!/bin/sh
cat >/dev/null
echo '{"status": "ok", "logs": [{"level": "info", "message": "echo ran"}]}'
"""
SICK_PLUGIN = """#!/bin/sh
cat >/dev/null
echo '{"status": "error", "error": "database unreachable"}'
"""
CONFIG = """\
service:
  state_dir: ./state
plugins_dir: ./plugins
plugins:
  echo:
    schedule: {every: 1h, timezone: Europe/Berlin}
routes:
  - {from: echo, event_type: done, to: echo}
"""


def plugin(plugins: Path, name: str, body: str = OK_PLUGIN, *, protocol: int = 1) -> None:
    plugin_folder(
        plugins,
        name,
        body,
        commands=("poll", "handle", "health"),
        version="2.1.0",
        protocol=protocol,
        entrypoint="run.sh",
    )


class Site:
    """A config, its plugins and its (not yet existing) state directory."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.plugins = root / "plugins"
        self.plugins.mkdir(mode=0o755)
        self.plugins.chmod(0o755)
        self.state = root / "state"
        self.db = self.state / "ductile.db"
        self.config = root / "ductile.yaml"
        self.config.write_text(CONFIG)
        plugin(self.plugins, "echo")

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("DUCTILE_")}
        env.update(DUCTILE_CONFIG=str(self.config), TZ="UTC", **extra)
        return env

    def run(self, *args: str, module: bool = False, **env: str) -> subprocess.CompletedProcess[str]:
        argv = [sys.executable, "-m", "ductile"] if module else [str(SCRIPT)]
        return subprocess.run(
            [*argv, *args],
            capture_output=True,
            text=True,
            env=self.env(**env),
            cwd=self.root,
            timeout=60,
            check=False,
        )

    def json(self, *args: str) -> tuple[int, Any]:
        done = self.run(*args, "--json")
        assert done.stdout, done.stderr
        return done.returncode, json.loads(done.stdout)


@pytest.fixture
def site(tmp_path: Path) -> Site:
    if not SCRIPT.exists():
        pytest.skip(f"the console script is not installed next to {sys.executable}")
    return Site(tmp_path)


def clean(done: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in done.stderr
    assert "Traceback" not in done.stdout


# =========================================================================== entry points


@pytest.mark.parametrize("module", [False, True], ids=["console-script", "python-m"])
def test_both_entry_points_print_help(site: Site, module: bool) -> None:
    done = site.run("--help", module=module)
    assert done.returncode == 0
    assert done.stdout.startswith("usage: ductile")
    assert "config" in done.stdout


def test_help_imports_nothing_heavy() -> None:
    probe = textwrap.dedent(
        """
        import json, sys
        from ductile.app.cli import main
        import contextlib, io
        with contextlib.redirect_stdout(io.StringIO()):
            code = main(["--help"])
        heavy = ("yaml", "sqlite3", "_sqlite3", "uvicorn", "starlette", "asyncio", "cattrs", "attrs",
                 "croniter", "ductile.adapters", "ductile.domain", "ductile.app.engine")
        print(json.dumps({"code": code,
                          "loaded": sorted(m for m in sys.modules if m.split(".")[0] in heavy
                                           or m.startswith(heavy))}))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    assert json.loads(done.stdout) == {"code": 0, "loaded": []}


def test_read_verbs_import_neither_the_daemon_nor_croniter_without_a_cron_schedule(tmp_path: Path) -> None:
    """Issue 18: `queue` and `job` read the config and the store, nothing of the daemon, of the
    intake path (``job`` resolves ids in ``app.operations``, which imports it only to retry), of
    the spawner or plugin discovery, or of the HTTP side; croniter (~80 ms with dateutil) only
    comes with a cron expression."""
    config = tmp_path / "ductile.yaml"
    config.write_text("service: {state_dir: ./state}\nplugins_dir: ./plugins\nplugins: {}\n")
    (tmp_path / "plugins").mkdir()
    (tmp_path / "state").mkdir(mode=0o700)

    async def make_db() -> None:
        await (await SqliteStore.open(tmp_path / "state" / "ductile.db")).close()

    asyncio.run(make_db())
    probe = textwrap.dedent(
        """
        import contextlib, io, json, sys
        from ductile.app.cli import main
        codes = []
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            codes.append(main(["queue", "--config", sys.argv[1]]))
            codes.append(main(["job", "0b1e5c8e", "--config", sys.argv[1]]))
        heavy = ("croniter", "dateutil", "ductile.app.bootstrap", "ductile.app.engine", "ductile.app.daemon",
                 "ductile.app.intake", "ductile.app.runtime", "ductile.adapters.spawner",
                 "ductile.adapters.plugin_dir", "starlette", "uvicorn", "jinja2", "prometheus_client")
        print(json.dumps({"codes": codes, "loaded": sorted(m for m in sys.modules if m.startswith(heavy)),
                          "store": "ductile.adapters.sqlite.store" in sys.modules}))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", probe, str(config)], capture_output=True, text=True, timeout=60, check=True
    )
    assert json.loads(done.stdout) == {"codes": [0, 1], "loaded": [], "store": True}


@pytest.mark.parametrize(
    ("argv", "collects"),
    [
        (["queue"], False),
        (["job", "0b1e5c8e"], False),
        (["plugins"], False),
        (["logs"], False),
        (["logs", "--follow"], True),
        (["start"], True),
        (["run", "hello", "--wait"], True),
        (["simulate", "--days", "1"], True),
    ],
)
def test_the_console_script_collects_garbage_only_in_verbs_that_can_run_long(
    argv: list[str], collects: bool
) -> None:
    """Issue 18: the console script starts with the cyclic collector off (its imports are all
    long-lived) and turns it on before any verb that can run long; the verb's handler sees it."""
    probe = textwrap.dedent(
        """
        import gc, importlib, sys
        cli = importlib.import_module("ductile.app.cli.main")

        def handler_of(verb):
            async def handler(ctx, args):
                print(gc.isenabled())
                return 0
            return handler

        cli.handler_of = handler_of
        sys.argv = ["ductile", *sys.argv[1:]]
        cli.console()
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", probe, *argv], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout == f"{collects}\n"


# =========================================================================== config check and plugins


def test_config_check_ok(site: Site) -> None:
    done = site.run("config", "check")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "no problems found" in done.stdout
    assert "every 1h Europe/Berlin" in done.stdout
    assert not site.state.exists()


def test_config_check_bad_exits_2_naming_the_key_path_and_line(site: Site) -> None:
    site.config.write_text(CONFIG.replace("routes:", "  extra:\n    timeouts: {poll: forever}\nroutes:"))
    done = site.run("config", "check")
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.startswith("ductile: ")
    assert "plugins.extra.timeouts.poll" in done.stderr
    assert "(line 8)" in done.stderr
    clean(done)


def test_config_check_with_a_refused_plugin_exits_1(site: Site) -> None:
    plugin(site.plugins, "old", protocol=9)
    code, doc = site.json("config", "check")
    assert code == 1
    assert doc["ok"] is False
    assert any("plugin 'old' refused" in p and "protocol 9" in p for p in doc["problems"])


def test_a_missing_config_exits_2(site: Site) -> None:
    done = site.run("plugins", "--config", str(site.root / "nope.yaml"))
    assert done.returncode == 2
    assert "nope.yaml does not exist" in done.stderr
    clean(done)


def test_plugins_lists_a_refused_plugin_with_its_reason(site: Site) -> None:
    plugin(site.plugins, "old", protocol=9)
    code, doc = site.json("plugins")
    assert code == 0
    assert [p["name"] for p in doc["loaded"]] == ["echo"]
    assert doc["loaded"][0]["version"] == "2.1.0"
    assert doc["loaded"][0]["schedule"]["summary"] == "every 1h Europe/Berlin"
    (refused,) = doc["refused"]
    assert refused["name"] == "old"
    assert "protocol 9 is not supported" in refused["reason"]
    done = site.run("plugins")
    assert "refused (1):" in done.stdout
    assert "protocol 9 is not supported" in done.stdout


# =========================================================================== read commands touch nothing


@pytest.mark.parametrize(
    "argv",
    [
        ["queue"],
        ["logs"],
        ["logs", "echo"],
        ["schedule"],
        ["status", "--no-health"],
        ["job", "x"],
        ["reset", "echo"],
    ],
)
def test_read_commands_create_no_state_dir(site: Site, argv: list[str]) -> None:
    done = site.run(*argv)
    assert done.returncode in (0, 1)
    if argv[0] != "reset":
        assert f"no database yet at {site.db} (ductile has not run here)" in done.stderr
    clean(done)
    assert not site.state.exists()


def test_logs_empty(site: Site) -> None:
    done = site.run("logs")
    assert (done.returncode, done.stdout) == (0, "no finished runs\n")
    site.run("run", "echo")  # now the database exists, still without runs
    done = site.run("logs")
    assert (done.returncode, done.stdout, done.stderr) == (0, "no finished runs\n", "")
    assert site.json("logs") == (0, {"runs": []})


# =========================================================================== run, queue, job


def test_run_enqueues_a_job_visible_in_queue_and_job(site: Site) -> None:
    done = site.run("run", "echo")
    assert done.returncode == 0, done.stderr
    job_id = done.stdout.strip()
    assert done.stderr == "ductile: queued; no daemon is running — it will run when `ductile start` runs\n"
    assert site.db.exists()
    code, queue = site.json("queue")
    assert code == 0
    assert [(j["id"], j["plugin"], j["command"], j["status"]) for j in queue["jobs"]] == [
        (job_id, "echo", "poll", "queued")
    ]
    code, doc = site.json("job", job_id)
    assert code == 0
    assert doc["job"]["submitted_by"] == "cli"
    assert doc["job"]["attempt"] == 1
    assert [(t["from"], t["to"], t["actor"]) for t in doc["transitions"]] == [(None, "queued", "cli")]
    assert doc["runs"] == []


def test_run_handle_payload_and_dedupe(site: Site) -> None:
    argv = ("run", "echo", "--command", "handle", "--payload", '{"n": 1}', "--dedupe-key", "d1")
    first = site.run(*argv)
    second = site.run(*argv)
    assert (first.returncode, second.returncode) == (0, 0)
    job_id = first.stdout.strip()
    assert second.stdout == f"duplicate of {job_id}\n"
    event = site.json("job", job_id)[1]["job"]["payload"]
    assert (event["type"], event["payload"], event["source"], event["dedupe_key"]) == (
        "manual",
        {"n": 1},
        "cli",
        "d1",
    )


def test_run_of_an_unknown_plugin_exits_1_and_creates_nothing(site: Site) -> None:
    done = site.run("run", "ghost")
    assert done.returncode == 1
    assert done.stdout == ""
    assert "cannot run: plugin 'ghost' is not loaded" in done.stderr
    clean(done)
    assert not site.state.exists()


def test_run_with_a_bad_payload_exits_2(site: Site) -> None:
    done = site.run("run", "echo", "--command", "handle", "--payload", "[1]")
    assert done.returncode == 2
    assert "JSON array, not an object" in done.stderr
    clean(done)


def test_run_wait_with_no_daemon_exits_1_at_once(site: Site) -> None:
    done = site.run("run", "echo", "--wait")
    assert done.returncode == 1
    assert "no ductile daemon is running" in done.stderr
    assert not site.state.exists()


def test_run_wait_times_out_when_nobody_runs_the_job(site: Site) -> None:
    # The test process holds the lock: the CLI believes a daemon runs, but nothing dispatches.
    with InstanceLock(str(site.state)):
        started = time.monotonic()
        done = site.run("run", "echo", "--wait", "--timeout", "1")
        elapsed = time.monotonic() - started
    assert done.returncode == 1
    assert "gave up waiting after 1.0s" in done.stderr
    assert "still queued" in done.stderr
    assert elapsed < 30
    assert site.json("queue")[1]["jobs"][0]["status"] == "queued"


def test_a_job_run_by_the_engine_shows_in_logs_job_and_schedule(site: Site) -> None:
    # A daily cron: the run the engine plans at start lies in the future (an ``every``
    # schedule's first run is due at once, and would show as overdue).
    site.config.write_text(CONFIG.replace("every: 1h", "cron: '0 0 * * *'"))
    job_id = site.run("run", "echo").stdout.strip()

    async def dispatch_once() -> bool:
        async with Ductile(site.config, environ=site.env()) as d:
            return await d.engine.dispatch_one()

    assert asyncio.run(dispatch_once()) is True
    code, logs = site.json("logs")
    assert code == 0
    (entry,) = logs["runs"]
    assert entry["job"]["id"] == job_id
    assert entry["job"]["status"] == "succeeded"
    assert entry["run"]["logs"] == [{"level": "info", "message": "echo ran"}]
    done = site.run("logs", "echo")
    assert f"echo    poll     {job_id}  1/4      ok" in done.stdout
    assert "    [info] echo ran" in done.stdout
    done = site.run("job", job_id)
    assert done.returncode == 0
    assert "status        succeeded" in done.stdout
    assert '"message": "echo ran"' in done.stdout  # stdout head, pretty-printed
    # The engine planned the schedule when it started: it is now "planned", not "not yet planned".
    code, schedule = site.json("schedule", "--to", "+2d")
    assert code == 0
    assert schedule["runs"][0]["plugin"] == "echo"
    assert schedule["runs"][0]["kind"] == "planned"


# =========================================================================== status, reset, schedule


def test_status_runs_health_checks_now(site: Site) -> None:
    plugin(site.plugins, "sick", SICK_PLUGIN)
    plugin(site.plugins, "old", protocol=9)
    code, doc = site.json("status")
    assert code == 1
    assert doc["daemon"] == {"running": False, "pid": None, "state_dir": str(site.state), "scheduler": None}
    by_name = {p["name"]: p for p in doc["plugins"]}
    assert by_name["echo"]["health"]["ok"] is True
    assert by_name["echo"]["health"]["logs"] == [{"level": "info", "message": "echo ran"}]
    assert by_name["sick"]["health"] == {
        "ok": False,
        "error": "database unreachable",
        "duration_seconds": by_name["sick"]["health"]["duration_seconds"],
        "logs": [],
    }
    assert by_name["old"]["state"] == "refused"
    assert doc["problems"] == [
        "the daemon is not running",
        "plugin 'old' is refused",
        "the health check of sick failed",
    ]
    assert not site.state.exists()


def test_status_is_healthy_with_a_daemon_and_healthy_plugins(site: Site) -> None:
    with InstanceLock(str(site.state)):
        done = site.run("status")
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"daemon: running (pid {os.getpid()})" in done.stdout
    assert done.stdout.endswith("all healthy\n")


def test_reset_without_open_breakers(site: Site) -> None:
    site.run("run", "echo")
    done = site.run("reset", "echo")
    assert (done.returncode, done.stdout) == (0, "no breaker of echo was open\n")
    done = site.run("reset", "ghost")
    assert done.returncode == 1
    assert "no plugin named 'ghost'" in done.stderr


def test_schedule_lists_the_next_runs(site: Site) -> None:
    code, doc = site.json("schedule", "--from", "now", "--to", "+3h")
    assert code == 0
    runs = doc["runs"]
    assert [r["kind"] for r in runs] == ["not_yet_planned", "projected", "projected"]
    assert {r["plugin"] for r in runs} == {"echo"}
    assert {r["timezone"] for r in runs} == {"Europe/Berlin"}
    done = site.run("schedule", "--to", "+3h")
    assert "not yet planned" in done.stdout
    assert "Europe/Berlin" in done.stdout
    done = site.run("schedule", "--from", "-1h", "--to", "-2h")
    assert done.returncode == 2
    assert "must be after" in done.stderr


# =========================================================================== reload and start


def test_reload_with_no_daemon_exits_1(site: Site) -> None:
    done = site.run("reload")
    assert done.returncode == 1
    assert done.stderr == f"ductile: no ductile daemon is running for state dir {site.state}\n"


def test_reload_with_a_bad_config_exits_2(site: Site) -> None:
    site.config.write_text(CONFIG + "bogus: 1\n")
    done = site.run("reload")
    assert done.returncode == 2
    assert "bogus" in done.stderr
    clean(done)


def test_reload_sends_sighup_to_the_lock_holder(site: Site) -> None:
    """A stand-in daemon: holds the lock, waits for SIGHUP (bounded), reports it."""
    stand_in = textwrap.dedent(
        f"""
        import signal, sys
        from ductile.adapters.pidlock import InstanceLock
        signal.pthread_sigmask(signal.SIG_BLOCK, {{signal.SIGHUP}})
        with InstanceLock({str(site.state)!r}):
            print("ready", flush=True)
            got = signal.sigtimedwait({{signal.SIGHUP}}, 30)
            print("SIGHUP" if got is not None else "timeout", flush=True)
        """
    )
    child = subprocess.Popen([sys.executable, "-c", stand_in], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        assert child.stdout.readline() == "ready\n"
        done = site.run("reload")
        assert done.returncode == 0, done.stderr
        assert done.stdout == f"reload requested (pid {child.pid})\n"
        out, _ = child.communicate(timeout=30)
        assert out == "SIGHUP\n"
    finally:
        if child.poll() is None:
            child.send_signal(signal.SIGKILL)
            child.wait(timeout=10)


def test_start_with_a_bad_config_exits_2(site: Site) -> None:
    site.config.write_text(CONFIG.replace("every: 1h", "every: sometimes"))
    done = site.run("start")
    assert done.returncode == 2
    assert "plugins.echo.schedule.every" in done.stderr
    assert done.stdout == ""
    clean(done)
    assert not site.state.exists()


def test_a_second_instance_is_refused_and_touches_nothing(site: Site) -> None:
    with InstanceLock(str(site.state)):
        before = sorted(p.name for p in site.state.iterdir())
        done = site.run("start")
        after = sorted(p.name for p in site.state.iterdir())
    assert done.returncode == 1
    assert (
        done.stderr
        == f"ductile: ductile is already running (pid {os.getpid()}) with state dir {site.state}\n"
    )
    assert before == after == ["ductile.lock"]
    clean(done)


def test_logs_shows_a_late_retry_of_an_old_job_first(site: Site) -> None:
    """``logs`` reads runs by when they finished, not by when their jobs were made:
    an old job's late retry is the newest run, even behind many newer jobs."""
    from ductile.app.bootstrap import database_path
    from ductile.domain.classify import classify
    from ductile.domain.job import Actor, Job
    from ductile.domain.retry import RetryPolicy
    from ductile.domain.settle import SettleContext
    from ductile.fakes.spawner import error, ok

    config = load_config(site.config, env={})

    async def fill() -> str:
        database_path(config).parent.mkdir(parents=True, exist_ok=True)
        store = await SqliteStore.open(database_path(config))
        try:
            t0 = datetime(2026, 1, 1, tzinfo=UTC)
            old = Job(id="old-job", plugin="echo", command="poll", created_at=t0)
            await store.enqueue(old, actor=Actor.CLI, now=t0, dedupe_ttl=timedelta(hours=1))
            first = await store.claim_next(t0)
            assert first is not None
            slow = SettleContext(now=t0, retry=RetryPolicy(backoff_base=timedelta(days=1)))
            await store.settle(
                "old-job",
                classify(error("flaky")),
                ctx=slow,
                dedupe_ttl=timedelta(hours=1),
                token=first.claim_token,
            )
            for n in range(250):  # newer jobs, each run once
                t = t0 + timedelta(minutes=n + 1)
                await store.enqueue(
                    Job(id=f"new-{n}", plugin="echo", command="poll", created_at=t),
                    actor=Actor.CLI,
                    now=t,
                    dedupe_ttl=timedelta(hours=1),
                )
                claimed = await store.claim_next(t)
                assert claimed is not None
                await store.settle(
                    f"new-{n}",
                    classify(ok()),
                    ctx=SettleContext(now=t),
                    dedupe_ttl=timedelta(hours=1),
                    token=claimed.claim_token,
                )
            late = t0 + timedelta(days=3)
            retry = await store.claim_next(late)  # the old job's retry, a day after its failure
            assert retry is not None
            assert retry.id == "old-job"
            await store.settle(
                "old-job",
                classify(ok()),
                ctx=SettleContext(now=late),
                dedupe_ttl=timedelta(hours=1),
                token=retry.claim_token,
            )
            return "old-job"
        finally:
            await store.close()

    job_id = asyncio.run(fill())
    done = site.run("logs", "--json", "--limit", "1")
    assert done.returncode == 0, done.stderr
    [entry] = json.loads(done.stdout)["runs"]
    assert (entry["job"]["id"], entry["run"]["attempt"]) == (job_id, 2)
