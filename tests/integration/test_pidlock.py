"""The instance lock with real processes (D12).

Every wait on another process is a condition with a bounded deadline: the
holder prints a line once it holds the lock, and the test reads that line.
"""

from __future__ import annotations

import errno
import fcntl
import os
import select
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from ductile.adapters.pidlock import (
    LOCK_NAME,
    AlreadyRunningError,
    InstanceLock,
    LockError,
    running_daemon_pid,
)
from ductile.adapters.statedir import StateDirError
from ductile.domain.errors import DuctileError

DEADLINE = 10.0

HOLDER = """
import sys
from ductile.adapters.pidlock import InstanceLock
lock = InstanceLock(sys.argv[1])
lock.acquire()
print("locked", flush=True)
sys.stdin.read()
"""

# Lists the files this process has open, then waits: an inherited lock fd would show up.
LISTER = """
import os, sys
names = []
for fd in os.listdir("/proc/self/fd"):
    try:
        names.append(os.readlink(f"/proc/self/fd/{fd}"))
    except OSError:
        pass
print(repr(names), flush=True)
sys.stdin.read()
"""


def read_line(proc: subprocess.Popen[bytes]) -> str:
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], DEADLINE)
    assert ready, f"no line from pid {proc.pid} within {DEADLINE}s"
    return proc.stdout.readline().decode().strip()


