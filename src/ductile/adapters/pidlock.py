"""One instance per state directory (D12): ``flock`` on ``<state_dir>/ductile.lock``.

The kernel holds the lock for as long as the open file lives and drops it
when the process dies, however it dies (SIGKILL included), so a stale PID
file can never block a restart: the PID written inside is only a label for
humans and for ``ductile reload``, meaningful while the lock is held. The
file is never unlinked: unlinking a lock file lets two processes lock two
different inodes of the same name. See ADR 0012.
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
from types import TracebackType

from ductile.domain.errors import DuctileError

LOCK_NAME = "ductile.lock"
_BUSY = frozenset({errno.EWOULDBLOCK, errno.EAGAIN})
_LOCAL_HINT = "state_dir must be on a local filesystem that supports flock (not NFS or a FUSE share)"


class LockError(DuctileError):
    """The instance lock could not be taken (or probed) for a reason other than another instance."""


class AlreadyRunningError(LockError):
    """Another process holds the instance lock of this state directory."""

    def __init__(self, pid: int | None, state_dir: str) -> None:
        holder = f"pid {pid}" if pid is not None else "pid unknown"
        super().__init__(f"ductile is already running ({holder}) with state dir {state_dir}")
        self.pid = pid
        self.state_dir = state_dir


def lock_path(state_dir: str) -> str:
    return os.path.join(state_dir, LOCK_NAME)


class InstanceLock:
    """The exclusive lock of one state directory, held for the life of the process.

    The descriptor is close-on-exec: plugins never inherit it, so a plugin
    outliving a crashed daemon does not keep the next daemon out. (A bare
    ``fork()`` without exec would share it; ductile never does that.)
    """

    def __init__(self, state_dir: str) -> None:
        self.state_dir = os.path.abspath(state_dir)
        self.path = lock_path(self.state_dir)
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> None:
        """Take the lock or raise; on failure nothing on disk is changed. A no-op when held."""
        if self._fd is not None:
            return
        self._make_state_dir()
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o644)
        except OSError as exc:
            raise LockError(
                f"cannot open the lock file {self.path}: {exc.strerror}; {_LOCAL_HINT}, "
                "writable by the user running ductile"
            ) from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = _read_pid(fd) if exc.errno in _BUSY else None
            os.close(fd)
            if exc.errno in _BUSY:
                raise AlreadyRunningError(holder, self.state_dir) from None
            raise LockError(f"cannot lock {self.path}: {exc.strerror}; {_LOCAL_HINT}") from exc
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            os.fsync(fd)
        except OSError as exc:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
            raise LockError(f"cannot write the pid to {self.path}: {exc.strerror}") from exc
        self._fd = fd

    def release(self) -> None:
        """Unlock and close; idempotent. The file stays (its stale pid means nothing unlocked)."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def __enter__(self) -> InstanceLock:
        self.acquire()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()

    def _make_state_dir(self) -> None:
        try:
            os.makedirs(self.state_dir, mode=0o700, exist_ok=True)
        except OSError as exc:
            raise LockError(f"cannot create state dir {self.state_dir}: {exc.strerror}") from exc
        if not os.path.isdir(self.state_dir):
            raise LockError(f"state dir {self.state_dir} is not a directory")


def running_daemon_pid(state_dir: str) -> int | None:
    """The PID of the daemon holding ``state_dir``'s lock, or None when none runs.

    Only when the lock is really held *and* the PID written in the file is a
    live process: a leftover file with a dead (or reused) PID and a free lock
    gives None. The probe takes a shared lock on its own descriptor and drops
    it at once; it never creates the file.

    Called in the process that holds the lock, it returns that process's own
    PID (the new descriptor conflicts with the held one, and the file names
    us) — truthful, so a caller about to signal the daemon must not be the
    daemon. Raises :class:`LockError` when the lock cannot be probed at all.
    """
    path = lock_path(os.path.abspath(state_dir))
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise LockError(f"cannot open the lock file {path}: {exc.strerror}") from exc
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise LockError(f"the lock file {path} is not a regular file")
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in _BUSY:
                raise LockError(f"cannot probe the lock {path}: {exc.strerror}; {_LOCAL_HINT}") from exc
        else:
            fcntl.flock(fd, fcntl.LOCK_UN)
            return None
        pid = _read_pid(fd)
    finally:
        os.close(fd)
    return pid if pid is not None and _alive(pid) else None


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() and 0 < int(text) < 2**31 else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, belongs to another user
        return True
    return True
