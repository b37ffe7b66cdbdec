"""SubprocessSpawner: the real :class:`~ductile.ports.spawner.Spawner` (D4, D5, D6).

Each job is one real process in its own process group. This module starts it
and names what went wrong when it cannot be started;
:class:`~ductile.adapters.spawner.run.ProcessRun` then takes the run to its
end, and :func:`~ductile.adapters.spawner.proc.kill_orphan` deals with the
groups a crashed daemon left behind.

The entrypoint is executed directly (no shell; its shebang picks the
interpreter) with ``close_fds``, the request's environment only, and
``start_new_session=True``: the plugin leads a new session and process group
whose id is its pid, so everything it forks can be signalled at once with
``os.killpg`` (``Popen.kill()`` would hit the leader only).
"""

from __future__ import annotations

import errno
import os
import subprocess
import time

from ductile.adapters.spawner.proc import kill_orphan
from ductile.adapters.spawner.run import ProcessRun
from ductile.domain.outcome import SpawnOutcome
from ductile.ports.spawner import OnStart, ProcessHandle, SpawnRequest

#: Size of one read from a pipe (and of one write to stdin).
CHUNK = 64 * 1024
#: How long the pipes are drained after the plugin exited (its group killed).
DRAIN_TIMEOUT = 1.0
#: Bytes read from an executable's first line to name a bad interpreter.
_SHEBANG_PEEK = 256
#: Spawn errors that are the machine's (or the daemon's) shortage, not the plugin's fault: too many
#: open files (the process's, the system's), too many processes, no memory. Not an attempt.
OUT_OF_RESOURCES = frozenset({errno.EMFILE, errno.ENFILE, errno.EAGAIN, errno.ENOMEM})


class SubprocessSpawner:
    """The real :class:`~ductile.ports.spawner.Spawner`."""

    def __init__(self, *, drain_timeout: float = DRAIN_TIMEOUT, chunk_size: int = CHUNK) -> None:
        self.drain_timeout = drain_timeout
        self.chunk_size = chunk_size

    async def run(self, request: SpawnRequest, *, on_start: OnStart | None = None) -> SpawnOutcome:
        started = time.monotonic()
        if not os.path.isabs(request.executable):
            # A bare name would be looked up on PATH, a relative one in cwd: neither is meant.
            return SpawnOutcome(
                spawn_error=f"{request.executable}: the executable must be an absolute path",
                duration=time.monotonic() - started,
            )
        try:
            # Popen returns once the exec succeeded or failed (fork + exec: about a
            # millisecond); it never waits for the plugin itself.
            proc = subprocess.Popen(  # noqa: ASYNC220
                [request.executable],
                executable=request.executable,
                cwd=request.cwd,
                env=dict(request.env),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,
                close_fds=True,
                bufsize=0,
            )
        except (OSError, ValueError, TypeError) as exc:
            # OSError: exec failed (ENOENT, EACCES, ENOEXEC...) or no resources
            # (EMFILE, EAGAIN); ValueError/TypeError: an unusable environment.
            # Popen has reaped the failed child already.
            return SpawnOutcome(
                spawn_error=describe_spawn_error(exc, request),
                duration=time.monotonic() - started,
                out_of_resources=isinstance(exc, OSError) and exc.errno in OUT_OF_RESOURCES,
            )
        run = ProcessRun(proc, request, started, drain_timeout=self.drain_timeout, chunk_size=self.chunk_size)
        return await run.run(on_start)

    async def kill_orphan(self, handle: ProcessHandle) -> bool:
        """SIGKILL the group of a process left by a crashed daemon (D6); see
        :func:`~ductile.adapters.spawner.proc.kill_orphan`."""
        return kill_orphan(handle)


# --------------------------------------------------------------------------
# Exec failures


def _first_line(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read(_SHEBANG_PEEK).split(b"\n", 1)[0]
    except OSError:
        return b""


def describe_spawn_error(exc: BaseException, request: SpawnRequest) -> str:
    """A message naming what could not be started and why."""
    exe = request.executable
    if not isinstance(exc, OSError):
        return f"{exe}: cannot start: {exc}"
    code = errno.errorcode.get(exc.errno or 0, str(exc.errno))
    why = f"{exc.strerror or exc} ({code})"
    if exc.filename is not None and exc.filename == request.cwd and exc.filename != exe:
        return f"{exe}: working directory {request.cwd}: {why}"
    if exc.errno in (errno.ENOENT, errno.EACCES) and os.path.isfile(exe):
        if exc.errno == errno.EACCES and not os.access(exe, os.X_OK):
            return f"{exe}: not executable: {why}"
        line = _first_line(exe)
        if line.startswith(b"#!"):
            # The file is there and may be run: its interpreter could not be.
            interpreter = line[2:].decode("utf-8", "replace").strip()
            return f"{exe}: bad interpreter {interpreter!r}: {why}"
    if exc.errno == errno.ENOEXEC:
        return f"{exe}: not a program (no #! line, not a binary this system runs): {why}"
    return f"{exe}: {why}"
