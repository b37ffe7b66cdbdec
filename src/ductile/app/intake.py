"""Intake: the one way a job asked for from outside the engine is queued.

Webhook deliveries, ``ductile run``, an embedding application
(``Ductile.enqueue``), the simulation's arrivals and any later entry point
describe what arrived as a :class:`Webhook` or a :class:`Manual` and hand it
to :func:`enqueue`, which:

1. refuses what could never be stored: a payload, dedupe key or event type
   of a :class:`Manual` that JSON cannot carry (a lone surrogate, a NaN, a
   set...), naming where (``payload.items[2]``); a webhook's body was checked
   by the HTTP adapter, where it arrived;
2. refuses a plugin or command that cannot run now, unless the caller keeps
   the job anyway (a webhook delivery is kept while its plugin is broken: it
   fails fast with the reason, visible in ``ductile job``);
3. builds the job, and for a ``handle`` job its event envelope, with the
   domain's builders (:func:`~ductile.domain.routing.webhook_envelope`,
   :func:`~ductile.domain.routing.manual_envelope`): one id scheme, one
   timestamp format;
4. stores it durably (a duplicate by dedupe key is dropped);
5. logs it and wakes the dispatcher.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

import attrs

from ductile.app.runtime import PluginState, Runtime
from ductile.domain import payload_schema
from ductile.domain.config import Endpoint
from ductile.domain.errors import DuctileError
from ductile.domain.job import Actor, Command, Job, SubmittedBy
from ductile.domain.jsonvalue import SURROGATE_PROBLEM, describe_problem, has_surrogate, json_problem
from ductile.domain.routing import manual_envelope, webhook_envelope
from ductile.log import Log
from ductile.ports.store import EnqueueResult, Store

_log = Log("intake")


class EnqueueRefusedError(DuctileError):
    """A job was asked for a plugin or command that cannot run, or with a payload its command refuses
    (one of the four below)."""


class UnknownPluginError(EnqueueRefusedError, LookupError):
    """No plugin of that name is loaded, refused or disabled: a host app's 404."""


class UnknownCommandError(EnqueueRefusedError, ValueError):
    """The plugin is loaded but its manifest does not list the command: a host app's 422."""


class PluginUnavailableError(EnqueueRefusedError):
    """The plugin exists but cannot take jobs now (refused, disabled, ``init`` failed): a 503."""


class InvalidPayloadError(EnqueueRefusedError, ValueError):
    """The payload breaks the command's ``input_schema`` (a v2 manifest's): a host app's 422."""


def payload_refusal(
    runtime: Runtime, plugin: str, command: str, payload: object
) -> InvalidPayloadError | None:
    """The error a payload is refused with when the command declares an ``input_schema``
    it breaks; None when it has none or the payload conforms."""
    loaded = runtime.plugins.get(plugin)
    spec = loaded.manifest.command_spec(command) if loaded is not None else None
    if spec is None or spec.input_schema is None:
        return None
    found = payload_schema.problems({} if payload is None else payload, spec.input_schema)
    if not found:
        return None
    return InvalidPayloadError(
        f"the payload does not fit {plugin}'s input_schema of {command}: {'; '.join(found)}"
    )


def refusal(runtime: Runtime, plugin: str, command: str) -> EnqueueRefusedError | None:
    """The error a job of (``plugin``, ``command``) is refused with, None when it may run."""
    reason = runtime.why_not_runnable(plugin, command)
    if reason is None:
        return None
    state = runtime.status_of(plugin).state
    if state is PluginState.ABSENT:
        return UnknownPluginError(reason)
    if state is PluginState.LOADED:
        return UnknownCommandError(reason)
    return PluginUnavailableError(reason)


@attrs.frozen(kw_only=True)
class Manual:
    """A job asked for by an operator (``ductile run``) or an application (the API)."""

    plugin: str
    command: str = Command.POLL
    #: For ``handle``: the payload of the event the job receives. Other commands receive no
    #: event; their payload is only kept with the job.
    payload: Mapping[str, Any] | None = None
    #: For ``handle``: the event's type (default :data:`~ductile.domain.routing.MANUAL_EVENT_TYPE`).
    event_type: str | None = None
    dedupe_key: str | None = None
    submitted_by: SubmittedBy = SubmittedBy.API
    #: Refuse a plugin or command that cannot run now (False: keep the job; it fails fast).
    strict: bool = True


@attrs.frozen(kw_only=True)
class Webhook:
    """A verified webhook delivery: a ``handle`` job for its endpoint's plugin, never refused."""

    endpoint: Endpoint
    #: The parsed JSON body, any JSON value.
    payload: Any
    headers: Mapping[str, str]
    #: The value of the endpoint's dedupe header, when it has one.
    dedupe_key: str | None = None


