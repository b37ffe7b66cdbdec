"""Opt-in deduplication (D1): identity (plugin, command, key); what blocks a new enqueue."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ductile.domain.dedupe import DEFAULT_DEDUPE_TTL, DedupeIdentity, blocks, find_duplicate, identity_of
from ductile.domain.job import Job, JobStatus
from ductile.domain.routing import Envelope, Route, Target, fan_out
from tests.support import builders

NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
TTL = timedelta(hours=24)
S = JobStatus


def job(
    status: JobStatus = S.QUEUED,
    *,
    id: str = "j1",
    plugin: str = "p",
    command: str = "poll",
    key: str | None = "k",
    created_at: datetime = NOW - timedelta(hours=1),
    completed_at: datetime | None = None,
) -> Job:
    return builders.job(
        id, plugin, command, status=status, dedupe_key=key, created_at=created_at, completed_at=completed_at
    )


def test_default_ttl_is_a_day() -> None:
    assert timedelta(hours=24) == DEFAULT_DEDUPE_TTL


def test_identity_is_plugin_command_key() -> None:
    assert identity_of(job(key="abc")) == DedupeIdentity("p", "poll", "abc")
    assert identity_of(job(key=None)) is None


@settings(max_examples=200, deadline=None)
@given(
    key=st.text(max_size=8),
    a=st.tuples(st.text(max_size=5), st.sampled_from(["poll", "handle", "health", "init"])),
    b=st.tuples(st.text(max_size=5), st.sampled_from(["poll", "handle", "health", "init"])),
)
def test_same_key_on_different_targets_never_collides(
    key: str, a: tuple[str, str], b: tuple[str, str]
) -> None:
    ia = identity_of(job(plugin=a[0], command=a[1], key=key))
    ib = identity_of(job(plugin=b[0], command=b[1], key=key))
    assert (ia == ib) == (a == b)


def test_fan_out_siblings_with_an_inherited_key_keep_distinct_identities() -> None:
    env = Envelope(
        type="new", payload={}, source="src", timestamp=NOW, event_id="e1", dedupe_key="delivery-7"
    )
    routes = [Route(source="src", event_type="new", target=t) for t in ("a", "b")]
    out = fan_out(
        [env],
        routes=routes,
        targets={"a": Target(max_attempts=4), "b": Target(max_attempts=4)},
        parent_job_id="parent",
        at=NOW,
    )
    identities = {identity_of(child) for child in out.children}
    assert len(out.children) == 2
    assert identities == {
        DedupeIdentity("a", "handle", "delivery-7"),
        DedupeIdentity("b", "handle", "delivery-7"),
    }


def test_queued_blocks() -> None:
    assert blocks(job(S.QUEUED), now=NOW, ttl=TTL)
    # however old it is: it will run anyway
    assert blocks(job(S.QUEUED, created_at=NOW - timedelta(days=90)), now=NOW, ttl=TTL)


@pytest.mark.parametrize(
    ("age", "expected"),
    [
        (timedelta(0), True),
        (timedelta(hours=1), True),
        (TTL - timedelta(microseconds=1), True),
        (TTL, True),  # the boundary is inside the window
        (TTL + timedelta(microseconds=1), False),
        (timedelta(days=3), False),
    ],
)
def test_success_blocks_only_within_ttl(age: timedelta, expected: bool) -> None:
    done = job(S.SUCCEEDED, completed_at=NOW - age, created_at=NOW - age - timedelta(minutes=1))
    assert blocks(done, now=NOW, ttl=TTL) is expected


def test_running_blocks() -> None:
    """D1 as amended: a redelivery while the first job runs is the same delivery."""
    running = job(S.RUNNING, created_at=NOW - timedelta(days=90))
    assert blocks(running, now=NOW, ttl=TTL)
    assert find_duplicate([running], now=NOW, ttl=TTL) == running


@pytest.mark.parametrize("status", [S.FAILED, S.TIMED_OUT, S.DEAD])
def test_failed_and_dead_never_block(status: JobStatus) -> None:
    completed = NOW if status is S.DEAD else None
    assert not blocks(job(status, completed_at=completed), now=NOW, ttl=TTL)
    assert find_duplicate([job(status, completed_at=completed)], now=NOW, ttl=TTL) is None


def test_success_without_completion_time_does_not_block() -> None:
    assert not blocks(job(S.SUCCEEDED, completed_at=None), now=NOW, ttl=TTL)


def test_find_duplicate_with_nothing() -> None:
    assert find_duplicate([], now=NOW, ttl=TTL) is None


def test_find_duplicate_prefers_a_queued_job_over_a_newer_success() -> None:
    recent = job(S.SUCCEEDED, id="done", completed_at=NOW - timedelta(minutes=1))
    queued = job(S.QUEUED, id="waiting", created_at=NOW - timedelta(hours=2))
    for order in ([recent, queued], [queued, recent]):
        found = find_duplicate(order, now=NOW, ttl=TTL)
        assert found is not None
        assert found.id == "waiting"


def test_find_duplicate_prefers_queued_then_running_then_a_success() -> None:
    recent = job(S.SUCCEEDED, id="done", completed_at=NOW - timedelta(minutes=1))
    running = job(S.RUNNING, id="running", created_at=NOW - timedelta(hours=3))
    queued = job(S.QUEUED, id="waiting", created_at=NOW - timedelta(hours=2))
    for order in ([recent, running, queued], [queued, running, recent], [running, queued, recent]):
        found = find_duplicate(order, now=NOW, ttl=TTL)
        assert found is not None
        assert found.id == "waiting"
    for order in ([recent, running], [running, recent]):
        found = find_duplicate(order, now=NOW, ttl=TTL)
        assert found is not None
        assert found.id == "running"


def test_find_duplicate_picks_the_oldest_queued_and_the_latest_success() -> None:
    q_old = job(S.QUEUED, id="q-old", created_at=NOW - timedelta(hours=3))
    q_new = job(S.QUEUED, id="q-new", created_at=NOW - timedelta(hours=1))
    found = find_duplicate([q_new, q_old], now=NOW, ttl=TTL)
    assert found is not None
    assert found.id == "q-old"

    s_old = job(S.SUCCEEDED, id="s-old", completed_at=NOW - timedelta(hours=5))
    s_new = job(S.SUCCEEDED, id="s-new", completed_at=NOW - timedelta(hours=2))
    stale = job(S.SUCCEEDED, id="stale", completed_at=NOW - timedelta(days=2))
    found = find_duplicate([s_old, stale, s_new, job(S.DEAD, id="dead", completed_at=NOW)], now=NOW, ttl=TTL)
    assert found is not None
    assert found.id == "s-new"


candidate = st.builds(
    lambda i, status, created_min, completed_min: job(
        status,
        id=f"j{i}",
        created_at=NOW - timedelta(minutes=created_min),
        completed_at=(
            NOW - timedelta(minutes=min(completed_min, created_min))
            if status in (S.SUCCEEDED, S.DEAD)
            else None
        ),
    ),
    st.integers(0, 10_000),
    st.sampled_from(list(JobStatus)),
    st.integers(0, 4000),
    st.integers(0, 4000),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(candidate, max_size=8))
def test_find_duplicate_property(candidates: list[Job]) -> None:
    found = find_duplicate(candidates, now=NOW, ttl=TTL)
    blockers = [c for c in candidates if blocks(c, now=NOW, ttl=TTL)]
    if not blockers:
        assert found is None
        return
    assert found is not None
    assert found in blockers
    queued = [c for c in blockers if c.status is S.QUEUED]
    running = [c for c in blockers if c.status is S.RUNNING]
    if queued:
        assert found.status is S.QUEUED
        assert found.created_at == min(c.created_at for c in queued)
    elif running:
        assert found.status is S.RUNNING
        assert found.created_at == min(c.created_at for c in running)
    else:
        assert found.status is S.SUCCEEDED
        assert found.completed_at == max(c.completed_at for c in blockers if c.completed_at is not None)
