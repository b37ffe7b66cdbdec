"""Processes seen through ``/proc``, and signalling a process group.

The spawner starts every plugin as the leader of its own process group, so
the group id is the leader's pid (see :mod:`ductile.adapters.spawner.run`).
Two facts make signalling such a group safe (PITFALLS.md, "Processes"):

- a pid can be reused once its process is reaped, so a recorded leader is
  identified by its pid *and* its start time (field 22 of
  ``/proc/<pid>/stat``), never by its pid alone;
- a group id cannot be reused while the group still has members, so
  ``killpg`` on a group with live members hits exactly them.

:func:`kill_orphan` applies both to a group left running by a daemon that was
SIGKILLed (its plugin was re-parented to PID 1 and still runs): crash
recovery kills it before re-queueing the job, so the job never runs twice at
once.

Linux only: ``/proc/<pid>/stat`` for start times and group members.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator

import attrs

from ductile.ports.spawner import ProcessHandle


@attrs.frozen
class ProcStat:
    """The fields of ``/proc/<pid>/stat`` that the spawner needs."""

    #: Field 3: R, S, D, Z (zombie), T, X (dead)...
    state: str
    #: Field 5: the process group id.
    pgrp: int
    #: Field 22: start time in clock ticks since boot.
    start_time: int

    @property
    def alive(self) -> bool:
        """Not a zombie (nor dead): signalling it can still change something."""
        return self.state not in ("Z", "X", "x")


def parse_proc_stat(data: bytes) -> ProcStat:
    """Parse one ``/proc/<pid>/stat`` line.

    Field 2, the command name in parentheses, may itself contain spaces and
    parentheses (a process can name itself ``a) 1 2 (b``): the fields are
    counted from just after the *last* ``)``.
    """
    close = data.rfind(b")")
    fields = data[close + 1 :].split() if close >= 0 else []
    # After the comm: field 3 is fields[0], so field n is fields[n - 3].
    if len(fields) < 20:
        raise ValueError(f"not a /proc/<pid>/stat line: {data[:120]!r}")
    try:
        return ProcStat(
            state=fields[0].decode("ascii", "replace"),
            pgrp=int(fields[2]),
            start_time=int(fields[19]),
        )
    except ValueError:
        raise ValueError(f"not a /proc/<pid>/stat line: {data[:120]!r}") from None


def read_proc_stat(pid: int) -> ProcStat | None:
    """The stat of process ``pid``, or None if there is no such process."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return parse_proc_stat(data)


def _all_pids() -> Iterator[int]:
    for name in os.listdir("/proc"):
        if name.isdigit():
            yield int(name)


def group_members(pgid: int) -> list[int]:
    """Pids of the live (non-zombie) processes whose process group is ``pgid``."""
    members = []
    for pid in _all_pids():
        try:
            stat = read_proc_stat(pid)
        except ValueError:  # vanished half-way or unreadable: not ours to judge
            continue
        if stat is not None and stat.pgrp == pgid and stat.alive:
            members.append(pid)
    return members


def killpg(pgid: int, sig: int) -> bool:
    """Signal a group; False if it is gone (or not ours to signal)."""
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def kill_orphan(handle: ProcessHandle) -> bool:
    """SIGKILL the group of a process left by a crashed daemon (D6).

    - The leader exists with the recorded start time: SIGKILL its group.
    - A process with that pid exists but started at another time: the pid
      was reused by someone else; nothing is signalled.
    - No process has that pid: SIGKILL the group if live members remain
      (found in /proc by their process group id).
    """
    try:
        leader = read_proc_stat(handle.pid)
    except ValueError:
        return False  # unreadable: never guess
    if leader is not None:
        if leader.start_time != handle.start_time:
            return False
        return killpg(handle.pgid, signal.SIGKILL)
    if not group_members(handle.pgid):
        return False
    # A group id cannot be reused while the group has members, so killpg
    # hits exactly them, including any forked since the scan.
    return killpg(handle.pgid, signal.SIGKILL)
