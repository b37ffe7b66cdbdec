"""Intake: how a job asked for from outside the engine is queued.

Webhooks, ``ductile run``, an embedding application and the simulation's
arrivals all queue their jobs here: refused when the plugin cannot run (unless
the caller keeps the delivery anyway), durably stored, logged, and the
dispatcher woken.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from ductile.app.runtime import Runtime
from ductile.domain.errors import DuctileError
from ductile.domain.job import Actor, SubmittedBy
from ductile.log import Log
from ductile.ports.store import EnqueueResult, Store

_log = Log("intake")


class EnqueueRefusedError(DuctileError):
    """A job was asked for a plugin or command that cannot run."""


async def enqueue(
    plugin: str,
    *,
    runtime: Runtime,
    store: Store,
    now: datetime,
    new_id: Callable[[], str],
    notify: Callable[[], None],
    command: str,
    payload: dict[str, Any] | None,
    dedupe_key: str | None,
    submitted_by: SubmittedBy,
    strict: bool,
) -> EnqueueResult:
    """Durably queue one job. With ``strict``, refuse a plugin or command
    that cannot run now (CLI, API); webhooks pass ``strict=False`` so a
    delivery is kept even while its plugin is broken — it will fail fast
    with the reason, visible in ``ductile job``."""
    if strict:
        reason = runtime.why_not_runnable(plugin, command)
        if reason is not None:
            raise EnqueueRefusedError(reason)
    job = runtime.config.new_job(
        plugin,
        command,
        job_id=new_id(),
        now=now,
        submitted_by=submitted_by,
        payload=payload,
        dedupe_key=dedupe_key,
    )
    result = await store.enqueue(
        job, actor=Actor(submitted_by.value), now=now, dedupe_ttl=runtime.config.service.dedupe_ttl
    )
    job_log = _log.bind(plugin=plugin, job_id=result.job_id)
    if result.created:
        job_log.info(f"job queued ({command})", submitted_by=submitted_by.value)
        notify()
    else:
        job_log.info(f"duplicate dropped: dedupe_key {dedupe_key!r} matches job {result.job_id}")
    return result
