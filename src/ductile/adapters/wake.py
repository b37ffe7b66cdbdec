"""A cross-process wake-up: a FIFO in the state directory (ADR 0024).

The store is the source of truth; this is only a hint that it changed. The
daemon holds ``<state_dir>/wake.fifo`` open for reading (and, so the pipe
never reports end-of-file when no writer is left, for writing too); another
process that queued a job or cancelled one (``ductile run``, ``ductile
retry``...) writes one byte with :func:`wake`. The daemon's event loop
drains the pipe and wakes its dispatcher and its activity feed at once,
instead of noticing the change at its next poll (up to a second later).

Every failure is harmless by design: no daemon (nobody reads: ``ENXIO``), a
full pipe (wakes already pending), a missing or planted file — the writer
gives up silently and the daemon notices the change at its next poll anyway.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import stat
from collections.abc import Callable

from ductile.log import Log

WAKE_NAME = "wake.fifo"
_log = Log("wake")


def wake_path(state_dir: str) -> str:
    return os.path.join(state_dir, WAKE_NAME)


def wake(state_dir: str) -> bool:
    """Tell the daemon of ``state_dir`` that the store changed; True when a daemon listens."""
    flags = os.O_WRONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(wake_path(state_dir), flags)
    except OSError:  # ENXIO: no reader (no daemon); ENOENT; ELOOP: a planted symlink
        return False
    try:
        if not stat.S_ISFIFO(os.fstat(fd).st_mode):
            return False
        with contextlib.suppress(BlockingIOError):  # full: wake-ups are already pending
            os.write(fd, b"!")
    except OSError:
        return False
    finally:
        os.close(fd)
    return True


class WakeListener:
    """The daemon's end: calls ``on_wake`` once per burst of wake-ups, on the event loop."""

    def __init__(self, state_dir: str, on_wake: Callable[[], None]) -> None:
        self.path = wake_path(state_dir)
        self._on_wake = on_wake
        self._read_fd: int | None = None
        self._keep_fd: int | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self) -> bool:
        """Create (or re-create) the FIFO and listen; False (logged) when it cannot, which
        only costs latency: the daemon still polls."""
        try:
            self._make_fifo()
            flags = os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC
            self._read_fd = os.open(self.path, os.O_RDONLY | flags)
            self._keep_fd = os.open(self.path, os.O_WRONLY | flags)
        except OSError as e:
            self.close()
            _log.warning(f"cross-process wake-ups are off ({self.path}: {e.strerror or e}); polling instead")
            return False
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self._read_fd, self._drain)
        return True

    def _make_fifo(self) -> None:
        try:
            info = os.lstat(self.path)
        except FileNotFoundError:
            os.mkfifo(self.path, 0o600)
            return
        if not stat.S_ISFIFO(info.st_mode) or info.st_uid != os.geteuid():
            os.unlink(self.path)  # not ours, or not a FIFO: replace it (the lock is ours)
            os.mkfifo(self.path, 0o600)

    def _drain(self) -> None:
        fd = self._read_fd
        if fd is None:
            return
        while True:
            try:
                chunk = os.read(fd, 4096)
            except BlockingIOError:
                break
            except OSError as e:
                if e.errno == errno.EINTR:
                    continue
                break
            if not chunk:
                break
        self._on_wake()

    def close(self) -> None:
        """Stop listening; idempotent. The FIFO stays (a later daemon reuses it)."""
        if self._loop is not None and self._read_fd is not None:
            with contextlib.suppress(Exception):
                self._loop.remove_reader(self._read_fd)
        for fd in (self._read_fd, self._keep_fd):
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._read_fd = self._keep_fd = None
        self._loop = None
