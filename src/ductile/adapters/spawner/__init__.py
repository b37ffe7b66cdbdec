"""The subprocess spawner: each job is one real process in its own process group.

Read in this order:

- :mod:`~ductile.adapters.spawner.spawner`: :class:`SubprocessSpawner`, the
  port adapter: it starts the process (no shell, its own session and process
  group);
- :mod:`~ductile.adapters.spawner.diagnose`: why a plugin could not really
  start (no ``#!`` line, no interpreter, a CRLF ``#!`` line, an import error),
  after the fact and, for ``config check``, before the first run;
- :mod:`~ductile.adapters.spawner.run`: :class:`ProcessRun`, one run to its
  end: stdin fed from its own task, capped reads into buffers we own, the
  leader's exit seen through a pidfd, the deadline and the grace period, the
  reap;
- :mod:`~ductile.adapters.spawner.proc`: ``/proc`` (start times, group
  members) and ``killpg``, and the orphan kill of crash recovery.

Out of reach: a descendant that calls ``setsid()`` (or ``setpgid``) leaves the
process group and survives ``killpg``. Only a cgroup contains it: run the
daemon under systemd with ``KillMode=control-group`` (the default for
services), or give each job its own cgroup. Such an escapee can also hold a
pipe open; the drain deadline keeps it from stalling the job.

Linux only: pidfds, ``/proc/<pid>/stat`` for start times and group members.
"""

from ductile.adapters.spawner.diagnose import preflight, preflight_all
from ductile.adapters.spawner.proc import ProcStat, group_members, parse_proc_stat, read_proc_stat
from ductile.adapters.spawner.spawner import SubprocessSpawner, describe_spawn_error

__all__ = [
    "ProcStat",
    "SubprocessSpawner",
    "describe_spawn_error",
    "group_members",
    "parse_proc_stat",
    "preflight",
    "preflight_all",
    "read_proc_stat",
]
