"""Lifecycle events (domain/lifecycle.py) and the config keys that route them.

The pure part: which change is news, what its event carries, that its id and
dedupe key are derived from what it is about (so a replay makes the same
ones), that a notifier's own jobs are never news, and that each event starts
a chain of its own. Then the config: routes ``from: ductile``, the reserved
name, ``notify.on_failed_attempt`` and ``uses: builtin:<name>``.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ductile.adapters.config import parse_config
from ductile.adapters.plugin_dir import discover
from ductile.domain import lifecycle
from ductile.domain.activity import Kind
from ductile.domain.breaker import Breaker, BreakerPolicy, BreakerStatus
from ductile.domain.errors import ConfigError
from ductile.domain.job import Actor, Job, JobEvent, SubmittedBy, apply
from ductile.domain.lifecycle import Alerts
from ductile.domain.routing import Route, Target
from tests.support import builders
from tests.support.plugins import plugin_folder, shell_plugin

T0 = datetime(2026, 12, 2, 9, 0, tzinfo=UTC)
ALERTS = Alerts.of(
    [Route(source="ductile", event_type=t, target="alert") for t in sorted(lifecycle.TYPES)]
    + [Route(source="alpha", event_type="job.dead", target="alert")],
    {"alert": Target(max_attempts=3)},
)


def dead(job: Job, *, stderr: bytes = b"") -> tuple[Job, object]:
    running, _ = apply(job, JobEvent.CLAIM, at=T0, actor=Actor.DISPATCHER, reason="claimed")
    failed, _ = apply(running, JobEvent.FAIL, at=T0, actor=Actor.DISPATCHER, reason="boom", last_error="boom")
    buried, record = apply(failed, JobEvent.BURY, at=T0, actor=Actor.DISPATCHER, reason="not retryable")
    event = lifecycle.of_transition(buried, record, alerts=ALERTS, started_at=T0, stderr_tail=stderr)
    return buried, event


def test_only_routes_from_ductile_count() -> None:
    assert {r.source for r in ALERTS.routes} == {"ductile"}
    assert ALERTS.active
    assert not Alerts.of([Route(source="alpha", event_type="job.dead", target="x")], {}).active


@given(
    job_id=st.text(min_size=1, max_size=20),
    stderr=st.binary(max_size=6000),
)
def test_a_death_is_one_event_with_a_derived_id_and_a_capped_stderr_tail(job_id: str, stderr: bytes) -> None:
    job = builders.job(job_id, "alpha", max_attempts=1)
    _, first = dead(job, stderr=stderr)
    _, again = dead(job, stderr=stderr)
    assert first == again  # a replay makes the same event: the same id, the same dedupe key
    assert first is not None
    assert first.type == "job.dead"
    assert first.source == lifecycle.SOURCE
    assert first.dedupe_key == f"job.dead:{job_id}:1"
    tail = first.payload["stderr_tail"]
    assert len(tail.encode("utf-8", "surrogateescape")) <= 3 * lifecycle.STDERR_TAIL_BYTES
    assert stderr[-lifecycle.STDERR_TAIL_BYTES :].decode("utf-8", "replace") == tail


@given(a=st.text(min_size=1, max_size=10), b=st.text(min_size=1, max_size=10))
def test_different_jobs_make_different_event_ids(a: str, b: str) -> None:
    _, one = dead(builders.job(a, "alpha"))
    _, two = dead(builders.job(b, "alpha"))
    assert one is not None
    assert two is not None
    assert (one.event_id == two.event_id) == (a == b)


def test_a_notifiers_own_jobs_are_never_news() -> None:
    _, event = dead(builders.job("j", "alpha", max_attempts=1))
    assert event is not None
    [child] = lifecycle.children([event], ALERTS, at=T0)
    assert lifecycle.is_lifecycle_job(child)
    assert (child.plugin, child.command, child.route_depth, child.parent_job_id) == (
        "alert",
        "handle",
        1,
        None,
    )
    _, about_itself = dead(child)
    assert about_itself is None
    # a plugin's own event named like a lifecycle event is not one
    spoof = builders.job(
        "x", "alert", submitted_by=SubmittedBy.ROUTE, payload={"source": "alpha", "type": "job.dead"}
    )
    assert not lifecycle.is_lifecycle_job(spoof)


def test_failed_attempts_are_news_only_when_the_plugin_asked() -> None:
    job = builders.job("j", "alpha", max_attempts=3)
    running, _ = apply(job, JobEvent.CLAIM, at=T0, actor=Actor.DISPATCHER, reason="claimed")
    failed, record = apply(running, JobEvent.FAIL, at=T0, actor=Actor.DISPATCHER, reason="x", last_error="x")
    again, _ = apply(
        failed,
        JobEvent.RETRY,
        at=T0,
        actor=Actor.RETRY,
        reason="again",
        next_retry_at=T0 + timedelta(seconds=5),
    )
    assert lifecycle.of_transition(again, record, alerts=ALERTS) is None
    asked = Alerts.of(ALERTS.routes, ALERTS.targets, on_failed_attempt=["alpha"])
    event = lifecycle.of_transition(again, record, alerts=asked)
    assert event is not None
    assert event.type == "job.failed"
    assert (event.payload["attempt"], event.payload["next_retry_at"]) == (1, "2026-12-02T09:00:05Z")


def test_a_recovered_orphan_and_a_breaker_change() -> None:
    job = builders.job("j", "alpha", max_attempts=3)
    running, _ = apply(job, JobEvent.CLAIM, at=T0, actor=Actor.DISPATCHER, reason="claimed")
    queued, record = apply(running, JobEvent.RETRY, at=T0, actor=Actor.RECOVERY, reason="interrupted")
    event = lifecycle.of_transition(queued, record, alerts=ALERTS)
    assert event is not None
    assert (event.type, event.payload["attempt"]) == ("job.recovered", 1)
    closed = Breaker(plugin="alpha", command="poll", failures=2)
    opened = Breaker(plugin="alpha", command="poll", status=BreakerStatus.OPEN, failures=3, opened_at=T0)
    policy = BreakerPolicy(threshold=3, reset_after=timedelta(minutes=30))
    up = lifecycle.of_breaker(closed, opened, at=T0, policy=policy)
    assert up is not None
    assert (up.type, up.payload["reopens_at"]) == ("breaker.opened", "2026-12-02T09:30:00Z")
    down = lifecycle.of_breaker(opened, Breaker(plugin="alpha", command="poll"), at=T0)
    assert down is not None
    assert (down.type, down.payload["failures"]) == ("breaker.closed", 3)
    assert lifecycle.of_breaker(closed, Breaker(plugin="alpha", command="poll", failures=3), at=T0) is None


def test_the_same_refusal_has_one_dedupe_key_at_every_reload() -> None:
    one = lifecycle.of_plugin(Kind.PLUGIN_REFUSED, plugin="p", reason="r", at=T0)
    two = lifecycle.of_plugin(Kind.PLUGIN_REFUSED, plugin="p", reason="r", at=T0 + timedelta(hours=1))
    other = lifecycle.of_plugin(Kind.PLUGIN_REFUSED, plugin="p", reason="s", at=T0)
    assert one.event_id != two.event_id
    assert one.dedupe_key == two.dedupe_key != other.dedupe_key


# ----------------------------------------------------------------------------- the config


def parse(text: str) -> object:
    return parse_config(text, source="test.yaml", base_dir="/srv", env={}, local_tz=UTC)


def error(text: str) -> str:
    with pytest.raises(ConfigError) as info:
        parse(text)
    return str(info.value)


def test_a_route_from_ductile_names_one_of_its_events() -> None:
    parse(
        "plugins: {alert: {uses: 'builtin:notify'}}\n"
        "routes: [{from: ductile, event_type: job.dead, to: alert}]"
    )
    message = error("routes: [{from: ductile, event_type: job.died, to: alert}]")
    assert "routes[0].event_type" in message
    assert "ductile emits no 'job.died' event" in message
    assert "did you mean 'job.dead'" in message


def test_no_plugin_may_be_named_ductile() -> None:
    assert "'ductile' is reserved" in error("plugins: {ductile: {}}")


def test_a_folder_holding_a_plugin_named_ductile_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "plugins"
    root.mkdir(mode=0o755)
    plugin_folder(root, "ductile", shell_plugin('cat >/dev/null; echo \'{"status": "ok"}\''))
    found = discover(str(root), {})
    [refusal] = found.refused
    assert "reserved" in refusal.reason
    assert "ductile" not in found.plugins


def test_notify_on_failed_attempt_and_builtin_uses_are_read() -> None:
    config = parse(
        "plugins:\n  alpha: {notify: {on_failed_attempt: true}}\n  alert: {uses: 'builtin:notify'}\n"
        "routes: [{from: ductile, event_type: job.failed, to: alert}]"
    )
    alerts = config.alerts({"alpha", "alert"})  # type: ignore[attr-defined]
    assert alerts.on_failed_attempt == frozenset({"alpha"})
    assert [r.target for r in alerts.routes] == ["alert"]
    assert "not a valid plugin name" in error("plugins: {x: {uses: 'builtin:../etc'}}")
    assert "allowed here" in error("plugins: {alpha: {notify: {on_failure: true}}}")
