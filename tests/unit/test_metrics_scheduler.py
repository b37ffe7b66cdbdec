"""The scheduler's figures in the metrics (issue 19, item 8): counted from its report, once each."""

from __future__ import annotations

from datetime import UTC, datetime

from ductile.app.api.metrics import Metrics
from ductile.app.tick_report import TickReport

NOW = datetime(2026, 3, 1, 12, tzinfo=UTC)


def _value(m: Metrics, name: str) -> float:
    value = m.registry.get_sample_value(name)
    assert value is not None, name
    return value


def test_failed_ticks_are_counted_once_each_and_the_gauges_follow_the_report() -> None:
    m, report = Metrics(), TickReport()
    m.scheduler(report)
    assert _value(m, "ductile_scheduler_ok") == 1.0
    assert _value(m, "ductile_scheduler_failed_ticks_total") == 0.0
    report.tick_failed(RuntimeError("store unreadable"), NOW)
    report.tick_failed(RuntimeError("store unreadable"), NOW)
    report.schedule_failed("feeds", ValueError("bad payload"), NOW)
    report.tick_ended()
    m.scheduler(report)
    m.scheduler(report)  # a second scrape of the same report adds nothing
    assert _value(m, "ductile_scheduler_failed_ticks_total") == 3.0
    assert _value(m, "ductile_schedules_failing") == 1.0
    assert _value(m, "ductile_scheduler_ok") == 0.0
    report.tick_ran()
    report.schedule_fired("feeds")
    m.scheduler(report)
    assert _value(m, "ductile_scheduler_ok") == 1.0
    assert _value(m, "ductile_schedules_failing") == 0.0
    assert _value(m, "ductile_scheduler_failed_ticks_total") == 3.0
