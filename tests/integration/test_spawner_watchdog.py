"""The watchdog (ADR 0035): a plugin of a shared store's claim never outlives the claim's deadline.

A request with ``watchdog`` seconds runs under coreutils ``timeout``: the
plugin's group gets SIGTERM at ``watchdog - grace - margin`` and SIGKILL a
grace later, even when the daemon that spawned it is SIGKILLed or frozen.
Everything else is the spawner's ordinary behaviour: exit codes, signals, our
own deadline, exec failures named as without the watchdog.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tests.integration.test_subprocess_spawner import (
    OK,
    Make,
    assert_nothing_survives,
    live_members,
    plugin,  # noqa: F401 - the fixture
    run,
    stray_groups,  # noqa: F401 - the fixture
    wait_until,
)

pytestmark = pytest.mark.skipif(not os.path.exists("/usr/bin/timeout"), reason="coreutils timeout is missing")


def run_watched(executable: str, *, watchdog: float, timeout: float = 5.0, grace: float = 0.3) -> object:
    from ductile.adapters.spawner import SubprocessSpawner

    class Watched(SubprocessSpawner):
        async def run(self, request, *, on_start=None):  # type: ignore[no-untyped-def]
            import attrs

            return await super().run(attrs.evolve(request, watchdog=watchdog), on_start=on_start)

    return run(executable, timeout=timeout, grace=grace, spawner=Watched())


def test_an_answer_exit_codes_and_the_group_are_as_without_the_watchdog(plugin: Make) -> None:  # noqa: F811
    ran = run_watched(plugin(f"cat >/dev/null; printf '{OK.decode().strip()}'; exit 3"), watchdog=30)
    assert (ran.outcome.exit_code, ran.outcome.stdout.strip(), ran.outcome.spawn_error) == (
        3,
        OK.strip(),
        None,
    )
    assert_nothing_survives(ran.handle)


def test_our_own_deadline_still_comes_first(plugin: Make) -> None:  # noqa: F811
    ran = run_watched(plugin("sleep 30"), watchdog=30, timeout=0.3)
    assert ran.outcome.timed_out
    assert ran.outcome.duration < 3.0
    assert_nothing_survives(ran.handle)


@pytest.mark.parametrize(
    ("body", "mode", "shebang", "words"),
    [
        ("exit 0", 0o644, "#!/bin/sh", "not executable"),
        ("exit 0", 0o755, "#!/no/such/interpreter", "its interpreter /no/such/interpreter"),
    ],
)
def test_exec_failures_are_named_as_without_the_watchdog(
    plugin: Make,  # noqa: F811
    body: str,
    mode: int,
    shebang: str,
    words: str,
) -> None:
    path = plugin(body, mode=mode, shebang=shebang)
    watched = run_watched(path, watchdog=30).outcome
    direct = run(path).outcome
    assert watched.spawn_error is not None
    assert words in watched.spawn_error
    assert watched.spawn_error == direct.spawn_error
    assert watched.start_failure == direct.start_failure is not None


def test_no_spawn_once_the_claims_deadline_is_too_close(plugin: Make) -> None:  # noqa: F811
    ran = run_watched(plugin("exit 0"), watchdog=0.5, grace=0.3)
    assert ran.handle is None
    assert "claim's deadline" in (ran.outcome.spawn_error or "")


DAEMON = """
import asyncio, sys
from ductile.adapters.spawner import SubprocessSpawner
from ductile.ports.spawner import SpawnRequest

async def main():
    request = SpawnRequest(executable=sys.argv[1], cwd="/", stdin=b"{}", env={"PATH": "/usr/bin:/bin"},
                           timeout=60.0, grace=0.5, watchdog=float(sys.argv[2]))
    async def started(handle):
        print(handle.pgid, flush=True)
    await SubprocessSpawner().run(request, on_start=started)

asyncio.run(main())
"""


@pytest.mark.parametrize("fault", ["SIGKILL", "SIGSTOP"])
def test_the_plugin_dies_by_its_deadline_when_the_daemon_is_killed_or_frozen(
    plugin: Make,  # noqa: F811
    stray_groups: list[int],  # noqa: F811
    tmp_path: Path,
    fault: str,
) -> None:
    sleeper = plugin("trap '' TERM; sleep 60 & sleep 60; wait")  # ignores SIGTERM: SIGKILL must come
    daemon = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(DAEMON), sleeper, "2.0"],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "src")},
    )
    try:
        assert daemon.stdout is not None
        pgid = int(daemon.stdout.readline())
        stray_groups.append(pgid)
        started = time.monotonic()
        os.kill(daemon.pid, getattr(signal, fault))
        assert live_members(pgid), "the plugin runs on without its daemon"
        # TERM at 2.0 - 0.5 - 0.5 = 1.0 s, KILL 0.5 s later: gone well before the 2 s deadline
        wait_until(lambda: not live_members(pgid), timeout=10.0, what="the watchdog to end the group")
        assert time.monotonic() - started < 2.5
    finally:
        if fault == "SIGSTOP":
            os.kill(daemon.pid, signal.SIGCONT)
        daemon.kill()
        daemon.wait(10)


def test_a_builtin_run_by_the_daemons_interpreter_runs_under_the_watchdog_too(tmp_path: Path) -> None:
    """A built-in is a script the daemon's interpreter runs (not executable itself): under a
    shared store's watchdog the interpreter and the script are what ``timeout`` runs."""
    from ductile.adapters.spawner import SubprocessSpawner

    script = tmp_path / "run.py"
    parent = "open(f'/proc/{os.getppid()}/comm').read().strip()"
    script.write_text(f"import os, sys\nsys.stdin.read()\nprint({parent})\n")
    script.chmod(0o644)

    class Watched(SubprocessSpawner):
        async def run(self, request, *, on_start=None):  # type: ignore[no-untyped-def]
            import attrs

            return await super().run(
                attrs.evolve(request, watchdog=30.0, interpreter=sys.executable), on_start=on_start
            )

    ran = run(str(script), spawner=Watched())
    assert (ran.outcome.exit_code, ran.outcome.spawn_error) == (0, None), ran.outcome
    assert ran.outcome.stdout.strip() == b"timeout"  # the watchdog is the plugin's parent
    assert_nothing_survives(ran.handle)
