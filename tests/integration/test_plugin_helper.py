"""Plugins written with ductile.plugin, run as real processes (D4, D5, D7-D10).

Every plugin here is a file with a ``#!<this interpreter>`` shebang, started
by the real SubprocessSpawner with the environment the engine gives plugins;
its outcome is judged by the core's own ``settle`` — exactly the path a job
takes in the daemon, minus the database.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from datetime import UTC, datetime
from pathlib import Path

import pytest

from ductile import plugin
from ductile.domain.job import JobStatus
from ductile.domain.protocol import parse_response
from ductile.domain.routing import Envelope, Route
from tests.support.plugins import SRC, run_plugin

PLUGIN_FILE = Path(plugin.__file__).resolve()


def write_plugin(directory: Path, code: str, *, name: str = "run.py", shebang: str | None = None) -> Path:
    """An executable Python plugin file, started by this very interpreter."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(f"#!{shebang or sys.executable}\n" + textwrap.dedent(code), encoding="utf-8")
    path.chmod(0o755)
    return path


# --------------------------------------------------------------------------- ok, error, crash


def test_ok_with_events_state_and_logs_is_settled_as_a_success(tmp_path: Path) -> None:
    exe = write_plugin(
        tmp_path / "demo",
        """
        from ductile import plugin

        def poll(request):
            count = request.state.get("count", 0) + request.config_int("step")
            plugin.log.info(f"count is now {count}")
            return plugin.ok(
                events=[plugin.event("counter.ticked", {"count": count}, dedupe_key=f"count-{count}")],
                state_updates={"count": count},
            )

        plugin.run({"poll": poll})
        """,
    )
    routes = (Route(source="demo", event_type="counter.ticked", target="sink"),)
    ran = run_plugin(exe, config={"step": "2"}, state={"count": 40, "other": "kept"}, routes=routes)
    assert ran.outcome.exit_code == 0, ran.stderr
    assert ran.job.status is JobStatus.SUCCEEDED
    assert ran.settlement.state == {"count": 42, "other": "kept"}
    assert [(line.level, line.message) for line in ran.settlement.run.logs] == [("info", "count is now 42")]
    (envelope,) = ran.settlement.events
    assert (envelope.type, envelope.payload, envelope.source) == ("counter.ticked", {"count": 42}, "demo")
    (child,) = ran.settlement.children
    assert (child.plugin, child.command, child.dedupe_key) == ("sink", "handle", "count-42")
    assert json.loads(ran.outcome.stdout)["protocol"] == 1


ERRORS = """
from ductile import plugin

def poll(request):
    mode = request.config_str("mode")
    if mode == "returned-retry":
        return plugin.error("API answered 503")
    if mode == "returned-final":
        return plugin.error("account closed", retry=False)
    if mode == "raised-retry":
        raise plugin.Fail("rate limited")
    if mode == "raised-final":
        raise plugin.Fail("token revoked: re-authorize", retry=False)
    return plugin.ok()

plugin.run({"poll": poll})
"""


@pytest.mark.parametrize(
    ("mode", "exit_code", "status", "message"),
    [
        ("returned-retry", 0, JobStatus.QUEUED, "API answered 503"),
        ("raised-retry", 0, JobStatus.QUEUED, "rate limited"),
        ("returned-final", 78, JobStatus.DEAD, "account closed (exit code 78, EX_CONFIG: not retried)"),
        (
            "raised-final",
            78,
            JobStatus.DEAD,
            "token revoked: re-authorize (exit code 78, EX_CONFIG: not retried)",
        ),
    ],
)
def test_errors_are_retried_or_not_as_the_plugin_says(
    tmp_path: Path, mode: str, exit_code: int, status: JobStatus, message: str
) -> None:
    ran = run_plugin(write_plugin(tmp_path / "demo", ERRORS), config={"mode": mode})
    assert ran.outcome.exit_code == exit_code, ran.stderr
    assert ran.job.status is status
    assert ran.job.last_error == message
    if status is JobStatus.QUEUED:
        assert ran.job.attempt == 2
        assert ran.job.next_retry_at is not None


