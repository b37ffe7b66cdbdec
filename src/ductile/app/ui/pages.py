"""The dashboard's read pages. Each reads through what the API reads (``operations``,
``views``, the API's own query parsing), so a page and its API route cannot disagree.
"""

from __future__ import annotations

import urllib.parse
from datetime import datetime, timedelta, tzinfo
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from ductile.app import operations
from ductile.app.api import events, jobs
from ductile.app.api.body import encode_cursor
from ductile.app.api.errors import ApiError
from ductile.app.api.metrics import version
from ductile.app.planning import runs_in
from ductile.app.ui import schema_form
from ductile.app.ui.guard import Visit
from ductile.app.views import breaker_json, job_json, run_json, utc
from ductile.domain.breaker import BreakerStatus
from ductile.domain.job import Job, JobStatus
from ductile.domain.plugin import CommandType
from ductile.domain.settle import RunRecord
from ductile.ports.store import JobQuery

#: What the overview lists of each kind.
OVERVIEW_ROWS = 20
#: How many recent outcomes a plugin's strip shows.
STRIP = 20
#: The job list's page size.
PAGE_SIZE = 50
SCHEDULE_HOURS = (6, 24, 72, 168)
#: Most runs of one schedule the schedule page shows.
SCHEDULE_LIMIT = 500


async def overview(visit: Visit) -> Response:
    """What runs now, the queue, what runs next, what failed, what is broken."""
    ctx = visit.ctx
    engine, now = ctx.engine, ctx.engine.clock.now()
    store = engine.store
    running = await store.find_jobs(JobQuery(statuses=frozenset({JobStatus.RUNNING}), limit=OVERVIEW_ROWS))
    queued = await store.find_jobs(JobQuery(statuses=frozenset({JobStatus.QUEUED}), limit=OVERVIEW_ROWS))
    dead = await store.find_jobs(
        JobQuery(statuses=frozenset({JobStatus.DEAD}), since=now - timedelta(hours=24), limit=OVERVIEW_ROWS)
    )
    deadlines = {
        j.id: utc(j.started_at + engine.runtime.settings(j.plugin).timeouts.for_command(j.command))
        for j in running.jobs
        if j.started_at is not None
    }
    plugin_ro = visit.can("plugin")
    upcoming, _ = (
        await projected(visit, now, now + timedelta(hours=24), OVERVIEW_ROWS) if plugin_ro else ([], [])
    )
    breakers = [
        {"plugin": b.plugin, **breaker_json(b, None)}
        for b in await store.breakers()
        if b.status is not BreakerStatus.CLOSED
    ]
    recent = await store.recent_runs(limit=OVERVIEW_ROWS)
    oldest = await store.oldest_queued_at()
    return visit.page(
        "overview.html",
        recent=[{"job": job_json(r.job), "run": run_json(r.run)} for r in recent],
        health=await ctx.health(),
        version=version(),
        running=[job_json(j) for j in running.jobs],
        deadlines=deadlines,
        queued=[job_json(j) for j in queued.jobs],
        oldest_wait=None if oldest is None else max(0.0, (now - oldest).total_seconds()),
        upcoming=upcoming[:OVERVIEW_ROWS],
        upcoming_more=len(upcoming) > OVERVIEW_ROWS,
        dead=[job_json(j) for j in dead.jobs],
        breakers=breakers,
        refused=[{"name": r.name, "reason": r.reason} for r in engine.runtime.refused] if plugin_ro else [],
    )


def _filters(request: Request) -> dict[str, str]:
    """The job list's form, empty fields dropped (a form sends them; the API reads them as filters)."""
    return {k: v for k, v in request.query_params.items() if v.strip() and k in jobs.JOB_FILTERS}


async def job_list(visit: Visit) -> Response:
    """A filterable page of jobs, newest first; the next page through the API's cursor."""
    filters = _filters(visit.request)
    filters.setdefault("limit", str(PAGE_SIZE))
    scope = {**visit.request.scope, "query_string": urllib.parse.urlencode(filters).encode()}
    error = None
    try:
        page = await operations.list_jobs(visit.ctx.engine.store, jobs.job_query(Request(scope), visit.ctx))
    except ApiError as e:
        if e.status != 400:
            raise
        error, page = str(e.detail), None
    rows = [] if page is None else [job_json(j) for j in page.jobs]
    following = None
    if page is not None and page.next is not None:
        following = urllib.parse.urlencode({**filters, "cursor": encode_cursor(page.next)})
    return visit.page(
        "jobs.html",
        jobs=rows,
        filters=filters,
        error=error,
        next_query=following,
        statuses=[s.value for s in JobStatus],
        plugins=sorted(visit.ctx.engine.runtime.plugins),
        status=400 if error else 200,
    )


async def _job_doc(visit: Visit) -> dict[str, Any]:
    try:
        return await operations.show_job(visit.ctx.engine.store, visit.request.path_params["job_id"])
    except (operations.NotFoundError, operations.AmbiguousIdError) as e:
        raise ApiError(404 if isinstance(e, operations.NotFoundError) else 409, "not found", str(e)) from None


async def job_page(visit: Visit) -> Response:
    """One job: its record, timeline, every attempt, parent and children, its event."""
    doc = await _job_doc(visit)
    job = doc["job"]
    return visit.page(
        "job.html",
        doc=doc,
        job=job,
        finished=job["status"] in ("succeeded", "dead"),
        cancellable=job["status"] == "queued",
    )


