"""File descriptors: the soft limit raised to the hard one, and a reserve kept for the work itself.

Each open HTTP connection holds a descriptor; so does each pipe of a running
plugin, each SQLite file and the listener itself. With the usual soft limit of
1,024 (512 in the report of issue 19, item 11), enough idle connections made
every plugin spawn fail with "Too many open files". So:

- ``ductile start`` raises the soft ``RLIMIT_NOFILE`` to the hard limit
  (:func:`raise_soft_limit`; systemd's default hard limit is 524,288);
- the listener caps its connections (:func:`connection_budget`) so that
  :data:`RESERVE` descriptors always stay free for spawns (four per running
  plugin: three pipes and a pidfd), the database (six: three files, two
  connections) and the rest;
- a spawn that still fails for lack of descriptors (or processes, or memory)
  is not an attempt of the plugin: the dispatcher puts the job back, neither
  its attempts nor its breaker count it (``SpawnOutcome.out_of_resources``).
"""

from __future__ import annotations

import contextlib
import os
import resource

#: Descriptors kept free beyond the HTTP connections.
RESERVE = 64
#: The most descriptors asked for when the hard limit is "unlimited" (Linux's default fs.nr_open).
_UNLIMITED = 1 << 20


def soft_limit() -> int:
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return _UNLIMITED if soft == resource.RLIM_INFINITY else soft


def raise_soft_limit() -> tuple[int, int]:
    """Raise the soft ``RLIMIT_NOFILE`` to the hard limit: (before, after). Never raises:
    when the kernel refuses (a hard limit over ``fs.nr_open``), the soft limit stays."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = _UNLIMITED if hard == resource.RLIM_INFINITY else hard
    if soft != resource.RLIM_INFINITY and soft < wanted:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    return soft, soft_limit()


def open_descriptors() -> int:
    """How many descriptors the process has open now (a guess of 32 where /proc cannot tell)."""
    try:
        return len(os.listdir("/proc/self/fd")) - 1  # minus the one listing them
    except OSError:
        return 32


def connection_budget(wanted: int, *, reserve: int = RESERVE) -> int:
    """How many HTTP connections may be open at once: ``wanted``, or fewer so that ``reserve``
    descriptors stay free under the soft limit (at least 1)."""
    room = soft_limit() - open_descriptors() - reserve
    return max(1, min(wanted, room))
