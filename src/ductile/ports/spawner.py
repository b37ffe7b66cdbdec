"""Spawner: run one plugin command as one process (D4, D5)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Protocol

import attrs

from ductile.domain.outcome import STDERR_CAP, STDERR_KEEP, STDOUT_CAP, SpawnOutcome


@attrs.frozen(kw_only=True)
class SpawnRequest:
    #: Absolute path of the entrypoint, executed directly (no shell).
    executable: str
    #: When set, the absolute path of the program that runs ``executable`` (its only argument).
    interpreter: str | None = None
    #: Working directory (the plugin's directory).
    cwd: str
    #: The request JSON, written to stdin, which is then closed.
    stdin: bytes
    #: The child's whole environment (not merged with the daemon's).
    env: Mapping[str, str]
    #: Seconds until SIGTERM to the process group.
    timeout: float
    #: Seconds between SIGTERM and SIGKILL.
    grace: float = 5.0
    #: Seconds from the spawn by which nothing of the run may live, even if the daemon dies or
    #: freezes (a shared store's claim deadline, ADR 0035): the plugin then runs under a
    #: watchdog process of its own. None: no watchdog (a store of one process).
    watchdog: float | None = None
    stdout_cap: int = STDOUT_CAP
    stderr_cap: int = STDERR_CAP
    stderr_keep: int = STDERR_KEEP
    #: Run as this user (a name or a uid; ``service.plugin_user``, ``plugins.<name>.user``):
    #: uid, gid and groups switched in the child, ``HOME``/``USER``/``LOGNAME`` set to that
    #: user's. None: as the daemon's own user.
    user: str | None = None


@attrs.frozen(kw_only=True)
class ProcessHandle:
    """Enough to find a plugin's process group again after a crash, safely."""

    pid: int
    pgid: int
    #: The leader's start time (``/proc/<pid>/stat`` field 22, clock ticks
    #: since boot): a reused pid has a different one, and is never signalled.
    start_time: int


OnStart = Callable[[ProcessHandle], Awaitable[None]]


class Spawner(Protocol):
    async def run(self, request: SpawnRequest, *, on_start: OnStart | None = None) -> SpawnOutcome:
        """Run the process to completion or deadline; nothing of its group survives.

        ``on_start`` is awaited once the process exists, before its output is
        awaited, so the caller can record the handle durably.
        """
        ...

    async def kill_orphan(self, handle: ProcessHandle) -> bool:
        """Kill the group of a process left by a crashed daemon.

        Only when the leader still exists with the recorded start time (or,
        the leader gone, when members of the group remain); returns True if
        anything was signalled.
        """
        ...
