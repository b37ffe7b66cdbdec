"""SubprocessSpawner against real, hostile plugins (D4, D5, D6; PITFALLS "Processes").

Every hostile test asserts the outcome AND that nothing of the plugin's
process group is left alive afterwards (checked in /proc by process group
id, waiting on that condition with a bounded deadline), and that the plugin
itself was reaped by us (no zombie child).

Not tested, out of reach by design: a descendant that calls ``setsid()``
leaves the group and survives ``killpg``; only a cgroup contains it (systemd
``KillMode=control-group``, see the adapter's docstring). The drain deadline
keeps such an escapee from stalling the job if it holds a pipe.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ductile.adapters.spawner import (
    ProcStat,
    SubprocessSpawner,
    parse_proc_stat,
    read_proc_stat,
)
from ductile.domain.classify import classify
from ductile.domain.job import JobEvent
from ductile.domain.outcome import STDERR_CAP, STDERR_KEEP, STDOUT_CAP, SpawnOutcome
from ductile.ports.spawner import ProcessHandle, SpawnRequest

ENV = {"PATH": "/usr/bin:/bin", "LC_ALL": "C"}
#: Small deadlines keep the suite fast; the bounds below leave room for a busy 2-core machine.
TIMEOUT = 0.3
GRACE = 0.3
SLACK = 3.0
OK = b'{"status": "ok"}\n'

Make = Callable[..., str]


# --------------------------------------------------------------------------
# Helpers, independent of the code under test


def live_members(pgid: int) -> list[int]:
    """Pids of non-zombie processes in group ``pgid`` (own /proc scan, not the adapter's)."""
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                data = f.read()
        except OSError:
            continue
        after_comm = data[data.rindex(b")") + 2 :].split()
        state, pgrp = after_comm[0], int(after_comm[2])
        if pgrp == pgid and state not in (b"Z", b"X"):
            found.append(int(name))
    return found


def wait_until(condition: Callable[[], bool], *, timeout: float = 5.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.01)


def assert_nothing_survives(handle: ProcessHandle | None) -> None:
    assert handle is not None, "on_start was never called"
    wait_until(
        lambda: not live_members(handle.pgid),
        what=f"process group {handle.pgid} to be gone (left: {live_members(handle.pgid)})",
    )
    # Reaped by the spawner: not our zombie child any more.
    with pytest.raises(ChildProcessError):
        os.waitpid(handle.pid, os.WNOHANG)


class Ran:
    def __init__(self) -> None:
        self.handles: list[ProcessHandle] = []
        self.outcome = SpawnOutcome()

    @property
    def handle(self) -> ProcessHandle | None:
        return self.handles[0] if self.handles else None


def run(
    executable: str,
    *,
    stdin: bytes = b"{}",
    timeout: float = 5.0,
    grace: float = GRACE,
    env: dict[str, str] | None = None,
    cwd: str | None = None,
    spawner: SubprocessSpawner | None = None,
    **caps: int,
) -> Ran:
    ran = Ran()

    async def on_start(handle: ProcessHandle) -> None:
        ran.handles.append(handle)

    request = SpawnRequest(
        executable=executable,
        cwd=cwd if cwd is not None else os.path.dirname(executable) or "/",
        stdin=stdin,
        env=ENV if env is None else env,
        timeout=timeout,
        grace=grace,
        **caps,
    )

    async def main() -> None:
        # Not returned: asyncio.run (3.11) may repr its main task's result, and the repr
        # of a 10 MiB stdout is a 40 MB string.
        ran.outcome = await (spawner or SubprocessSpawner()).run(request, on_start=on_start)

    asyncio.run(main())
    assert len(ran.handles) <= 1, "on_start awaited more than once"
    return ran


@pytest.fixture
def plugin(tmp_path: Path) -> Make:
    """Write an executable plugin script into tmp_path; returns its absolute path."""
    count = iter(range(1000))

    def make(body: str, *, shebang: str = "#!/bin/sh", mode: int = 0o755, name: str = "") -> str:
        path = tmp_path / (name or f"plugin{next(count)}")
        path.write_text(f"{shebang}\n{body.strip()}\n" if shebang else body)
        path.chmod(mode)
        return str(path)

    return make


@pytest.fixture(autouse=True)
def stray_groups() -> Iterator[list[int]]:
    """Safety net: a failing test must not leave its sleepers behind."""
    groups: list[int] = []
    yield groups
    for pgid in groups:
        if live_members(pgid):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, signal.SIGKILL)