def test_a_missing_config_key_is_not_retried(tmp_path: Path) -> None:
    ran = run_plugin(write_plugin(tmp_path / "demo", ERRORS), plugin_name="withings")
    assert ran.outcome.exit_code == 78
    assert ran.job.status is JobStatus.DEAD
    assert ran.job.last_error == (
        "config key 'mode' is missing: set it under plugins.withings.config in the ductile config "
        "(exit code 78, EX_CONFIG: not retried)"
    )


def test_an_uncaught_exception_answers_exits_1_and_leaves_the_traceback_on_stderr(tmp_path: Path) -> None:
    exe = write_plugin(
        tmp_path / "demo",
        """
        from ductile import plugin

        def poll(request):
            plugin.log.info("about to divide")
            return plugin.ok(state_updates={"ratio": 1 / request.config.get("zero", 0)})

        plugin.run({"poll": poll})
        """,
    )
    ran = run_plugin(exe)
    assert ran.outcome.exit_code == 1
    response = parse_response(ran.outcome.stdout)  # still one valid answer
    assert response.retry is True
    assert ran.job.status is JobStatus.QUEUED  # retried
    assert ran.job.last_error is not None
    assert ran.job.last_error.startswith("ZeroDivisionError: division by zero (at run.py:7) (exit code 1)")
    assert [line.message for line in ran.settlement.run.logs] == ["about to divide"]
    assert "Traceback (most recent call last)" in ran.stderr
    assert 'run.py", line 7, in poll' in ran.stderr
    assert ran.settlement.state is None


def test_a_failure_inside_a_library_is_located_at_the_plugins_own_line(tmp_path: Path) -> None:
    directory = tmp_path / "demo"
    write_plugin(
        directory / "lib", "import json\n\ndef parse(text):\n    return json.loads(text)\n", name="util.py"
    )
    exe = write_plugin(
        directory,
        """
        from ductile import plugin
        from lib.util import parse

        plugin.run(lambda request: plugin.ok(state_updates=parse("{")))
        """,
    )
    ran = run_plugin(exe)
    assert ran.outcome.exit_code == 1
    assert (ran.job.last_error or "").startswith(
        "JSONDecodeError: Expecting property name enclosed in double quotes: line 1 column 2 (char 1) "
        "(at lib/util.py:5)"
    )
    assert "json/decoder.py" in ran.stderr  # the whole story is in the traceback


def test_print_and_child_processes_cannot_corrupt_stdout(tmp_path: Path) -> None:
    exe = write_plugin(
        tmp_path / "demo",
        """
        import os
        import subprocess
        import sys
        from ductile import plugin

        def poll(request):
            print("debugging output from print()")
            sys.stdout.write('{"status": "ok"} a fake answer\\n')
            os.write(1, b"raw bytes on fd 1\\n")
            subprocess.run(["sh", "-c", "echo from a child process"], check=True)
            return plugin.ok(state_updates={"clean": True})

        plugin.run({"poll": poll})
        """,
    )
    ran = run_plugin(exe)
    assert ran.outcome.exit_code == 0, ran.stderr
    assert ran.outcome.stdout == b'{"protocol":1,"status":"ok","state_updates":{"clean":true}}\n'
    assert ran.job.status is JobStatus.SUCCEEDED
    for text in (
        "debugging output from print()",
        "a fake answer",
        "raw bytes on fd 1",
        "from a child process",
    ):
        assert text in ran.stderr


