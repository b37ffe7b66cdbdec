"""``GET /metrics``: Prometheus text format from ductile's own registry (ADR 0026).

Counters and histograms move with the activity feed (each entry observed
once, as it is read), so they count from the daemon's start, as Prometheus
expects of counters; gauges are read from the store and the runtime at each
scrape. The registry is ductile's own, never the process-global one: an
application embedding ductile keeps its own metrics apart.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from importlib import metadata

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    ProcessCollector,
    generate_latest,
)
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ductile.app.api.body import only
from ductile.app.api.context import ApiContext
from ductile.app.tick_report import TickReport
from ductile.domain.activity import Entry, Kind
from ductile.domain.breaker import BreakerStatus
from ductile.domain.config import ApiToken

_BREAKER_VALUE = {BreakerStatus.CLOSED: 0.0, BreakerStatus.HALF_OPEN: 1.0, BreakerStatus.OPEN: 2.0}
_DURATION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
_LAG_BUCKETS = (0.01, 0.1, 0.5, 1, 5, 15, 60, 300, 900, 3600)


def version() -> str:
    try:
        return metadata.version("ductile")
    except metadata.PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "unknown"


class Metrics:
    """ductile's metrics on a registry of its own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._counters()
        self._gauges()
        Info("ductile_build", "ductile's version", registry=self.registry).info(
            {"version": version(), "python": sys.version.split()[0]}
        )
        ProcessCollector(registry=self.registry)  # process_resident_memory_bytes, process_open_fds, ...

    def _counters(self) -> None:
        """What the activity feed counts: from the daemon's start."""
        r = self.registry
        pair = ["plugin", "command"]
        self.queued = Counter(
            "ductile_jobs_queued", "Jobs queued, by who asked", [*pair, "submitted_by"], registry=r
        )
        self.finished = Counter(
            "ductile_job_runs",
            "Runs ended, by outcome (succeeded, failed, timed_out)",
            [*pair, "outcome"],
            registry=r,
        )
        self.dead = Counter(
            "ductile_jobs_dead", "Jobs that ended dead (out of attempts or not retryable)", pair, registry=r
        )
        self.cancelled = Counter("ductile_jobs_cancelled", "Queued jobs cancelled", pair, registry=r)
        self.retries = Counter(
            "ductile_job_retries", "Jobs queued again for another attempt", pair, registry=r
        )
        self.duration = Histogram(
            "ductile_run_duration_seconds", "How long runs took", pair, buckets=_DURATION_BUCKETS, registry=r
        )
        self.lag = Histogram(
            "ductile_schedule_lag_seconds",
            "How late a scheduled run fired after its planned time",
            ["plugin"],
            buckets=_LAG_BUCKETS,
            registry=r,
        )
        self.skipped = Counter(
            "ductile_schedule_skipped",
            "Planned runs that enqueued nothing, by reason",
            ["plugin", "reason"],
            registry=r,
        )
        self.webhooks = Counter(
            "ductile_webhook_requests", "Webhook listener answers, by status", ["status"], registry=r
        )

    def _gauges(self) -> None:
        """What a scrape reads from the store and the runtime."""
        r = self.registry
        self.queue_depth = Gauge(
            "ductile_queue_depth", "Jobs queued (including those waiting for a retry time)", registry=r
        )
        self.oldest = Gauge(
            "ductile_oldest_queued_age_seconds", "Age of the oldest queued job (0 when none)", registry=r
        )
        self.breaker = Gauge(
            "ductile_breaker_state",
            "Circuit breaker per pair: 0 closed, 1 half-open, 2 open",
            ["plugin", "command"],
            registry=r,
        )
        self.loaded = Gauge("ductile_plugins_loaded", "Plugins loaded", registry=r)
        self.refused = Gauge(
            "ductile_plugins_refused", "Plugins refused at discovery (ductile plugins says why)", registry=r
        )
        self.subscribers = Gauge("ductile_event_stream_clients", "Clients following GET /events", registry=r)
        # The scheduler's failures (issue 19, item 8): a failing tick is counted, never a silent stop.
        self.failed_ticks = Counter(
            "ductile_scheduler_failed_ticks", "Scheduler ticks in which anything failed", registry=r
        )
        self._failed_ticks_seen = 0
        self.failing_schedules = Gauge(
            "ductile_schedules_failing", "Schedules whose firing is failing now", registry=r
        )
        self.scheduler_ok = Gauge(
            "ductile_scheduler_ok", "1 while the scheduler's ticks run through, else 0", registry=r
        )

    def scheduler(self, report: TickReport) -> None:
        """Bring the scheduler's figures up to its report (read at each scrape)."""
        if report.failed_ticks > self._failed_ticks_seen:
            self.failed_ticks.inc(report.failed_ticks - self._failed_ticks_seen)
            self._failed_ticks_seen = report.failed_ticks
        self.failing_schedules.set(len(report.failing))
        self.scheduler_ok.set(1.0 if report.ok else 0.0)

    def observe(self, entry: Entry) -> None:
        """Count one activity entry (a :class:`~ductile.app.feed.Feed` observer)."""
        a = entry.activity
        pair = (a.plugin or "", a.command or "")
        kind = a.kind
        if kind is Kind.JOB_QUEUED:
            self.queued.labels(*pair, str(a.data.get("submitted_by", ""))).inc()
        elif kind in (Kind.JOB_SUCCEEDED, Kind.JOB_FAILED):
            outcome = (
                "succeeded"
                if kind is Kind.JOB_SUCCEEDED
                else ("timed_out" if a.data.get("timed_out") else "failed")
            )
            self.finished.labels(*pair, outcome).inc()
            duration = a.data.get("duration_seconds")
            if isinstance(duration, int | float):
                self.duration.labels(*pair).observe(float(duration))
        elif kind is Kind.JOB_DEAD:
            self.dead.labels(*pair).inc()
        elif kind is Kind.JOB_CANCELLED:
            self.cancelled.labels(*pair).inc()
        elif kind is Kind.JOB_RETRYING:
            self.retries.labels(*pair).inc()
        elif kind is Kind.SCHEDULE_FIRED:
            lag = a.data.get("lag_seconds")
            if isinstance(lag, int | float):
                self.lag.labels(pair[0]).observe(max(0.0, float(lag)))
        elif kind is Kind.SCHEDULE_SKIPPED:
            self.skipped.labels(pair[0], str(a.data.get("reason", ""))).inc()

    def webhook_answered(self, status: int) -> None:
        self.webhooks.labels(str(status)).inc()


