"""What a plugin process is started with: the one builder of a spawn request.

The dispatcher (every job) and ``ductile status`` (its health checks) start
plugins the same way: the protocol request on stdin, the command's timeout,
and a controlled environment (D5) — a short allow-list of the daemon's
variables and nothing else, so no secret of the daemon's leaks into a plugin
by accident — plus ``PYTHONPATH`` set to :data:`HELPER_PATH`, so a Python
plugin imports ``ductile.plugin`` whichever interpreter its ``#!`` names (ADR 0020).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from ductile.domain.config import KILL_GRACE, PluginConfig
from ductile.domain.plugin import Plugin
from ductile.domain.protocol import build_request
from ductile.ports.spawner import SpawnRequest

#: Environment variables a plugin inherits from the daemon; nothing else leaks.
INHERITED_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR", "USER", "LOGNAME")
DEFAULT_PATH = "/usr/local/bin:/usr/bin:/bin"
#: The folder whose only package is a ``ductile`` that finds this ductile's ``ductile.plugin``
#: (``src/ductile/_helper_path``): every plugin's ``PYTHONPATH``.
HELPER_PATH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "_helper_path")


def plugin_env(base: Mapping[str, str]) -> dict[str, str]:
    """The controlled environment of every plugin (D5): a short allow-list, and
    ``PYTHONPATH`` = :data:`HELPER_PATH` (never the daemon's own)."""
    env = {k: base[k] for k in INHERITED_ENV if k in base}
    env["PYTHONPATH"] = HELPER_PATH
    env.setdefault("PATH", DEFAULT_PATH)
    env.setdefault("LANG", "C.UTF-8")
    return env


def spawn_request(
    plugin: Plugin,
    command: str,
    *,
    job_id: str,
    attempt: int,
    settings: PluginConfig,
    state: dict[str, Any],
    now: datetime,
    base_env: Mapping[str, str],
    event: dict[str, Any] | None = None,
    watchdog: float | None = None,
) -> SpawnRequest:
    """How to start ``plugin`` for one run of ``command``: the request on its stdin
    (protocol v1), its environment (``base_env``, from :func:`plugin_env`, plus the
    ``DUCTILE_*`` variables), the deadline of its command's timeout from ``now``, and
    (``watchdog``, on a shared store) the seconds left until its claim's deadline."""
    timeout = settings.timeouts.for_command(command)
    stdin = build_request(
        job_id=job_id,
        command=command,
        config=dict(settings.config),
        state=state,
        deadline_at=now + timeout,
        event=event,
    )
    env = dict(base_env)
    env.update(
        DUCTILE_PLUGIN=plugin.name,
        DUCTILE_COMMAND=command,
        DUCTILE_JOB_ID=job_id,
        DUCTILE_ATTEMPT=str(attempt),
    )
    return SpawnRequest(
        executable=plugin.executable,
        cwd=plugin.directory,
        stdin=stdin,
        env=env,
        timeout=timeout.total_seconds(),
        grace=KILL_GRACE.total_seconds(),
        watchdog=watchdog,
    )