def test_output_after_the_answer_goes_to_stderr_too(tmp_path: Path) -> None:
    exe = write_plugin(
        tmp_path / "demo",
        """
        import atexit
        from ductile import plugin

        atexit.register(print, "printed at exit")
        plugin.run(lambda request: None)
        """,
    )
    ran = run_plugin(exe)
    assert ran.outcome.stdout == b'{"protocol":1,"status":"ok"}\n'
    assert "printed at exit" in ran.stderr
    assert ran.job.status is JobStatus.SUCCEEDED


def test_read_and_reply_without_run(tmp_path: Path) -> None:
    exe = write_plugin(
        tmp_path / "demo",
        """
        from ductile import plugin

        request = plugin.read()
        assert plugin.read() is request  # stdin is read once
        plugin.log.warn("no such account")
        if request.config_bool("closed"):
            plugin.reply(plugin.error(f"account of job {request.job_id} is closed", retry=False))
        plugin.reply(plugin.ok(state_updates={"seen": request.job_id}))
        """,
    )
    closed = run_plugin(exe, config={"closed": True})
    assert closed.outcome.exit_code == 78
    assert closed.job.status is JobStatus.DEAD
    assert (
        closed.job.last_error == "account of job job-poll-1 is closed (exit code 78, EX_CONFIG: not retried)"
    )
    assert [(line.level, line.message) for line in closed.settlement.run.logs] == [
        ("warn", "no such account")
    ]
    fine = run_plugin(exe, config={"closed": "no"})
    assert fine.job.status is JobStatus.SUCCEEDED, fine.stderr
    assert fine.settlement.state == {"seen": "job-poll-1"}


# --------------------------------------------------------------------------- commands


HANDLER_OBJECT = """
from ductile import plugin

class Echo:
    def handle(self, request):
        event = request.require_event()
        return plugin.ok(state_updates={
            "type": event.type,
            "payload": event.payload,
            "source": event.source,
            "event_id": event.event_id,
            "dedupe_key": event.dedupe_key,
            "timestamp": event.timestamp.isoformat(),
            "attempt": request.attempt,
            "job_id": request.job_id,
        })

    def health(self, request):
        request.config_str("token")
        plugin.log.info("config looks fine")

plugin.run(Echo())
"""


def test_handle_receives_the_event_envelope(tmp_path: Path) -> None:
    envelope = Envelope(
        type="counter.ticked",
        payload={"count": 3, "nested": {"ü": [1, None]}},
        source="counter",
        timestamp=datetime(2026, 3, 1, 7, 30, 0, 125000, tzinfo=UTC),
        event_id="0c7d5a0e-aaaa-bbbb-cccc-000000000001",
        dedupe_key="count-3",
    )
    exe = write_plugin(tmp_path / "echo", HANDLER_OBJECT)
    ran = run_plugin(exe, "handle", event=envelope.to_json(), attempt=2, plugin_name="echo")
    assert ran.job.status is JobStatus.SUCCEEDED, ran.stderr
    assert ran.settlement.state == {
        "type": "counter.ticked",
        "payload": {"count": 3, "nested": {"ü": [1, None]}},
        "source": "counter",
        "event_id": "0c7d5a0e-aaaa-bbbb-cccc-000000000001",
        "dedupe_key": "count-3",
        "timestamp": "2026-03-01T07:30:00.125000+00:00",
        "attempt": 2,
        "job_id": "job-handle-2",
    }


def test_health_and_a_command_without_a_handler(tmp_path: Path) -> None:
    exe = write_plugin(tmp_path / "echo", HANDLER_OBJECT)
    healthy = run_plugin(exe, "health", config={"token": "t"})
    assert healthy.job.status is JobStatus.SUCCEEDED, healthy.stderr
    assert [line.message for line in healthy.settlement.run.logs] == ["config looks fine"]
    unhealthy = run_plugin(exe, "health")
    assert unhealthy.outcome.exit_code == 78
    assert "config key 'token' is missing" in (unhealthy.job.last_error or "")
    absent = run_plugin(exe, "poll")
    assert absent.outcome.exit_code == 78
    assert absent.job.status is JobStatus.DEAD
    assert absent.job.last_error == (
        "this plugin has no 'poll' handler (it handles: handle, health) "
        "(exit code 78, EX_CONFIG: not retried)"
    )