# --------------------------------------------------------------------------
# Ordinary runs


def test_stdin_reaches_the_plugin_byte_for_byte_while_stdout_is_read(plugin: Make) -> None:
    # 4 MB through `cat`: writing stdin and reading stdout must proceed together.
    data = random.Random(7).randbytes(4_000_000)
    ran = run(plugin("exec cat"), stdin=data)
    assert ran.outcome.exit_code == 0
    assert ran.outcome.stdout == data
    assert not ran.outcome.timed_out
    assert_nothing_survives(ran.handle)


def test_the_environment_is_the_requests_only_and_cwd_is_set(
    plugin: Make, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DUCTILE_TEST_SECRET", "must-not-leak")
    workdir = tmp_path / "work dir"
    workdir.mkdir()
    exe = plugin('printf "%s|%s|%s\\n" "${FOO-unset}" "${DUCTILE_TEST_SECRET-unset}" "${HOME-unset}"; pwd')
    ran = run(exe, env={**ENV, "FOO": "bar baz"}, cwd=str(workdir))
    assert ran.outcome.stdout.decode().splitlines() == ["bar baz|unset|unset", str(workdir)]
    assert ran.outcome.exit_code == 0


def test_on_start_gets_the_handle_of_the_live_leader_of_its_own_session(plugin: Make) -> None:
    seen: list[tuple[ProcessHandle, ProcStat | None, int, int]] = []

    async def on_start(handle: ProcessHandle) -> None:
        seen.append((handle, read_proc_stat(handle.pid), os.getpgid(handle.pid), os.getsid(handle.pid)))

    request = SpawnRequest(executable=plugin("cat >/dev/null"), cwd="/", stdin=b"{}", env=ENV, timeout=5)
    outcome = asyncio.run(SubprocessSpawner().run(request, on_start=on_start))
    assert outcome.exit_code == 0
    [(handle, stat, pgid, sid)] = seen
    assert stat is not None
    assert handle.pgid == handle.pid == pgid == sid != os.getpgrp()
    assert handle.start_time == stat.start_time > 0
    assert_nothing_survives(handle)


@pytest.mark.parametrize(
    ("script", "stdout"),
    [
        pytest.param("exit 0", b"", id="prints-nothing"),
        pytest.param("""printf '{"status": "ok", "sta'""", b'{"status": "ok", "sta', id="truncated-json"),
        pytest.param(
            """printf '{"status": "ok"}\\n{"status": "ok"}\\n'""",
            b'{"status": "ok"}\n{"status": "ok"}\n',
            id="two-objects",
        ),
        pytest.param("printf '\\377\\376\\000\\200{}'", b"\xff\xfe\x00\x80{}", id="non-utf8-bytes"),
    ],
)
def test_stdout_is_passed_through_untouched(plugin: Make, script: str, stdout: bytes) -> None:
    # Protocol judgement belongs to the domain; the spawner hands over bytes.
    ran = run(plugin(script))
    assert ran.outcome == SpawnOutcome(exit_code=0, stdout=stdout, duration=ran.outcome.duration)
    assert_nothing_survives(ran.handle)


def test_exit_78_is_reported_as_such(plugin: Make) -> None:
    ran = run(plugin("echo 'bad config' >&2; exit 78"))
    assert ran.outcome.exit_code == 78
    assert ran.outcome.signal is None
    assert ran.outcome.stderr_tail == b"bad config\n"
    assert_nothing_survives(ran.handle)


@pytest.mark.parametrize(
    ("script", "sig"), [("kill -SEGV $$", signal.SIGSEGV), ("kill -9 $$", signal.SIGKILL)]
)
def test_a_plugin_killed_by_a_signal_we_did_not_send_reports_it(plugin: Make, script: str, sig: int) -> None:
    ran = run(plugin(f"echo partial; {script}; sleep 5"))
    assert ran.outcome.signal == sig
    assert ran.outcome.exit_code is None
    assert not ran.outcome.timed_out
    assert ran.outcome.stdout == b"partial\n"
    assert_nothing_survives(ran.handle)


def test_slow_dripping_output_that_ends_in_time_is_received_whole(plugin: Make) -> None:
    ran = run(
        plugin("for i in 1 2 3 4 5 6 7 8 9 10; do printf x; printf y >&2; sleep 0.05; done"), timeout=10
    )
    assert ran.outcome.stdout == b"x" * 10
    assert ran.outcome.stderr_tail == b"y" * 10
    assert ran.outcome.exit_code == 0
    assert not ran.outcome.timed_out
    assert ran.outcome.duration >= 0.45  # it really dripped
    assert_nothing_survives(ran.handle)


# --------------------------------------------------------------------------
# Deadlines


def test_a_plugin_that_sleeps_forever_is_timed_out_and_its_group_killed(plugin: Make) -> None:
    ran = run(plugin("sleep 30 & sleep 30"), timeout=TIMEOUT, grace=GRACE)
    outcome = ran.outcome
    assert outcome.timed_out
    assert outcome.signal is None  # SIGTERM was ours
    assert TIMEOUT <= outcome.duration < TIMEOUT + GRACE + SLACK
    assert classify(outcome).event is JobEvent.TIME_OUT
    assert_nothing_survives(ran.handle)


def test_sigterm_reaches_the_group_and_the_grace_lets_it_clean_up(plugin: Make) -> None:
    exe = plugin("trap 'echo cleaning up >&2; exit 0' TERM; sleep 30 & wait")
    ran = run(exe, timeout=TIMEOUT, grace=5.0)
    assert ran.outcome.timed_out
    assert ran.outcome.stderr_tail == b"cleaning up\n"
    assert ran.outcome.duration < 5.0, "it exited on SIGTERM: no need to wait for the grace to end"
    assert classify(ran.outcome).event is JobEvent.TIME_OUT  # exit 0 after the deadline is no success
    assert_nothing_survives(ran.handle)


def test_a_plugin_ignoring_sigterm_is_sigkilled_after_the_grace(plugin: Make) -> None:
    # The ignored disposition is inherited by `sleep`: the whole group ignores SIGTERM.
    ran = run(plugin("trap '' TERM; sleep 30 & sleep 30"), timeout=TIMEOUT, grace=GRACE)
    assert ran.outcome.timed_out
    assert ran.outcome.signal is None  # SIGKILL was ours
    assert ran.outcome.duration >= TIMEOUT + GRACE - 0.01
    assert ran.outcome.duration < TIMEOUT + GRACE + SLACK
    assert_nothing_survives(ran.handle)


def test_an_answer_printed_before_hanging_does_not_count(plugin: Make) -> None:
    ran = run(plugin("""echo '{"status": "ok"}'; exec sleep 30"""), timeout=TIMEOUT)
    assert ran.outcome.timed_out
    assert classify(ran.outcome).event is JobEvent.TIME_OUT
    assert_nothing_survives(ran.handle)


def test_output_after_the_deadline_does_not_turn_a_timeout_into_success(plugin: Make) -> None:
    exe = plugin("""trap 'echo "{\\"status\\": \\"ok\\"}"; exit 0' TERM; sleep 30 & wait""")
    ran = run(exe, timeout=TIMEOUT, grace=5.0)
    assert ran.outcome.stdout == OK  # it answered, in the grace period
    assert ran.outcome.timed_out
    assert classify(ran.outcome).event is JobEvent.TIME_OUT
    assert_nothing_survives(ran.handle)


# --------------------------------------------------------------------------
# Exit detected apart from EOF


@pytest.mark.parametrize("holder", ["sleep 30 &", "sleep 30 >&2 &", "(trap '' TERM; sleep 30) &"])
def test_a_grandchild_holding_the_pipes_does_not_stall_the_job(plugin: Make, holder: str) -> None:
    ran = run(plugin(f"""{holder}\necho '{{"status": "ok"}}'\nexit 0"""), timeout=20)
    assert ran.outcome.exit_code == 0
    assert ran.outcome.stdout == OK
    assert not ran.outcome.timed_out
    assert ran.outcome.duration < SLACK, "waited for the grandchild instead of the plugin"
    assert_nothing_survives(ran.handle)


# --------------------------------------------------------------------------
# Floods and caps


def test_a_stdout_flood_overflows_and_is_stopped_quickly(plugin: Make) -> None:
    ran = run(plugin("exec head -c 100000000 /dev/zero"), timeout=20)
    outcome = ran.outcome
    assert outcome.stdout_overflow
    assert outcome.stdout == bytes(STDOUT_CAP)
    assert not outcome.timed_out
    assert outcome.signal is None  # the SIGKILL was ours
    assert outcome.duration < SLACK
    assert classify(outcome).error == "stdout over 10 MiB: the plugin was stopped"
    print(f"\nstdout flood of 100 MB stopped at 10 MiB after {outcome.duration:.3f}s")
    assert_nothing_survives(ran.handle)


@pytest.mark.parametrize(("size", "overflow"), [(999, False), (1000, False), (1001, True)])
def test_the_stdout_cap_is_exact(plugin: Make, size: int, overflow: bool) -> None:
    ran = run(plugin(f"head -c {size} /dev/zero; sleep 0.1; echo more >&2"), stdout_cap=1000)
    assert ran.outcome.stdout_overflow is overflow
    assert ran.outcome.stdout == bytes(min(size, 1000))
    assert (ran.outcome.exit_code == 0) is not overflow
    assert_nothing_survives(ran.handle)


def test_a_stderr_flood_keeps_the_tail_of_the_first_mib_and_the_exit_code(
    plugin: Make, tmp_path: Path
) -> None:
    # A numbered first MiB shows exactly which bytes were kept; 99 MB of zeros follow.
    head = b"".join(b"line %09d\n" % i for i in range(STDERR_CAP // 15 + 1))[:STDERR_CAP]
    (tmp_path / "head.bin").write_bytes(head)
    exe = plugin(f"cat '{tmp_path / 'head.bin'}' >&2; head -c 99000000 /dev/zero >&2; echo done; exit 3")
    ran = run(exe, timeout=20)
    outcome = ran.outcome
    assert outcome.exit_code == 3
    assert outcome.stdout == b"done\n"
    assert not outcome.timed_out
    assert outcome.stderr_tail == head[STDERR_CAP - STDERR_KEEP :]
    print(f"\nstderr flood of 100 MB drained in {outcome.duration:.3f}s")
    assert_nothing_survives(ran.handle)


@pytest.mark.parametrize(
    ("cap", "keep", "kept"),
    [
        (STDERR_CAP, 50, slice(3000 - 50, 3000)),  # under the cap: the last bytes of all of it
        (1000, 100, slice(900, 1000)),  # over the cap: the last bytes of the first `cap`
        (1000, 0, slice(0, 0)),
    ],
)
def test_the_stderr_tail_is_the_last_keep_bytes_of_the_first_cap_bytes(
    plugin: Make, tmp_path: Path, cap: int, keep: int, kept: slice
) -> None:
    stream = b"".join(b"%09d\n" % i for i in range(300))  # 3000 bytes, written at once
    (tmp_path / "err.bin").write_bytes(stream)
    ran = run(plugin(f"cat '{tmp_path / 'err.bin'}' >&2"), stderr_cap=cap, stderr_keep=keep)
    assert ran.outcome.stderr_tail == stream[kept]
    assert ran.outcome.exit_code == 0


_MEASURE = """
import asyncio, json, sys
from ductile.adapters.spawner import SubprocessSpawner
from ductile.ports.spawner import SpawnRequest

def hwm_kib():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1])

def request(exe):
    return SpawnRequest(executable=exe, cwd="/", stdin=b"{}", env={"PATH": "/usr/bin:/bin"}, timeout=30)

async def main(exe):
    # Returns a summary, not the outcome: asyncio.run (3.11) may repr its main task's
    # result (signal.getsignal on a partial holding the task), and the repr of 10 MiB of
    # stdout is a 40 MB string, which would be measured instead of the spawner.
    outcome = await SubprocessSpawner().run(request(exe))
    return {"duration": outcome.duration, "overflow": outcome.stdout_overflow,
            "exit_code": outcome.exit_code, "stdout": len(outcome.stdout), "tail": len(outcome.stderr_tail)}

asyncio.run(main("/bin/true"))  # warm up: imports, event loop
before = hwm_kib()
summary = asyncio.run(main(sys.argv[1]))
after = hwm_kib()
print(json.dumps({"growth_kib": after - before, "before_kib": before, **summary}))
"""


@pytest.mark.parametrize(
    ("flood", "limit_mib"),
    [
        # The 10 MiB kept, plus one copy into the outcome's bytes.
        ("exec head -c 100000000 /dev/zero", 32),
        ("head -c 100000000 /dev/zero >&2; exit 5", 8),
    ],
    ids=["stdout", "stderr"],
)
def test_peak_memory_stays_bounded_under_a_100_mb_flood(plugin: Make, flood: str, limit_mib: int) -> None:
    src = str(Path(__file__).resolve().parents[2] / "src")
    done = subprocess.run(
        [sys.executable, "-c", _MEASURE, plugin(flood)],
        capture_output=True,
        env={**os.environ, "PYTHONPATH": src},
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode()
    figures = json.loads(done.stdout)
    print(f"\n100 MB flood: peak RSS growth {figures['growth_kib'] / 1024:.1f} MiB; {figures}")
    assert figures["overflow"] is (flood.startswith("exec"))
    assert figures["growth_kib"] < limit_mib * 1024


# --------------------------------------------------------------------------
# stdin


def test_a_plugin_that_never_reads_a_4mb_request_and_exits(plugin: Make) -> None:
    ran = run(plugin("""echo '{"status": "ok"}'; exit 0"""), stdin=bytes(4_000_000), timeout=10)
    assert ran.outcome.exit_code == 0
    assert ran.outcome.stdout == OK
    assert ran.outcome.duration < SLACK
    assert_nothing_survives(ran.handle)


def test_a_plugin_that_never_reads_a_4mb_request_and_sleeps_is_timed_out(plugin: Make) -> None:
    ran = run(plugin("exec sleep 30"), stdin=bytes(4_000_000), timeout=TIMEOUT, grace=GRACE)
    assert ran.outcome.timed_out
    assert ran.outcome.duration < TIMEOUT + GRACE + SLACK
    assert_nothing_survives(ran.handle)


def test_a_plugin_that_closes_stdin_early_is_not_an_error(plugin: Make) -> None:
    exe = plugin("""head -c 10 >/dev/null; exec 0<&-; sleep 0.1; echo '{"status": "ok"}'""")
    ran = run(exe, stdin=bytes(4_000_000), timeout=10)
    assert ran.outcome.exit_code == 0
    assert ran.outcome.stdout == OK
    assert_nothing_survives(ran.handle)


# --------------------------------------------------------------------------
# Exec failures


@pytest.mark.parametrize(
    ("kind", "fragment"),
    [
        ("missing", "No such file or directory (ENOENT)"),
        ("not-executable", "not executable: Permission denied (EACCES)"),
        ("bad-interpreter", "its interpreter /nonexistent/bin/python (from the #! line) does not exist"),
        # Not "bad interpreter '/bin/sh'", which hid the cause (issue 12).
        ("crlf-shebang", "'#!/bin/sh' ends with a carriage return: the file has Windows line endings"),
        ("no-shebang-garbage", "(ENOEXEC)"),
        ("directory", "(EACCES)"),
        ("missing-cwd", "working directory"),
        ("relative", "must be an absolute path"),
    ],
)
def test_exec_failures_are_spawn_errors_not_exceptions(
    plugin: Make, tmp_path: Path, kind: str, fragment: str
) -> None:
    cwd = str(tmp_path)
    if kind == "missing":
        exe = str(tmp_path / "nope")
    elif kind == "not-executable":
        exe = plugin("exit 0", mode=0o644)
    elif kind == "bad-interpreter":
        exe = plugin("print(1)", shebang="#!/nonexistent/bin/python")
    elif kind == "crlf-shebang":
        exe = plugin("", shebang="#!/bin/sh\r\nexit 0\r")
    elif kind == "no-shebang-garbage":
        exe = plugin("\x00\x01\x02 not a program", shebang="")
    elif kind == "directory":
        exe = str(tmp_path)
    elif kind == "missing-cwd":
        exe, cwd = plugin("exit 0"), str(tmp_path / "gone")
    else:
        exe = "plugins/x/run"
    ran = run(exe, cwd=cwd)
    assert ran.outcome.spawn_error is not None
    assert fragment in ran.outcome.spawn_error
    assert ran.outcome.exit_code is None
    assert ran.handles == []  # nothing started: on_start not called
    verdict = classify(ran.outcome)
    assert verdict.event is JobEvent.FAIL
    # What a retry cannot fix is not retried; a vanished file or working directory might come back.
    permanent = kind in ("not-executable", "bad-interpreter", "crlf-shebang", "no-shebang-garbage")
    assert verdict.retryable is not permanent, (kind, ran.outcome.start_failure)


# --------------------------------------------------------------------------
# The caller's side: cancellation, a failing on_start, concurrency


def test_cancelling_a_run_kills_and_reaps_the_group(plugin: Make) -> None:
    handles: list[ProcessHandle] = []

    async def main() -> None:
        started = asyncio.Event()

        async def on_start(handle: ProcessHandle) -> None:
            handles.append(handle)
            started.set()

        request = SpawnRequest(
            executable=plugin("sleep 30 & sleep 30"), cwd="/", stdin=b"", env=ENV, timeout=30
        )
        task = asyncio.create_task(SubprocessSpawner().run(request, on_start=on_start))
        await asyncio.wait_for(started.wait(), 5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    [handle] = handles
    assert_nothing_survives(handle)


def test_an_on_start_that_raises_propagates_and_leaves_nothing(plugin: Make) -> None:
    handles: list[ProcessHandle] = []

    async def on_start(handle: ProcessHandle) -> None:
        handles.append(handle)
        raise RuntimeError("the store is down")

    request = SpawnRequest(
        executable=plugin("sleep 30 & sleep 30"), cwd="/", stdin=b"{}", env=ENV, timeout=30
    )
    with pytest.raises(RuntimeError, match="the store is down"):
        asyncio.run(SubprocessSpawner().run(request, on_start=on_start))
    [handle] = handles
    assert_nothing_survives(handle)


def test_concurrent_runs_do_not_disturb_each_other(plugin: Make) -> None:
    requests = [
        SpawnRequest(executable=plugin("exec cat"), cwd="/", stdin=b"A" * 300_000, env=ENV, timeout=10),
        SpawnRequest(executable=plugin("sleep 30 & echo B"), cwd="/", stdin=b"", env=ENV, timeout=10),
        SpawnRequest(
            executable=plugin("exec sleep 30"), cwd="/", stdin=b"", env=ENV, timeout=TIMEOUT, grace=GRACE
        ),
        SpawnRequest(executable=plugin("echo C >&2; exit 4"), cwd="/", stdin=b"", env=ENV, timeout=10),
    ]
    handles: list[ProcessHandle] = []

    async def on_start(handle: ProcessHandle) -> None:
        handles.append(handle)

    async def main() -> list[SpawnOutcome]:
        spawner = SubprocessSpawner()
        return list(await asyncio.gather(*(spawner.run(r, on_start=on_start) for r in requests)))

    cat, grandchild, sleeper, failing = asyncio.run(main())
    assert (cat.exit_code, cat.stdout) == (0, b"A" * 300_000)
    assert (grandchild.exit_code, grandchild.stdout, grandchild.timed_out) == (0, b"B\n", False)
    assert sleeper.timed_out
    assert (failing.exit_code, failing.stderr_tail) == (4, b"C\n")
    assert len(handles) == 4
    for handle in handles:
        assert_nothing_survives(handle)


# --------------------------------------------------------------------------
# kill_orphan: a group left behind by a daemon that died


_DAEMON = """
import subprocess, sys, time
group = subprocess.Popen([sys.argv[1]], start_new_session=True, stdin=subprocess.DEVNULL,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
print(group.pid, flush=True)
time.sleep(60)
"""


def orphan_group(script: str, groups: list[int], members: int) -> ProcessHandle:
    """A group whose "daemon" was SIGKILLed: re-parented, as after a crash."""
    daemon = subprocess.Popen([sys.executable, "-c", _DAEMON, script], stdout=subprocess.PIPE)
    assert daemon.stdout is not None
    pid = int(daemon.stdout.readline())
    groups.append(pid)
    wait_until(lambda: len(live_members(pid)) == members, what=f"{members} members in group {pid}")
    daemon.kill()
    daemon.wait(5)
    daemon.stdout.close()
    stat = read_proc_stat(pid)
    assert stat is not None
    return ProcessHandle(pid=pid, pgid=pid, start_time=stat.start_time)


def test_kill_orphan_kills_the_group_of_a_leader_with_the_recorded_start_time(
    plugin: Make, stray_groups: list[int]
) -> None:
    handle = orphan_group(plugin("sleep 30 & exec sleep 30"), stray_groups, members=2)
    assert asyncio.run(SubprocessSpawner().kill_orphan(handle)) is True
    wait_until(lambda: not live_members(handle.pgid), what="the orphaned group to die")


def test_kill_orphan_signals_nothing_when_the_pid_was_reused(plugin: Make, stray_groups: list[int]) -> None:
    handle = orphan_group(plugin("sleep 30 & exec sleep 30"), stray_groups, members=2)
    reused = ProcessHandle(pid=handle.pid, pgid=handle.pgid, start_time=handle.start_time - 1)
    assert asyncio.run(SubprocessSpawner().kill_orphan(reused)) is False
    stat = read_proc_stat(handle.pid)
    assert stat is not None
    assert stat.alive
    assert len(live_members(handle.pgid)) == 2
    os.killpg(handle.pgid, signal.SIGKILL)


def test_kill_orphan_kills_the_members_left_when_the_leader_is_gone(
    plugin: Make, stray_groups: list[int]
) -> None:
    # The leader exits at once; the test (its parent) reaps it: no process has its pid.
    group = subprocess.Popen([plugin("sleep 30 & sleep 30 & exit 0")], start_new_session=True)
    stray_groups.append(group.pid)
    assert group.wait(5) == 0
    handle = ProcessHandle(pid=group.pid, pgid=group.pid, start_time=12345)
    assert read_proc_stat(handle.pid) is None
    assert len(live_members(handle.pgid)) == 2
    spawner = SubprocessSpawner()
    assert asyncio.run(spawner.kill_orphan(handle)) is True
    wait_until(lambda: not live_members(handle.pgid), what="the leaderless group to die")
    assert asyncio.run(spawner.kill_orphan(handle)) is False  # nothing left: nothing signalled


# --------------------------------------------------------------------------
# /proc/<pid>/stat parsing


@settings(max_examples=300, deadline=None)
@given(
    comm=st.binary(max_size=64).filter(lambda b: b"\n" not in b),
    state=st.sampled_from("RSDZTtXIP"),
    pgrp=st.integers(0, 2**22),
    start=st.integers(0, 2**63),
    pid=st.integers(1, 2**22),
)
def test_parse_proc_stat_finds_fields_after_any_command_name(
    comm: bytes, state: str, pgrp: int, start: int, pid: int
) -> None:
    middle = [state, "1", str(pgrp), *[str(n) for n in range(6, 22)], str(start), *["0"] * 30]
    line = b"%d (%s) " % (pid, comm) + " ".join(middle).encode() + b"\n"
    assert parse_proc_stat(line) == ProcStat(state=state, pgrp=pgrp, start_time=start)


@pytest.mark.parametrize(
    "garbage", [b"", b"123 (x) R 1", b"no parenthesis at all", b"1 (x) R a b c" + b" 0" * 30]
)
def test_parse_proc_stat_rejects_what_is_not_a_stat_line(garbage: bytes) -> None:
    with pytest.raises(ValueError, match="not a /proc/<pid>/stat line"):
        parse_proc_stat(garbage)


def test_read_proc_stat_of_a_process_named_with_parentheses_and_spaces() -> None:
    code = (
        "open('/proc/self/comm', 'w').write(') x) 1 2 ('); print(1, flush=True); import time; time.sleep(30)"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, start_new_session=True)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == b"1\n"
        with open(f"/proc/{proc.pid}/stat", "rb") as f:
            assert b") x) 1 2 (" in f.read()
        stat = read_proc_stat(proc.pid)
        assert stat is not None
        assert stat.pgrp == proc.pid
        assert stat.state in ("S", "R")
        assert stat.start_time >= read_proc_stat(os.getpid()).start_time  # type: ignore[union-attr]
    finally:
        proc.kill()
        proc.wait(5)
        if proc.stdout is not None:
            proc.stdout.close()
    assert read_proc_stat(proc.pid) is None


# --------------------------------------------------------------------------
# Without pidfds (older kernels): exit is polled with waitid(WNOWAIT)


@pytest.fixture
def polling(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_pidfd(pid: int, flags: int = 0) -> int:
        raise OSError(38, "Function not implemented")

    monkeypatch.setattr(os, "pidfd_open", no_pidfd)


@pytest.mark.usefixtures("polling")
def test_without_pidfd_a_grandchild_holding_stdout_does_not_stall_the_job(plugin: Make) -> None:
    ran = run(plugin("""sleep 30 &\necho '{"status": "ok"}'\nexit 3"""), timeout=20)
    assert (ran.outcome.exit_code, ran.outcome.stdout, ran.outcome.timed_out) == (3, OK, False)
    assert ran.outcome.duration < SLACK
    assert_nothing_survives(ran.handle)


@pytest.mark.usefixtures("polling")
def test_without_pidfd_a_sleeper_is_timed_out_and_a_signal_reported(plugin: Make) -> None:
    slept = run(plugin("trap '' TERM; sleep 30 & sleep 30"), timeout=TIMEOUT, grace=GRACE)
    assert slept.outcome.timed_out
    assert TIMEOUT + GRACE - 0.01 <= slept.outcome.duration < TIMEOUT + GRACE + SLACK
    assert_nothing_survives(slept.handle)
    crashed = run(plugin("kill -SEGV $$"))
    assert (crashed.outcome.signal, crashed.outcome.exit_code) == (signal.SIGSEGV, None)
    assert_nothing_survives(crashed.handle)


# --------------------------------------------------------------------------
# Out of reach, documented: a setsid() escapee


def test_a_setsid_escapee_holding_stdout_stalls_the_job_only_for_the_drain_deadline(
    plugin: Make, tmp_path: Path
) -> None:
    # The escapee leaves the group, so killpg cannot reach it: only a cgroup can
    # (systemd KillMode=control-group). It must not hang the job, though.
    # The plugin waits (on a fifo) until the escapee has left the group.
    os.mkfifo(tmp_path / "escaped")
    script = """
        setsid sh -c 'echo $$ > escaped; exec sleep 30' &
        read pid < escaped
        echo $pid >&2
        echo '{"status": "ok"}'
    """
    ran = run(
        plugin(script),
        cwd=str(tmp_path),
        timeout=20,
        spawner=SubprocessSpawner(drain_timeout=0.3),
    )
    escapee = int(ran.outcome.stderr_tail)
    try:
        assert (ran.outcome.exit_code, ran.outcome.stdout, ran.outcome.timed_out) == (0, OK, False)
        assert 0.3 <= ran.outcome.duration < 0.3 + SLACK
        assert_nothing_survives(ran.handle)  # of the plugin's own group
        stat = read_proc_stat(escapee)
        assert stat is not None, "the escapee is expected to be out of reach"
        assert stat.alive
        assert stat.pgrp == escapee
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(escapee, signal.SIGKILL)


@pytest.mark.parametrize("mode", ["pidfd", "polling"])
def test_an_exit_before_the_deadline_is_never_turned_into_a_timeout(
    plugin: Make, request: pytest.FixtureRequest, mode: str
) -> None:
    # on_start blocks the loop until the plugin has exited (waitid WNOWAIT: not reaped),
    # with a deadline of 0: the exit is not reported yet when the deadline is checked.
    if mode == "polling":
        request.getfixturevalue("polling")
    handles: list[ProcessHandle] = []

    async def on_start(handle: ProcessHandle) -> None:
        handles.append(handle)
        os.waitid(os.P_PID, handle.pid, os.WEXITED | os.WNOWAIT)  # noqa: ASYNC222 (blocking on purpose)

    spawn = SpawnRequest(executable=plugin("echo done; exit 0"), cwd="/", stdin=b"", env=ENV, timeout=0.0)
    outcome = asyncio.run(SubprocessSpawner().run(spawn, on_start=on_start))
    assert (outcome.timed_out, outcome.exit_code, outcome.stdout) == (False, 0, b"done\n")
    assert_nothing_survives(handles[0])