async def run_output(visit: Visit) -> Response:
    """An attempt's stderr tail or stdout head, whole, as a plain-text download."""
    doc = await _job_doc(visit)
    which = visit.request.path_params["stream"]
    attempt = visit.request.path_params["attempt"]
    for run in doc["runs"]:
        if str(run["attempt"]) == attempt and which in ("stderr", "stdout"):
            text = run["stderr_tail"] if which == "stderr" else run["stdout_head"]
            name = f"{doc['job']['id'][:8]}-{attempt}.{which}.txt"
            return Response(
                text,
                media_type="text/plain; charset=utf-8",
                headers={
                    "content-disposition": f'attachment; filename="{name}"',
                    "x-content-type-options": "nosniff",
                    "cache-control": "no-store",
                },
            )
    raise ApiError(404, "not found", f"no {which} for attempt {attempt}")


async def plugin_list(visit: Visit) -> Response:
    """Every plugin: its state, schedule with next and last run, breakers, state size, and its
    recent outcomes as a strip (each loaded plugin as ``GET /plugin/{name}`` shows it)."""
    engine = visit.ctx.engine
    view = operations.plugins_view(engine.runtime)
    details = {}
    for p in view["loaded"]:
        doc = await operations.plugin_view(engine.store, engine.runtime, p["name"])
        recent = await engine.store.recent_runs(plugin=p["name"], limit=STRIP)
        details[p["name"]] = {"doc": doc, "recent": [_outcome(r.job, r.run) for r in recent]}
    return visit.page("plugins.html", view=view, details=details)


def _outcome(job: Job, run: RunRecord) -> dict[str, Any]:
    """One mark of a plugin's strip of recent outcomes."""
    ok = run.exit_code == 0 and run.error is None and not run.timed_out
    return {"job": job_json(job), "ok": ok, "finished_at": utc(run.finished_at)}


#: The newest facts a plugin page shows (``ductile facts`` lists more).
FACTS_SHOWN = 10


async def plugin_page(visit: Visit) -> Response:
    """One plugin: manifest, masked config, schedule, breakers, state, recent outcomes, run-now."""
    name = visit.request.path_params["plugin"]
    engine = visit.ctx.engine
    try:
        doc = await operations.plugin_view(engine.store, engine.runtime, name)
    except operations.NotFoundError as e:
        raise ApiError(404, "not found", str(e)) from None
    recent = await engine.store.recent_runs(plugin=name, limit=30)
    declares_facts = bool(doc.get("manifest", {}).get("fact_types"))
    facts = await engine.store.facts(name, limit=FACTS_SHOWN) if declares_facts else []
    return visit.page(
        "plugin.html",
        doc=doc,
        facts=[
            {"seq": f.seq, "type": f.fact_type, "job_id": f.job_id, "at": utc(f.at), "body": f.body}
            for f in facts
        ],
        state=await engine.store.get_state(name),
        recent=[_outcome(r.job, r.run) for r in recent],
        runnable=_runnable(visit, name),
    )


def _runnable(visit: Visit, name: str) -> list[dict[str, Any]]:
    """The commands this session may run now, each with the access it needs and its form."""
    loaded = visit.ctx.engine.runtime.plugins.get(name)
    if loaded is None:
        return []
    out = []
    for command in sorted(loaded.manifest.commands):
        if command in jobs.NOT_TRIGGERED:
            continue
        spec = loaded.manifest.command_spec(command)
        access = "ro" if spec is not None and spec.type is CommandType.READ else "rw"
        if visit.can("plugin", access, name):
            schema = spec.input_schema if spec is not None else None
            out.append(
                {
                    "name": command,
                    "description": spec.description if spec is not None else "",
                    "fields": schema_form.fields(schema),
                    "schema": schema,
                }
            )
    return out


async def projected(
    visit: Visit, start: datetime, end: datetime, limit: int
) -> tuple[list[dict[str, Any]], list[str]]:
    """Every schedule's runs in ``[start, end)`` (:func:`ductile.app.planning.runs_in`)."""
    engine = visit.ctx.engine
    return await runs_in(
        engine.store, engine.runtime, now=engine.clock.now(), start=start, end=end, limit=limit
    )


def dst_changes(tzs: dict[str, tzinfo], start: datetime, end: datetime) -> list[dict[str, Any]]:
    """The instants in ``[start, end)`` at which one of the zones changes its UTC offset (DST)."""
    marks = []
    for name in sorted(tzs):
        tz = tzs[name]
        at, before = start, start.astimezone(tz).utcoffset()
        while at < end:
            nxt = min(at + timedelta(hours=1), end)
            offset = nxt.astimezone(tz).utcoffset()
            if offset != before:
                marks.append({"zone": name, "at": nxt, "x": (nxt - start) / (end - start)})
                before = offset
            at = nxt
    return marks


async def schedule_page(visit: Visit) -> Response:
    """The runs of the next 6 h to 7 days, as a timeline per schedule (DST changes and window
    snaps marked) and a table."""
    text = visit.request.query_params.get("hours", "24")
    hours = int(text) if text.isdigit() and int(text) in SCHEDULE_HOURS else 24
    now = visit.ctx.engine.clock.now()
    end = now + timedelta(hours=hours)
    runs, cut = await projected(visit, now, end, SCHEDULE_LIMIT)
    lanes: dict[str, list[dict[str, Any]]] = {}
    for run in runs:
        x = round((run["at"] - now) / (end - now), 4)
        lanes.setdefault(run["schedule"], []).append({**run, "x": x})
    tzs = {str(s.tz): s.tz for s in visit.ctx.engine.runtime.schedules().values()}
    return visit.page(
        "schedule.html",
        runs=runs,
        cut=cut,
        hours=hours,
        choices=SCHEDULE_HOURS,
        lanes=sorted(lanes.items()),
        dst=dst_changes(tzs, now, end),
    )


async def event_stream(visit: Visit) -> Response:
    """The API's event stream (same frames, same resume rules), for a signed-in browser."""
    return await events.events(visit.request, visit.ctx, visit.session.token)