# --------------------------------------------------------------------------- deadlines


def test_seconds_left_measures_the_real_deadline(tmp_path: Path) -> None:
    exe = write_plugin(
        tmp_path / "demo",
        """
        from ductile import plugin

        plugin.run(lambda request: plugin.ok(state_updates={"left": request.seconds_left()}))
        """,
    )
    ran = run_plugin(exe, timeout=30.0)
    assert ran.settlement.state is not None
    left = ran.settlement.state["left"]
    assert 20.0 < left <= 30.0  # start-up costs well under 10 s even on a loaded machine


def test_sigterm_at_the_deadline_still_gets_an_answer(tmp_path: Path) -> None:
    exe = write_plugin(
        tmp_path / "demo",
        """
        import time
        from ductile import plugin

        def poll(request):
            plugin.log.info("starting a long fetch")
            try:
                time.sleep(60)
            except Exception:
                plugin.log.error("an `except Exception` must not swallow the stop")
            return plugin.ok(state_updates={"never": True})

        plugin.run({"poll": poll})
        """,
    )
    ran = run_plugin(exe, timeout=1.0, grace=10.0)
    assert ran.outcome.timed_out
    # It answered and exited by itself well inside the grace period, not by SIGKILL.
    assert ran.outcome.exit_code == 143
    assert ran.outcome.duration < 8.0
    response = parse_response(ran.outcome.stdout)
    assert response.status == "error"
    assert "stopped by SIGTERM before the plugin answered" in (response.error or "")
    assert [line.message for line in response.logs] == ["starting a long fetch"]
    # The timeout decides, whatever was printed (D4).
    assert ran.job.status is JobStatus.QUEUED
    assert (ran.job.last_error or "").startswith("timed out after 1s")


# --------------------------------------------------------------------------- a self-contained file


def test_a_copy_of_the_file_next_to_the_plugin_works_without_ductile_installed(tmp_path: Path) -> None:
    """The documented fallback: <plugin>/ductile/plugin.py, under an interpreter with no site-packages."""
    directory = tmp_path / "copied"
    (directory / "ductile").mkdir(parents=True)
    shutil.copy(PLUGIN_FILE, directory / "ductile" / "plugin.py")
    exe = write_plugin(
        directory,
        """
        import sys
        from ductile import plugin

        def poll(request):
            watched = ("attrs", "cattrs", "yaml", "ductile")
            loaded = sorted(m for m in sys.modules if m.split(".")[0] in watched)
            return plugin.ok(state_updates={"where": plugin.__file__, "loaded": loaded})

        plugin.run({"poll": poll})
        """,
        shebang=f"{sys.executable} -S",  # -S: no site-packages, so the installed ductile is out of reach
    )
    ran = run_plugin(exe, pythonpath=False)
    assert ran.job.status is JobStatus.SUCCEEDED, ran.stderr
    assert ran.settlement.state == {
        "where": str(directory / "ductile" / "plugin.py"),
        "loaded": ["ductile", "ductile.plugin"],
    }


def test_an_installed_ductile_wins_over_a_copy(tmp_path: Path) -> None:
    """What the guide promises: with ductile installed for the interpreter, the copy is not used."""
    directory = tmp_path / "copied"
    (directory / "ductile").mkdir(parents=True)
    shutil.copy(PLUGIN_FILE, directory / "ductile" / "plugin.py")
    exe = write_plugin(
        directory,
        """
        from ductile import plugin

        plugin.run(lambda request: plugin.ok(state_updates={"where": plugin.__file__}))
        """,
    )
    ran = run_plugin(exe)
    assert ran.settlement.state == {"where": str(PLUGIN_FILE)}


