"""The log lines of a settled run: what the plugin said, how the run ended, where its events went."""

from __future__ import annotations

import logging

from ductile.domain.job import Job, JobStatus
from ductile.domain.outcome import Outcome, SpawnOutcome
from ductile.domain.settle import Settlement
from ductile.log import Log
from ductile.ports.store import Committed, Store

_dispatcher_log = Log("dispatcher")
_router_log = Log("router")
#: A plugin's log levels as :mod:`logging` levels.
_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warn": logging.WARNING, "error": logging.ERROR}


def log_settlement(job: Job, outcome: Outcome, committed: Committed) -> None:
    """Log the end of ``job``'s run: the plugin's own lines, the verdict, the routing."""
    s = committed.settlement
    final = s.job
    job_log = _dispatcher_log.bind(plugin=job.plugin, job_id=job.id)
    plugin_log = job_log.bind(component="plugin")
    if isinstance(outcome, SpawnOutcome) and outcome.stderr_tail:
        # A successful run's stderr is its diagnostics, not a warning (``hello`` would warn every
        # five minutes); a failed run's stderr is likely the cause, so it stands out.
        text = outcome.stderr_tail.decode("utf-8", "replace").rstrip("\n")
        level = logging.INFO if final.status is JobStatus.SUCCEEDED else logging.WARNING
        plugin_log.log(level, text, stream="stderr")
    if s.response is not None:
        for line in s.run.logs:
            plugin_log.log(_LEVELS[line.level], line.message)
    duration = round(s.run.duration, 3)
    if final.status is JobStatus.SUCCEEDED:
        job_log.info(f"{job.command} succeeded", duration_seconds=duration, events=len(s.events))
    elif final.status is JobStatus.QUEUED and final.attempt == job.attempt:  # released, not run
        retry_at = final.next_retry_at.isoformat() if final.next_retry_at else "now"
        job_log.warning(f"{job.command} {s.run.error}; trying again at {retry_at}")
    elif final.status is JobStatus.QUEUED:
        retry_at = final.next_retry_at.isoformat() if final.next_retry_at else "now"
        job_log.warning(
            f"{job.command} failed (attempt {job.attempt} of "
            f"{job.max_attempts}), retry at {retry_at}: {s.run.error}",
            duration_seconds=duration,
        )
    else:
        job_log.error(f"{job.command} dead: {final.last_error}", duration_seconds=duration)
    for etype, target in s.unroutable:
        job_log.warning(f"event '{etype}' routed to '{target}', which is not loaded: dropped")
    for etype in s.unmatched:
        job_log.debug(f"event '{etype}' matched no route")
    router_log = _router_log.bind(parent_job_id=job.id)
    for child, result in zip(s.children, committed.children, strict=True):
        if result.created:
            router_log.info(f"routed to {child.plugin}", plugin=child.plugin, job_id=child.id)
        else:
            router_log.info(
                f"routed event to {child.plugin} deduplicated: job {result.job_id} already covers it",
                plugin=child.plugin,
                job_id=result.job_id,
            )


async def chain_of(store: Store, job: Job, limit: int) -> list[str]:
    """The plugins of ``job``'s routed chain, root first: its parents read back one by one
    (at most ``limit``; a parent deleted by retention ends the walk)."""
    names = [job.plugin]
    parent = job.parent_job_id
    while parent is not None and len(names) <= limit:
        found = await store.get_job(parent)
        if found is None:
            names.append("?")
            break
        names.append(found.plugin)
        parent = found.parent_job_id
    return list(reversed(names))


async def log_route_depth(store: Store, job: Job, settlement: Settlement, limit: int) -> None:
    """A routing loop stopped at ``service.max_route_depth``: say so, with the chain."""
    try:
        chain = await chain_of(store, job, limit)
    except Exception:  # the chain is for the log only; never fail a settled run over it
        chain = [job.plugin]
    for etype, target in settlement.too_deep:
        _router_log.warning(
            f"event '{etype}' not routed to '{target}': the chain is {job.route_depth} route(s) deep, "
            f"the limit (service.max_route_depth) is {limit}",
            parent_job_id=job.id,
            plugin=job.plugin,
            chain=" -> ".join(chain),
        )