@attrs.frozen(kw_only=True)
class Retry:
    """An operator queues a finished job again (``ductile retry``, ``POST /job/{id}/retry``):
    a new job of the same plugin, command and payload, attempt 1, linked by ``retry_of``.
    Refused like a :class:`Manual` when the plugin or command cannot run now."""

    job: Job
    submitted_by: SubmittedBy = SubmittedBy.API


Submission = Manual | Webhook | Retry


async def enqueue(
    submission: Submission,
    *,
    runtime: Runtime,
    store: Store,
    now: datetime,
    new_id: Callable[[], str],
    notify: Callable[[], None] | None = None,
) -> EnqueueResult:
    """Queue ``submission`` durably under ``runtime``; see the module's docs.

    ``new_id`` gives the job its id; ``notify`` wakes the dispatcher (None
    where there is none to wake: ``ductile run`` writes to the daemon's store,
    whose dispatcher is woken through its FIFO, or notices within a second).
    """
    if isinstance(submission, Manual):
        unstorable = _not_json(submission)
        if unstorable is not None:
            raise EnqueueRefusedError(unstorable)
    if isinstance(submission, Manual | Retry) and (isinstance(submission, Retry) or submission.strict):
        plugin, command = _target(submission)
        refused = refusal(runtime, plugin, command)
        if refused is None and isinstance(submission, Manual):
            refused = payload_refusal(runtime, plugin, command, submission.payload)
        if refused is not None:
            raise refused
    job = _job(submission, runtime, now=now, job_id=new_id())
    actor = Actor(job.submitted_by.value)
    result = await store.enqueue(job, actor=actor, now=now, dedupe_ttl=runtime.config.service.dedupe_ttl)
    job_log = _log.bind(plugin=job.plugin, job_id=result.job_id)
    if result.created:
        job_log.info(f"job queued ({job.command})", submitted_by=job.submitted_by.value)
        if notify is not None:
            notify()
    else:
        job_log.info(f"duplicate dropped: dedupe_key {job.dedupe_key!r} matches job {result.job_id}")
    return result


def _not_json(manual: Manual) -> str | None:
    """Why ``manual`` could never be stored or sent to a plugin as JSON; None when it can."""
    if manual.payload is not None:
        found = json_problem(manual.payload)
        if found is not None:
            return describe_problem(found, "payload")
    for name in ("dedupe_key", "event_type"):
        text = getattr(manual, name)
        if text is not None and has_surrogate(text):
            return f"{name} {SURROGATE_PROBLEM}"
    return None


def _target(submission: Manual | Retry) -> tuple[str, str]:
    if isinstance(submission, Retry):
        return submission.job.plugin, submission.job.command
    return submission.plugin, submission.command


def _job(submission: Submission, runtime: Runtime, *, now: datetime, job_id: str) -> Job:
    config = runtime.config
    if isinstance(submission, Retry):
        old = submission.job
        # The payload as it was (a handle job's event envelope included); no dedupe key: the
        # operator asked for this run, a success of the same key must not swallow it.
        return attrs.evolve(
            config.new_job(
                old.plugin,
                old.command,
                job_id=job_id,
                now=now,
                submitted_by=submission.submitted_by,
                payload=dict(old.payload),
            ),
            retry_of=old.id,
        )
    if isinstance(submission, Webhook):
        envelope = webhook_envelope(
            path=submission.endpoint.path,
            event_type=submission.endpoint.event_type,
            payload=submission.payload,
            headers=submission.headers,
            dedupe_key=submission.dedupe_key,
            at=now,
            job_id=job_id,
        )
        return config.new_job(
            submission.endpoint.plugin,
            Command.HANDLE,
            job_id=job_id,
            now=now,
            submitted_by=SubmittedBy.WEBHOOK,
            payload=envelope.to_json(),
            dedupe_key=submission.dedupe_key,
        )
    payload = dict(submission.payload) if submission.payload is not None else None
    if submission.command == Command.HANDLE:
        payload = manual_envelope(
            source=submission.submitted_by.value,
            event_type=submission.event_type,
            payload=submission.payload,
            dedupe_key=submission.dedupe_key,
            at=now,
            job_id=job_id,
        ).to_json()
    return config.new_job(
        submission.plugin,
        submission.command,
        job_id=job_id,
        now=now,
        submitted_by=submission.submitted_by,
        payload=payload,
        dedupe_key=submission.dedupe_key,
    )
