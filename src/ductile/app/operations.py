"""The operator's service functions: what the CLI and the HTTP API both do, written once.

``ductile jobs`` and ``GET /jobs``, ``ductile retry`` and ``POST /job/{id}/retry``,
``ductile cancel``, ``ductile job``, ``ductile reset``, ``GET /plugin/{p}``...
call these functions with a store and a runtime; each front end only parses
its input and renders the answer. Errors are typed so each front end maps
them the same way: :class:`NotFoundError` (404 / exit 1),
:class:`AmbiguousIdError` and :class:`ConflictError` (409 / exit 1).

Job ids may be given whole or as an unambiguous prefix of at least
:data:`MIN_PREFIX` characters, everywhere an id is taken.

The intake path and the runtime are imported by the functions that use them:
``ductile job`` resolves an id here and reads, and needs neither (issue 18).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from ductile.app.views import breaker_json, job_detail, job_json, run_json, store_health, utc
from ductile.domain import breaker as br
from ductile.domain.config import Config
from ductile.domain.errors import DuctileError
from ductile.domain.job import Actor, Job, JobStatus, SubmittedBy
from ductile.domain.lifecycle import Alerts
from ductile.domain.schedule import schedule_key
from ductile.domain.state import serialize_state
from ductile.ports.store import EnqueueResult, JobPage, JobQuery, NotQueuedError, RunView, Store

if TYPE_CHECKING:
    from ductile.app.runtime import Runtime
    from ductile.app.tick_report import TickReport

#: The shortest id prefix accepted in place of a whole id.
MIN_PREFIX = 8
#: Config keys whose values are never shown (``GET /plugin/{p}``): they look like secrets.
SECRET_KEY = re.compile(r"secret|token|passw|key|credential|auth|private|cookie|session", re.IGNORECASE)
MASK = "********"


class NotFoundError(DuctileError):
    """No such job or plugin."""


class AmbiguousIdError(DuctileError):
    """An id prefix matches more than one job."""

    def __init__(self, prefix: str, matches: list[str]) -> None:
        shown = ", ".join(matches[:5]) + (", ..." if len(matches) > 5 else "")
        super().__init__(f"job id prefix {prefix!r} is ambiguous: it matches {shown}; give more characters")
        self.matches = matches


class ConflictError(DuctileError):
    """The job is not in a state that allows what was asked."""


# ----------------------------------------------------------------------------- jobs


async def resolve_job_id(store: Store, text: str) -> str:
    """The id ``text`` names: the whole id, or the one job whose id starts with ``text``
    (at least :data:`MIN_PREFIX` characters)."""
    if await store.get_job(text) is not None:
        return text
    if len(text) < MIN_PREFIX:
        raise NotFoundError(f"no job with id {text!r} (an id prefix needs at least {MIN_PREFIX} characters)")
    matches = await store.job_ids_with_prefix(text, limit=6)
    if not matches:
        raise NotFoundError(f"no job with id {text}")
    if len(matches) > 1:
        raise AmbiguousIdError(text, matches)
    return matches[0]


async def find_job(store: Store, text: str) -> Job:
    job = await store.get_job(await resolve_job_id(store, text))
    if job is None:  # deleted between the two reads (retention)
        raise NotFoundError(f"no job with id {text}")
    return job


async def show_job(store: Store, text: str) -> dict[str, Any]:
    """``ductile job --json`` / ``GET /job/{id}``: record, transitions, runs, children."""
    job = await find_job(store, text)
    children = await store.find_jobs(JobQuery(parent=job.id, limit=500))
    return job_detail(
        job, await store.transitions(job.id), await store.runs(job.id), children=list(children.jobs)
    )


async def list_jobs(store: Store, query: JobQuery) -> JobPage:
    """``ductile jobs`` / ``GET /jobs``."""
    return await store.find_jobs(query)


async def retry_job(
    store: Store,
    runtime: Runtime,
    text: str,
    *,
    submitted_by: SubmittedBy,
    now: datetime,
    new_id: Callable[[], str],
    notify: Callable[[], None] | None = None,
) -> tuple[Job, EnqueueResult]:
    """Queue a dead or succeeded job again, through the one intake path: (the old job,
    the new job's enqueue result). :class:`ConflictError` while it is still queued or running."""
    from ductile.app import intake

    job = await find_job(store, text)
    if job.status not in (JobStatus.DEAD, JobStatus.SUCCEEDED):
        raise ConflictError(
            f"job {job.id} is {job.status.value}: only a dead or succeeded job can be retried"
        )
    result = await intake.enqueue(
        intake.Retry(job=job, submitted_by=submitted_by),
        runtime=runtime,
        store=store,
        now=now,
        new_id=new_id,
        notify=notify,
    )
    return job, result


async def cancel_job(
    store: Store, text: str, *, who: str, actor: Actor, now: datetime, alerts: Alerts | None = None
) -> Job:
    """A queued job becomes dead, "cancelled by <who>" (a ``job.dead`` event where ``alerts``
    route one); :class:`ConflictError` otherwise."""
    job_id = await resolve_job_id(store, text)
    try:
        return await store.cancel_job(
            job_id, reason=f"cancelled by {who}", actor=actor, now=now, alerts=alerts
        )
    except NotQueuedError as e:
        raise ConflictError(str(e)) from None


# ----------------------------------------------------------------------------- plugins


async def reset_breakers(
    store: Store, plugin: str, *, who: str, now: datetime, alerts: Alerts | None = None
) -> list[br.Breaker]:
    """Close the plugin's breakers (logged as ``breaker.closed`` by ``who``, a lifecycle event
    where ``alerts`` route one); those that were open."""
    return await store.reset_breakers(plugin, now=now, actor=who, alerts=alerts)


def plugins_view(runtime: Runtime) -> dict[str, Any]:
    """``GET /plugins``: loaded plugins with their state, refused ones with the reason."""
    loaded = [
        {
            "name": name,
            "state": runtime.status_of(name).state.value,
            "reason": runtime.status_of(name).reason,
            "version": plugin.manifest.version,
            "commands": sorted(plugin.manifest.commands),
            "scheduled": name in runtime.schedules(),
        }
        for name, plugin in sorted(runtime.plugins.items())
    ]
    return {
        "loaded": loaded,
        "refused": [{"name": r.name, "reason": r.reason} for r in runtime.refused],
        "disabled": sorted(runtime.discovery.disabled),
    }


def masked(config: Mapping[str, Any]) -> dict[str, Any]:
    """The plugin's config with the values of secret-looking keys replaced by a mask, at any depth."""
    out: dict[str, Any] = {}
    for key, value in config.items():
        if SECRET_KEY.search(key):
            out[key] = MASK
        elif isinstance(value, Mapping):
            out[key] = masked(value)
        else:
            out[key] = value
    return out


async def plugin_view(store: Store, runtime: Runtime, name: str) -> dict[str, Any]:
    """``GET /plugin/{name}``: manifest, masked config, schedule with next and last run,
    breakers, state size, last result. :class:`NotFoundError` for a plugin ductile does not know."""
    from ductile.app.runtime import PluginState

    status = runtime.status_of(name)
    if status.state is PluginState.ABSENT:
        raise NotFoundError(f"no plugin named {name!r}")
    doc: dict[str, Any] = {"name": name, "state": status.state.value, "reason": status.reason}
    plugin = runtime.plugins.get(name)
    if plugin is not None:
        m = plugin.manifest
        doc["manifest"] = {
            "version": m.version,
            "protocol": m.protocol,
            "description": m.description,
            "commands": sorted(m.commands),
            "config_keys": {"required": list(m.required_keys), "optional": list(m.optional_keys)},
            "command_specs": [
                {
                    "name": c.name,
                    "type": c.type.value,
                    "description": c.description,
                    "input_schema": c.input_schema,
                }
                for c in m.command_specs
            ],
            "fact_types": sorted({f.fact_type for f in m.fact_outputs}),
        }
    settings = runtime.settings(name)
    doc["config"] = masked(settings.config)
    recent = await store.recent_runs(plugin=name, limit=1)
    last = recent[0] if recent else None
    doc["schedules"] = await _schedules_view(store, runtime, name, last)
    policy = settings.circuit_breaker
    breakers = [b for b in await store.breakers() if b.plugin == name]
    doc["breakers"] = [breaker_json(b, br.reopens_at(b, policy)) for b in breakers]
    doc["paused"] = any(p.plugin == name and p.schedule_id is None for p in await store.pauses())
    doc["state_bytes"] = len(serialize_state(await store.get_state(name)))
    doc["last_run"] = None if last is None else {"job": job_json(last.job), "run": run_json(last.run)}
    return doc


async def _schedules_view(
    store: Store, runtime: Runtime, name: str, last: RunView | None
) -> list[dict[str, Any]]:
    """Each schedule of the plugin: its id, whether it runs, is paused, its next planned run."""
    active = runtime.schedules()
    settings = runtime.config.plugins.get(name)
    paused = {p.schedule_id for p in await store.pauses() if p.plugin == name}
    rows = []
    for schedule in settings.all_schedules if settings is not None else ():
        key = schedule_key(name, schedule.id)
        planned = await store.planned(key)
        rows.append(
            {
                "id": schedule.id,
                "command": schedule.command,
                "scheduled": key in active,
                "paused": None in paused or schedule.id in paused,
                "next_run_at": utc(planned.planned_at) if planned is not None else None,
                "last_run_at": utc(last.run.finished_at) if last is not None else None,
            }
        )
    return rows


async def switch_pause(
    store: Store, runtime: Runtime, name: str, schedule_id: str | None, *, pause: bool, now: datetime
) -> bool:
    """Pause or resume the plugin's schedules (or one); whether this call changed anything.
    :class:`NotFoundError` for a plugin or schedule the config does not name."""
    from ductile.app.runtime import PluginState

    settings = runtime.config.plugins.get(name)
    if settings is None and runtime.status_of(name).state is PluginState.ABSENT:
        raise NotFoundError(f"no plugin named {name!r}")
    if schedule_id is not None:
        ids = [s.id for s in settings.all_schedules] if settings is not None else []
        if schedule_id not in ids:
            raise NotFoundError(
                f"plugin {name!r} has no schedule {schedule_id!r} (its schedules: {', '.join(ids) or 'none'})"
            )
    if pause:
        return await store.pause(name, schedule_id, now=now)
    return await store.resume(name, schedule_id)


# ----------------------------------------------------------------------------- reload


def restart_needed(old: Config, new: Config) -> list[str]:
    """Settings a reload cannot apply: the running process keeps the old value."""
    changes = []
    if old.service.state_dir != new.service.state_dir:
        changes.append("service.state_dir")
    if old.service.log_level != new.service.log_level:
        changes.append("service.log_level")
    old_listen = (old.webhooks.host, old.webhooks.port) if old.webhooks else None
    new_listen = (new.webhooks.host, new.webhooks.port) if new.webhooks else None
    if old_listen != new_listen:
        changes.append("webhooks.listen")
    old_api = (old.api.host, old.api.port) if old.api else None
    new_api = (new.api.host, new.api.port) if new.api else None
    if old_api != new_api:
        changes.append("api.listen")
    return changes


def reload_doc(
    old: Config,
    new: Config,
    *,
    added: tuple[str, ...],
    removed: tuple[str, ...],
    cancelled: Mapping[str, tuple[str, ...]],
    unhealthy: Mapping[str, str],
) -> dict[str, Any]:
    """What a reload did, as ``POST /system/reload`` answers and ``ductile reload`` prints:
    plugins added, removed, and changed (their settings differ), jobs cancelled."""
    kept = (set(old.plugins) | set(new.plugins)) - set(added) - set(removed)
    changed = sorted(name for name in kept if old.plugin(name) != new.plugin(name))
    return {
        "reloaded": True,
        "added": list(added),
        "removed": list(removed),
        "changed": changed,
        "cancelled": {name: list(ids) for name, ids in cancelled.items()},
        "unhealthy": dict(unhealthy),
    }


async def health_doc(
    store: Store, runtime: Runtime, *, uptime: timedelta, scheduler: TickReport | None = None
) -> dict[str, Any]:
    """The /healthz document (D20), the same on the webhook listener and the API's: ``status``
    is ``degraded`` (served with 503) while the store refuses writes (``store`` says why) or
    scheduler ticks, or a schedule's firings, fail (``scheduler`` says which)."""
    breakers = await store.breakers()
    open_plugins = {b.plugin for b in breakers if b.status is not br.BreakerStatus.CLOSED}
    fault = store.write_fault()
    ticking = scheduler is None or scheduler.ok
    doc: dict[str, Any] = {
        "status": "ok" if fault is None and ticking else "degraded",
        "uptime_seconds": round(uptime.total_seconds(), 3),
        "queue_depth": await store.queue_depth(),
        "plugins_loaded": len(runtime.plugins),
        "plugins_circuit_open": len(open_plugins),
        "store": store_health(fault),
    }
    if scheduler is not None:
        doc["scheduler"] = scheduler.to_json()
    return doc
