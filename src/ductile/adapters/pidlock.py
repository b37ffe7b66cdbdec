"""One instance per state directory (D12): ``flock`` on the state directory and on ``ductile.lock``.

The kernel holds a ``flock`` for as long as the open file lives and drops it
when the process dies, however it dies (SIGKILL included), so a stale PID
file can never block a restart: the PID written inside ``ductile.lock`` is
only a label for humans and for ``ductile reload``, meaningful while the
lock is held.

**The lock that counts is on the state directory itself** (ADR 0040,
amending ADR 0012): a file can be unlinked under a running daemon (``rm
state/ductile.lock``), after which a second daemon would lock a new file of
the same name and run on the same database; a directory that holds the
database cannot be removed. ``ductile.lock`` is locked too (so a ductile that
locks only the file still sees the daemon) and is never unlinked by
ductile. :meth:`InstanceLock.check`, run by the daemon every few seconds,
puts back a deleted lock file (with the PID, for ``ductile reload``) and
reports a state directory moved away under it.

Before the lock is taken the state directory is checked
(:mod:`ductile.adapters.statedir`): created 0700, owned by this user,
writable by nobody else, its files regular and private.
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
from collections.abc import Iterable
from types import TracebackType

from ductile.adapters.statedir import FILE_MODE, prepare
from ductile.domain.errors import DuctileError
from ductile.log import Log

LOCK_NAME = "ductile.lock"
_log = Log("daemon")
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

    The descriptors are close-on-exec: plugins never inherit them, so a plugin
    outliving a crashed daemon does not keep the next daemon out. (A bare
    ``fork()`` without exec would share them; ductile never does that.)
    ``files`` are the other files of the state directory whose ownership and
    modes are checked before the lock is taken (the database's).
    """

    def __init__(self, state_dir: str, *, files: Iterable[str] = ()) -> None:
        self.state_dir = os.path.abspath(state_dir)
        self.path = lock_path(self.state_dir)
        self._files = (LOCK_NAME, *files)
        self._dir_fd: int | None = None
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> None:
        """Take the lock or raise; on failure nothing on disk is changed. A no-op when held."""
        if self._fd is not None:
            return
        prepare(self.state_dir, self._files)
        dir_fd = self._lock_directory()
        try:
            fd = self._lock_file()
        except BaseException:
            os.close(dir_fd)  # drops the directory's lock
            raise
        self._dir_fd, self._fd = dir_fd, fd

    def _lock_directory(self) -> int:
        try:
            dir_fd = os.open(self.state_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as exc:
            raise LockError(f"cannot open the state dir {self.state_dir}: {exc.strerror}") from exc
        try:
            fcntl.flock(dir_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(dir_fd)
            if exc.errno in _BUSY:
                raise AlreadyRunningError(_pid_in(self.path), self.state_dir) from None
            raise LockError(f"cannot lock {self.state_dir}: {exc.strerror}; {_LOCAL_HINT}") from exc
        return dir_fd

    def _lock_file(self) -> int:
        """Open (creating it 0600), lock and label ``ductile.lock``; its descriptor."""
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, FILE_MODE)
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
            os.fchmod(fd, FILE_MODE)
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            os.fsync(fd)
        except OSError as exc:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
            raise LockError(f"cannot write the pid to {self.path}: {exc.strerror}") from exc
        return fd

    def check(self) -> str | None:
        """While held: put back a deleted or replaced ``ductile.lock`` (None, and it is logged by
        the caller only if it returns a reason); the reason to stop when the state directory at
        the path is no longer the one locked (moved or replaced under the daemon)."""
        if self._fd is None or self._dir_fd is None:
            return None
        if not _same_file(self._dir_fd, self.state_dir):
            return (
                f"the state dir {self.state_dir} was moved or replaced while ductile ran: its database "
                "is no longer at that path, and another ductile could start there"
            )
        if _same_file(self._fd, self.path):
            return None
        try:
            fd = self._lock_file()
        except LockError as e:
            return f"the lock file {self.path} was deleted or replaced, and cannot be made again: {e}"
        old, self._fd = self._fd, fd
        os.close(old)
        _log.warning(
            f"the lock file {self.path} was deleted or replaced while ductile ran: it was put back "
            "(the state directory's own lock kept any other ductile out meanwhile)"
        )
        return None

    def release(self) -> None:
        """Unlock and close; idempotent. The file stays (its stale pid means nothing unlocked)."""
        fd, self._fd = self._fd, None
        dir_fd, self._dir_fd = self._dir_fd, None
        try:
            if fd is not None:
                try:
                    fcntl.flock(fd, fcntl.LOCK_UN)
                finally:
                    os.close(fd)
        finally:
            if dir_fd is not None:
                os.close(dir_fd)

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


def _same_file(fd: int, path: str) -> bool:
    try:
        here, there = os.fstat(fd), os.stat(path, follow_symlinks=False)
    except OSError:
        return False
    return (here.st_dev, here.st_ino) == (there.st_dev, there.st_ino)


def _pid_in(path: str) -> int | None:
    """The pid written in the lock file at ``path`` (None when there is none to read)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        return _read_pid(fd)
    finally:
        os.close(fd)


def running_daemon_pid(state_dir: str) -> int | None:
    """The PID of the daemon holding ``state_dir``'s lock, or None when none runs.

    Only when the lock is really held (the directory's, or the file's for a
    ductile that locks only the file) *and* the PID written in the file is a
    live process: a leftover file with a dead (or reused) PID and a free lock
    gives None. The probe takes a shared lock on its own descriptors and
    drops it at once; it never creates anything.

    Called in the process that holds the lock, it returns that process's own
    PID (the new descriptor conflicts with the held one, and the file names
    us) — truthful, so a caller about to signal the daemon must not be the
    daemon. Raises :class:`LockError` when the lock cannot be probed at all.
    """
    root = os.path.abspath(state_dir)
    path = lock_path(root)
    held = _probe(root, os.O_RDONLY | os.O_DIRECTORY, what="the state dir")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise LockError(f"cannot open the lock file {path}: {exc.strerror}") from exc
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise LockError(f"the lock file {path} is not a regular file")
        if not held and not _probe_fd(fd, path):
            return None
        pid = _read_pid(fd)
    finally:
        os.close(fd)
    return pid if pid is not None and _alive(pid) else None


def _probe(path: str, flags: int, *, what: str) -> bool:
    """Is ``path`` locked by someone (False when it does not exist)?"""
    try:
        fd = os.open(path, flags | os.O_CLOEXEC | os.O_NONBLOCK)
    except FileNotFoundError:
        return False
    except OSError as exc:
        raise LockError(f"cannot open {what} {path}: {exc.strerror}") from exc
    try:
        return _probe_fd(fd, path)
    finally:
        os.close(fd)


def _probe_fd(fd: int, path: str) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno not in _BUSY:
            raise LockError(f"cannot probe the lock {path}: {exc.strerror}; {_LOCAL_HINT}") from exc
        return True
    fcntl.flock(fd, fcntl.LOCK_UN)
    return False


def lock_report(state_dir: str) -> tuple[bool, str]:
    """For ``ductile selfcheck``: (all is well, what the lock says). A stale lock file is
    harmless (the kernel dropped the lock with its holder); a daemon holding the directory
    whose lock file is gone is worth a word (``ductile reload`` cannot find it meanwhile)."""
    root = os.path.abspath(state_dir)
    path = lock_path(root)
    held = _probe(root, os.O_RDONLY | os.O_DIRECTORY, what="the state dir")
    exists = os.path.lexists(path)
    if exists and not held:
        held = _probe(path, os.O_RDONLY | os.O_NOFOLLOW, what="the lock file")
    pid = _pid_in(path) if exists else None
    if held and not exists:
        return False, (
            f"a daemon holds {root}, but its lock file {path} is missing: it puts it back within "
            "seconds; meanwhile ductile reload cannot find it"
        )
    if held:
        if pid is not None and _alive(pid):
            return True, f"held by the running daemon (pid {pid})"
        return False, f"held, but {path} names no live process (pid {pid or 'unknown'})"
    if not exists:
        return True, "free (no daemon runs here; no lock file yet)"
    if pid is None:
        return True, f"free; {path} holds no pid (harmless)"
    return True, (
        f"free; {path} names pid {pid}, a daemon that is gone: harmless, the lock was released "
        "with it and the file is reused at the next start"
    )


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").split("\n", 1)[0].strip()
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
