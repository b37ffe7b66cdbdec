"""What a plugin process is started with: the one builder of a spawn request.

The dispatcher (every job) and ``ductile status`` (its health checks) start
plugins the same way: the protocol request on stdin (v1 or v2, as the
plugin's manifest says), the command's timeout, and a controlled environment
(D5) — a short allow-list of the daemon's variables, the ones the operator
passes on by name (``env.pass``) or sets (``env.set``), and nothing else, so
no secret of the daemon's leaks into a plugin by accident — plus
``PYTHONPATH`` set to :data:`HELPER_PATH`, so a Python plugin imports
``ductile.plugin`` whichever interpreter its ``#!`` names (ADR 0020).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from ductile.domain.config import KILL_GRACE, EnvSettings, PluginConfig
from ductile.domain.job import Command, Job, SubmittedBy
from ductile.domain.plugin import Plugin
from ductile.domain.protocol import PROTOCOL_V1, build_request
from ductile.ports.spawner import SpawnRequest

#: Environment variables a plugin inherits from the daemon; nothing else leaks.
INHERITED_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR", "USER", "LOGNAME")
DEFAULT_PATH = "/usr/local/bin:/usr/bin:/bin"
#: The folder whose only package is a ``ductile`` that finds this ductile's ``ductile.plugin``
#: (``src/ductile/_helper_path``): every plugin's ``PYTHONPATH``.
HELPER_PATH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "_helper_path")
#: Set by ductile for every run; ``env.set`` cannot change them.
RESERVED_PREFIX = "DUCTILE_"


def plugin_env(base: Mapping[str, str], extra: EnvSettings | None = None) -> dict[str, str]:
    """The controlled environment of a plugin (D5): the allow-list of ``base`` (the daemon's
    environment), ``PYTHONPATH`` = :data:`HELPER_PATH` (never the daemon's own), then
    ``extra``'s passed names that ``base`` has, then its set values (the operator's word wins)."""
    env = {k: base[k] for k in INHERITED_ENV if k in base}
    env["PYTHONPATH"] = HELPER_PATH
    if extra is not None:
        env.update({k: base[k] for k in extra.passed or () if k in base})
        env.update(extra.values or {})
    env.setdefault("PATH", DEFAULT_PATH)
    env.setdefault("LANG", "C.UTF-8")
    return env


def request_context(job: Job, *, max_route_depth: int) -> dict[str, Any]:
    """A v2 request's ``context``: the instance's name; for a routed job where its event came
    from and how deep the chain is; for a scheduled job, its schedule."""
    context: dict[str, Any] = {"ductile_plugin": job.plugin}
    if job.submitted_by is SubmittedBy.ROUTE:
        source = job.payload.get("source") if isinstance(job.payload, dict) else None
        if isinstance(source, str):
            context["ductile_upstream_plugin"] = source
        context["ductile_route_depth"] = job.route_depth
        context["ductile_route_max_depth"] = max_route_depth
    if job.schedule_id is not None:
        context["ductile_schedule"] = job.schedule_id
    return context


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
    payload: dict[str, Any] | None = None,
    context: dict[str, Any] | None = None,
    watchdog: float | None = None,
    user: str | None = None,
) -> SpawnRequest:
    """How to start ``plugin`` for one run of ``command``: the request on its stdin (in the
    protocol its manifest declares; ``payload`` and ``context`` reach a v2 plugin only), its
    environment (``base_env``, from :func:`plugin_env`, plus the ``DUCTILE_*`` variables),
    the deadline of its command's timeout from ``now``, the ``user`` it runs as
    (:meth:`~ductile.domain.config.Config.run_as`; None: the daemon's) and (``watchdog``, on a
    shared store) the seconds left until its claim's deadline."""
    timeout = settings.timeouts.for_command(command)
    stdin = build_request(
        job_id=job_id,
        command=command,
        config=dict(settings.config),
        state=state,
        deadline_at=now + timeout,
        event=event,
        protocol=plugin.protocol,
        payload=payload,
        context=context if context is not None else {"ductile_plugin": plugin.name},
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
        interpreter=plugin.interpreter,
        cwd=plugin.directory,
        stdin=stdin,
        env=env,
        timeout=timeout.total_seconds(),
        grace=KILL_GRACE.total_seconds(),
        watchdog=watchdog,
        user=user,
    )


def job_request_parts(
    job: Job, *, protocol: int, max_route_depth: int
) -> tuple[dict[str, Any] | None, dict[str, Any] | None, dict[str, Any] | None]:
    """(event, payload, context) of ``job``'s request: the event for ``handle``; the payload
    for any other command and the context, for a v2 plugin only."""
    event = job.payload if job.command == Command.HANDLE else None
    if protocol == PROTOCOL_V1:
        return event, None, None
    payload = job.payload if job.command != Command.HANDLE and job.payload else None
    return event, payload, request_context(job, max_route_depth=max_route_depth)