def older_interpreters() -> list[str]:
    """Python 3.8-3.10 interpreters on this machine (on PATH, or under pyenv), that really run."""
    found = []
    for minor in (8, 9, 10):
        candidates = [shutil.which(f"python3.{minor}")]
        candidates += sorted(
            str(p) for p in (Path.home() / ".pyenv" / "versions").glob(f"3.{minor}.*/bin/python3")
        )
        for candidate in candidates:
            if candidate is None:
                continue
            probe = subprocess.run(
                [candidate, "-c", "import sys; print(sys.version_info[1])"],
                capture_output=True,
                text=True,
                check=False,
            )
            if probe.returncode == 0 and probe.stdout.strip() == str(minor):
                found.append(candidate)
                break
    return found


def test_the_copied_file_runs_on_python_3_8_and_later(tmp_path: Path) -> None:
    interpreters = older_interpreters()
    if not interpreters:
        pytest.skip("no Python 3.8-3.10 interpreter on this machine")
    for number, interpreter in enumerate(interpreters):
        directory = tmp_path / f"p{number}"
        (directory / "ductile").mkdir(parents=True)
        shutil.copy(PLUGIN_FILE, directory / "ductile" / "plugin.py")
        exe = write_plugin(
            directory,
            """
            import sys
            from ductile import plugin

            def poll(request):
                plugin.log.info("on %d.%d" % sys.version_info[:2])
                if request.config_bool("fail", False):
                    raise plugin.Fail("asked to", retry=False)
                return plugin.ok(
                    events=[plugin.event("e", {"left": request.seconds_left() > 0})],
                    state_updates={"expired": plugin.tokens_expired(request.state)},
                )

            plugin.run({"poll": poll})
            """,
            shebang=f"{interpreter} -S",
        )
        ran = run_plugin(exe, pythonpath=False)
        assert ran.job.status is JobStatus.SUCCEEDED, (interpreter, ran.stderr)
        assert ran.settlement.state == {"expired": True}
        assert ran.settlement.events[0].payload == {"left": True}
        version = subprocess.run(
            [interpreter, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        assert [line.message for line in ran.settlement.run.logs] == [f"on {version}"]
        failed = run_plugin(exe, config={"fail": "yes"}, pythonpath=False)
        assert failed.outcome.exit_code == 78, failed.stderr


def test_the_single_file_imports_in_an_isolated_interpreter(tmp_path: Path) -> None:
    shutil.copy(PLUGIN_FILE, tmp_path / "plugin.py")
    script = (
        "import sys; sys.path.insert(0, sys.argv[1]); before = set(sys.modules); import plugin; "
        "new = sorted(m.split('.')[0] for m in set(sys.modules) - before); "
        "print(' '.join(m for m in new if m not in sys.stdlib_module_names))"
    )
    done = subprocess.run(
        [sys.executable, "-I", "-S", "-c", script, str(tmp_path)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["plugin"]


def test_importing_the_installed_module_loads_nothing_outside_the_standard_library() -> None:
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "import ductile.plugin"],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "PYTHONPATH": str(SRC)},
    )
    assert done.returncode == 0, done.stderr
    loaded = [
        line.rsplit("|", 1)[1].strip() for line in done.stderr.splitlines() if line.startswith("import time:")
    ][1:]  # the first line is the header
    assert "ductile.plugin" in loaded
    foreign = sorted(
        m
        for m in loaded
        if m.split(".")[0] not in sys.stdlib_module_names and m not in ("ductile", "ductile.plugin")
    )
    # site may pull in the venv's own start-up hooks (e.g. setuptools' _distutils_hack): not ours.
    startup = {"_distutils_hack", "sitecustomize", "usercustomize"}
    assert [m for m in foreign if m.split(".")[0] not in startup] == []
    assert not [m for m in loaded if m.startswith(("ductile.domain", "ductile.app", "ductile.adapters"))]