@pytest.fixture
def spawn() -> Iterator[Callable[..., subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []

    def start(code: str, *args: str, close_fds: bool = True) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(
            [sys.executable, "-c", code, *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            close_fds=close_fds,
        )
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=DEADLINE)
        for stream in (proc.stdin, proc.stdout):
            if stream is not None:
                stream.close()


@pytest.fixture
def holder(spawn: Callable[..., subprocess.Popen[bytes]], tmp_path: Path) -> subprocess.Popen[bytes]:
    proc = spawn(HOLDER, str(tmp_path / "state"))
    assert read_line(proc) == "locked"
    return proc


def kill(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=DEADLINE) == -signal.SIGKILL


def test_a_second_instance_in_another_process_is_refused_and_touches_nothing(
    holder: subprocess.Popen[bytes], tmp_path: Path
) -> None:
    state = tmp_path / "state"
    path = state / LOCK_NAME
    assert path.read_text() == f"{holder.pid}\n"
    before = path.stat()
    with pytest.raises(AlreadyRunningError) as caught:
        InstanceLock(str(state)).acquire()
    assert str(caught.value) == f"ductile is already running (pid {holder.pid}) with state dir {state}"
    assert caught.value.pid == holder.pid
    after = path.stat()
    assert path.read_text() == f"{holder.pid}\n"
    assert (after.st_ino, after.st_size, after.st_mtime_ns) == (
        before.st_ino,
        before.st_size,
        before.st_mtime_ns,
    )


def test_the_lock_is_free_once_the_holder_is_sigkilled(
    holder: subprocess.Popen[bytes], tmp_path: Path
) -> None:
    state = tmp_path / "state"
    path = state / LOCK_NAME
    inode = path.stat().st_ino
    kill(holder)
    assert path.read_text() == f"{holder.pid}\n"  # stale content: it must not matter
    lock = InstanceLock(str(state))
    lock.acquire()
    try:
        assert lock.held
        assert path.read_text() == f"{os.getpid()}\n"
        assert path.stat().st_ino == inode  # the same file, never unlinked and recreated
    finally:
        lock.release()
    assert path.exists()
    assert path.stat().st_ino == inode


def test_running_daemon_pid_follows_the_holder(
    spawn: Callable[..., subprocess.Popen[bytes]], tmp_path: Path
) -> None:
    state = tmp_path / "state"
    assert running_daemon_pid(str(state)) is None  # no state dir, no file: none runs
    assert not state.exists()  # and the probe created nothing
    proc = spawn(HOLDER, str(state))
    assert read_line(proc) == "locked"
    assert running_daemon_pid(str(state)) == proc.pid
    assert running_daemon_pid(str(state)) == proc.pid  # the probe left the lock as it was
    kill(proc)
    assert running_daemon_pid(str(state)) is None  # stale file, dead pid, free lock


def test_a_stale_file_naming_a_live_process_is_not_a_running_daemon(tmp_path: Path) -> None:
    # A reused pid: the file names a live process (this one) but nobody holds the lock.
    (tmp_path / LOCK_NAME).write_text(f"{os.getpid()}\n")
    assert running_daemon_pid(str(tmp_path)) is None
    (tmp_path / LOCK_NAME).write_text("garbage\n")
    assert running_daemon_pid(str(tmp_path)) is None


def test_running_daemon_pid_in_the_holder_process_is_its_own_pid(tmp_path: Path) -> None:
    with InstanceLock(str(tmp_path)) as lock:
        assert lock.held
        assert running_daemon_pid(str(tmp_path)) == os.getpid()
        InstanceLock(str(tmp_path))  # constructing touches nothing
        with pytest.raises(AlreadyRunningError, match=f"pid {os.getpid()}"):
            InstanceLock(str(tmp_path)).acquire()  # a second lock object of the same process
    assert not lock.held
    assert running_daemon_pid(str(tmp_path)) is None


def test_a_holder_that_wrote_no_pid_yet_is_reported_as_unknown(tmp_path: Path) -> None:
    path = tmp_path / LOCK_NAME
    path.write_text("")
    fd = os.open(path, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(AlreadyRunningError) as caught:
            InstanceLock(str(tmp_path)).acquire()
        assert caught.value.pid is None
        assert "(pid unknown)" in str(caught.value)
        assert running_daemon_pid(str(tmp_path)) is None  # held, but by no pid we could signal
    finally:
        os.close(fd)


def test_the_lock_fd_is_not_inherited_by_children(
    spawn: Callable[..., subprocess.Popen[bytes]], tmp_path: Path
) -> None:
    lock = InstanceLock(str(tmp_path))
    lock.acquire()
    fd = lock._fd
    assert fd is not None
    assert not os.get_inheritable(fd)
    # close_fds=False: only close-on-exec keeps the descriptor out of the child.
    child = spawn(LISTER, close_fds=False)
    open_files = read_line(child)
    assert str(tmp_path / LOCK_NAME) not in open_files
    lock.release()
    # With the child still alive, the lock is free: it holds no copy of the descriptor.
    assert child.poll() is None
    with InstanceLock(str(tmp_path)) as again:
        assert again.held


def test_state_dir_is_created_private(tmp_path: Path) -> None:
    state = tmp_path / "a" / "b" / "state"
    with InstanceLock(str(state)):
        assert (state.stat().st_mode & 0o777) == 0o700
        assert (state / LOCK_NAME).is_file()


def test_an_existing_state_dir_keeps_its_mode(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    state.chmod(0o750)
    with InstanceLock(str(state)):
        pass
    assert (state.stat().st_mode & 0o777) == 0o750


def test_release_is_idempotent_and_never_unlinks(tmp_path: Path) -> None:
    lock = InstanceLock(str(tmp_path))
    lock.release()  # never acquired: nothing to do
    lock.acquire()
    lock.acquire()  # already held: a no-op, not a self-conflict
    lock.release()
    lock.release()
    assert not lock.held
    assert (tmp_path / LOCK_NAME).read_text() == f"{os.getpid()}\n"
    with InstanceLock(str(tmp_path)):  # and it can be taken again
        pass


def test_errors_belong_to_the_ductile_family() -> None:
    assert issubclass(AlreadyRunningError, LockError)
    assert issubclass(LockError, DuctileError)


def test_a_lock_path_that_is_a_directory_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / LOCK_NAME).mkdir()
    with pytest.raises(StateDirError, match=f"{tmp_path / LOCK_NAME} is not a regular file"):
        InstanceLock(str(tmp_path)).acquire()


def test_a_state_dir_that_is_a_file_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "state").write_text("x")
    with pytest.raises(StateDirError, match=r"state dir .* is not a directory"):
        InstanceLock(str(tmp_path / "state")).acquire()


@pytest.mark.parametrize("code", [errno.ENOLCK, errno.EOPNOTSUPP])
def test_a_filesystem_without_locks_is_refused_with_a_hint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int
) -> None:
    def no_locks(fd: int, operation: int) -> None:
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(fcntl, "flock", no_locks)  # pidlock calls fcntl.flock at call time
    lock = InstanceLock(str(tmp_path))
    with pytest.raises(LockError, match="local filesystem") as caught:
        lock.acquire()
    assert not isinstance(caught.value, AlreadyRunningError)
    assert not lock.held
    assert not (tmp_path / LOCK_NAME).exists()  # nothing written without the lock
    with pytest.raises(LockError, match="local filesystem"):
        running_daemon_pid(str(tmp_path))


# ------------------------------------------------------------- a lock file someone deletes (ADR 0040)


def test_deleting_the_lock_file_does_not_let_a_second_instance_in(
    holder: subprocess.Popen[bytes], tmp_path: Path
) -> None:
    state = tmp_path / "state"
    (state / LOCK_NAME).unlink()  # what a careless `rm state/ductile.lock` does
    with pytest.raises(AlreadyRunningError, match=r"already running \(pid unknown\)"):
        InstanceLock(str(state)).acquire()
    assert not (state / LOCK_NAME).exists()  # the refused instance made no new file either


def test_the_check_puts_back_a_deleted_or_replaced_lock_file(tmp_path: Path) -> None:
    with InstanceLock(str(tmp_path)) as lock:
        (tmp_path / LOCK_NAME).unlink()
        assert running_daemon_pid(str(tmp_path)) is None  # no file, no pid to signal...
        assert lock.check() is None  # ...until the check puts it back
        assert (tmp_path / LOCK_NAME).read_text() == f"{os.getpid()}\n"
        assert running_daemon_pid(str(tmp_path)) == os.getpid()
        (tmp_path / LOCK_NAME).unlink()
        (tmp_path / LOCK_NAME).write_text("12345\n")  # another file in its place
        assert lock.check() is None
        assert (tmp_path / LOCK_NAME).read_text() == f"{os.getpid()}\n"
        assert lock.check() is None  # and nothing more to do
    assert running_daemon_pid(str(tmp_path)) is None


def test_the_check_reports_a_state_dir_moved_away_under_the_daemon(tmp_path: Path) -> None:
    state = tmp_path / "state"
    with InstanceLock(str(state)) as lock:
        assert lock.check() is None
        state.rename(tmp_path / "state.old")
        state.mkdir(mode=0o700)
        reason = lock.check()
        assert reason is not None
        assert "was moved or replaced while ductile ran" in reason


def test_a_ductile_that_locks_only_the_file_still_sees_the_directory_holder(tmp_path: Path) -> None:
    """An older ductile (file lock only) and this one exclude each other, both ways."""
    with InstanceLock(str(tmp_path)):
        fd = os.open(tmp_path / LOCK_NAME, os.O_RDWR)
        try:
            with pytest.raises(BlockingIOError):
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        finally:
            os.close(fd)
