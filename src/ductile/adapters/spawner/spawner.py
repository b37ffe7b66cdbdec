"""SubprocessSpawner: the real :class:`~ductile.ports.spawner.Spawner` (D4, D5, D6).

Each job is one real process in its own process group. This module starts it
(:mod:`.diagnose` names what went wrong when it could not really start);
:class:`~ductile.adapters.spawner.run.ProcessRun` then takes the run to its
end, and :func:`~ductile.adapters.spawner.proc.kill_orphan` deals with the
groups a crashed daemon left behind.

The entrypoint is executed directly (no shell; its shebang picks the
interpreter) with ``close_fds``, the request's environment only, and
``start_new_session=True``: the plugin leads a new session and process group
whose id is its pid, so everything it forks can be signalled at once with
``os.killpg`` (``Popen.kill()`` would hit the leader only). A request with a
``user`` runs as that user (:mod:`ductile.adapters.runas`): the child sets
its groups, gid and uid before ``exec``, and gets that user's ``HOME``,
``USER`` and ``LOGNAME``.

A request with a ``watchdog`` (a shared store's claim, ADR 0035) runs under
coreutils ``timeout`` instead: ``timeout -s TERM -k <grace> <limit>
<entrypoint>`` leads the new process group and the plugin is its child, so
even when the daemon is SIGKILLed or frozen, the whole group gets SIGTERM at
``limit`` and SIGKILL ``grace`` later, before the claim's deadline. The
daemon's own deadline (``request.timeout``) comes first; the watchdog is the
backstop. Its pid is the group's id, as the plugin's is without it; an
entrypoint ``timeout`` could not run is reported as the exec failure it was.
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import time
from typing import Any

from ductile.adapters.runas import RunAsError, resolve
from ductile.adapters.spawner.diagnose import Diagnosis, after_exit, exec_failure
from ductile.adapters.spawner.proc import kill_orphan
from ductile.adapters.spawner.run import ProcessRun
from ductile.domain.outcome import SpawnOutcome
from ductile.ports.spawner import OnStart, ProcessHandle, SpawnRequest

#: Size of one read from a pipe (and of one write to stdin).
CHUNK = 64 * 1024
#: How long the pipes are drained after the plugin exited (its group killed).
DRAIN_TIMEOUT = 1.0
#: Seconds the watchdog's SIGKILL keeps clear of the claim's deadline.
WATCHDOG_MARGIN = 0.5
#: What coreutils ``timeout`` prints (after its own name) when it cannot run the command (exit 126 or 127).
_WATCHDOG_EXEC_FAILED = b": failed to run command"
#: Spawn errors that are the machine's (or the daemon's) shortage, not the plugin's fault: too many
#: open files (the process's, the system's), too many processes, no memory. Not an attempt.
OUT_OF_RESOURCES = frozenset({errno.EMFILE, errno.ENFILE, errno.EAGAIN, errno.ENOMEM})


class SubprocessSpawner:
    """The real :class:`~ductile.ports.spawner.Spawner`."""

    def __init__(
        self, *, drain_timeout: float = DRAIN_TIMEOUT, chunk_size: int = CHUNK, watchdog: str | None = None
    ) -> None:
        self.drain_timeout = drain_timeout
        self.chunk_size = chunk_size
        #: coreutils ``timeout`` (found on PATH when first needed, unless given).
        self._watchdog = watchdog

    def watchdog_program(self) -> str | None:
        """The ``timeout`` program requests with a watchdog run under (None: not installed)."""
        if self._watchdog is None:
            self._watchdog = shutil.which("timeout") or ""
        return self._watchdog or None

    async def run(self, request: SpawnRequest, *, on_start: OnStart | None = None) -> SpawnOutcome:
        started = time.monotonic()
        if not os.path.isabs(request.executable):
            # A bare name would be looked up on PATH, a relative one in cwd: neither is meant.
            return SpawnOutcome(
                spawn_error=f"{request.executable}: the executable must be an absolute path",
                duration=time.monotonic() - started,
            )
        argv, refusal = self._argv(request)
        if refusal is not None:
            return SpawnOutcome(
                spawn_error=refusal.message, start_failure=refusal.kind, duration=time.monotonic() - started
            )
        env = dict(request.env)
        try:
            switch = _as_user(request, env)
        except RunAsError as exc:  # deleted since load (discovery refuses an unknown user)
            return SpawnOutcome(spawn_error=f"{request.executable}: {exc}", duration=0.0)
        try:
            # Popen returns once the exec succeeded or failed (fork + exec: about a
            # millisecond); it never waits for the plugin itself.
            proc = subprocess.Popen(  # noqa: ASYNC220
                argv,
                executable=argv[0],
                cwd=request.cwd,
                env=env,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,
                close_fds=True,
                bufsize=0,
                **switch,
            )
        except (OSError, ValueError, TypeError) as exc:
            # OSError: exec failed (ENOENT, EACCES, ENOEXEC...) or no resources
            # (EMFILE, EAGAIN); ValueError/TypeError: an unusable environment.
            # Popen has reaped the failed child already.
            found = exec_failure(exc, request)
            return SpawnOutcome(
                spawn_error=found.message,
                start_failure=found.kind,
                duration=time.monotonic() - started,
                out_of_resources=isinstance(exc, OSError) and exc.errno in OUT_OF_RESOURCES,
            )
        run = ProcessRun(proc, request, started, drain_timeout=self.drain_timeout, chunk_size=self.chunk_size)
        outcome = await run.run(on_start)
        if outcome.exit_code in (1, 126, 127) and not outcome.stdout:
            # Perhaps the plugin never started (env found no interpreter, an import failed).
            outcome = after_exit(outcome, request)
        if request.watchdog is not None and outcome.spawn_error is None:
            return _exec_failure_under_watchdog(outcome, request)
        return outcome

    def _argv(self, request: SpawnRequest) -> tuple[list[str], Diagnosis | None]:
        """The command line (the entrypoint, or the interpreter running it for a built-in; under a
        shared store's watchdog), or why nothing may run."""
        target = (
            [request.executable] if request.interpreter is None else [request.interpreter, request.executable]
        )
        if request.watchdog is None:
            return target, None
        limit = request.watchdog - request.grace - WATCHDOG_MARGIN
        if limit <= 0:
            return [], Diagnosis(
                None,
                f"{request.executable}: not started: its claim's deadline is less than the kill grace "
                f"({request.grace:g} s) away",
            )
        program = self.watchdog_program()
        if program is None:
            return [], Diagnosis(
                None, "the watchdog a shared store needs (coreutils 'timeout') is not installed"
            )
        if request.interpreter is None and not os.access(request.executable, os.X_OK):
            # the exec failure, named as without the watchdog
            code = errno.ENOENT if not os.path.exists(request.executable) else errno.EACCES
            return [], exec_failure(OSError(code, os.strerror(code), request.executable), request)
        return [program, "-s", "TERM", "-k", f"{request.grace:g}s", f"{limit:.3f}s", *target], None

    async def kill_orphan(self, handle: ProcessHandle) -> bool:
        """SIGKILL the group of a process left by a crashed daemon (D6); see
        :func:`~ductile.adapters.spawner.proc.kill_orphan`."""
        return kill_orphan(handle)


def _as_user(request: SpawnRequest, env: dict[str, str]) -> dict[str, Any]:
    """Popen's arguments to run as ``request.user`` (its HOME, USER and LOGNAME set in ``env``);
    empty when it runs as the daemon's own user. :class:`RunAsError` for a user gone since load."""
    if request.user is None:
        return {}
    who = resolve(request.user)
    if who.uid == os.geteuid():
        return {}
    env.update(HOME=who.home, USER=who.name, LOGNAME=who.name)
    return {"user": who.uid, "group": who.gid, "extra_groups": list(who.groups)}


# --------------------------------------------------------------------------
# Exec failures


def _exec_failure_under_watchdog(outcome: SpawnOutcome, request: SpawnRequest) -> SpawnOutcome:
    """``timeout`` exits 126/127 when it cannot run the entrypoint (a bad interpreter, most
    likely: the entrypoint itself was checked): the exec failure it is, named as without it."""
    first_line = outcome.stderr_tail.split(b"\n", 1)[0]
    if outcome.exit_code not in (126, 127) or _WATCHDOG_EXEC_FAILED not in first_line:
        return outcome
    code = errno.ENOENT if outcome.exit_code == 127 else errno.EACCES
    found = exec_failure(OSError(code, os.strerror(code), request.executable), request)
    return SpawnOutcome(spawn_error=found.message, start_failure=found.kind, duration=outcome.duration)


def describe_spawn_error(exc: BaseException, request: SpawnRequest) -> str:
    """A message naming what could not be started and why (:func:`.diagnose.exec_failure`)."""
    return exec_failure(exc, request).message