async def metrics(request: Request, ctx: ApiContext, token: ApiToken) -> Response:
    """Read the gauges, then render the registry."""
    only(request, ())
    m, engine = ctx.metrics, ctx.engine
    store = engine.store
    m.queue_depth.set(await store.queue_depth())
    oldest = await store.oldest_queued_at()
    m.oldest.set(0.0 if oldest is None else max(0.0, (engine.clock.now() - oldest).total_seconds()))
    for b in await store.breakers():
        m.breaker.labels(b.plugin, b.command).set(_BREAKER_VALUE[b.status])
    m.loaded.set(len(engine.runtime.plugins))
    m.refused.set(len(engine.runtime.refused))
    m.subscribers.set(ctx.feed.subscribers)
    m.scheduler(engine.tick_report)
    return Response(
        generate_latest(m.registry), media_type=CONTENT_TYPE_LATEST, headers={"cache-control": "no-store"}
    )


def counting(app: ASGIApp, observe: Callable[[int], None]) -> ASGIApp:
    """``app``, counting the status of every HTTP answer it sends (the webhook listener's)."""

    async def counted(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return

        async def watched(message: Message) -> None:
            if message["type"] == "http.response.start":
                observe(int(message["status"]))
            await send(message)

        await app(scope, receive, watched)

    return counted
