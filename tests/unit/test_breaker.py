"""The circuit breaker (D3, amended): unit cases and a stateful model check."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import attrs
import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from ductile.domain.breaker import (
    Breaker,
    BreakerPolicy,
    BreakerStatus,
    admit,
    closed,
    record_failure,
    record_success,
    reopens_at,
    reset,
)

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
POLICY = BreakerPolicy(threshold=3, reset_after=timedelta(minutes=30))
R = POLICY.reset_after


def fail_n(breaker: Breaker, n: int, at: datetime = T0) -> Breaker:
    for _ in range(n):
        breaker = record_failure(breaker, now=at, policy=POLICY)
    return breaker


def opened() -> Breaker:
    return fail_n(closed("p", "poll"), 3)


def test_policy_defaults_and_validation() -> None:
    assert BreakerPolicy() == BreakerPolicy(threshold=3, reset_after=timedelta(minutes=30))
    with pytest.raises(ValueError, match="threshold"):
        BreakerPolicy(threshold=0)


def test_closed_breaker_admits_and_is_not_open() -> None:
    b = closed("p", "poll")
    assert b == Breaker(plugin="p", command="poll")
    assert not b.is_open
    ok, same = admit(b, now=T0, policy=POLICY)
    assert ok
    assert same == b
    assert reopens_at(b, POLICY) is None


def test_opens_exactly_at_threshold() -> None:
    b = fail_n(closed("p", "poll"), 2)
    assert b.status is BreakerStatus.CLOSED
    assert b.failures == 2
    assert admit(b, now=T0, policy=POLICY)[0]
    b = record_failure(b, now=T0 + timedelta(seconds=5), policy=POLICY)
    assert b.status is BreakerStatus.OPEN
    assert b.failures == 3
    assert b.opened_at == T0 + timedelta(seconds=5)
    assert b.is_open


def test_threshold_one_opens_on_first_failure() -> None:
    b = record_failure(closed("p", "poll"), now=T0, policy=BreakerPolicy(threshold=1))
    assert b.status is BreakerStatus.OPEN


def test_success_resets_the_consecutive_count() -> None:
    b = fail_n(closed("p", "poll"), 2)
    b = record_success(b)
    assert b == closed("p", "poll")
    b = fail_n(b, 2)
    assert b.status is BreakerStatus.CLOSED


def test_open_refuses_until_reset_after_then_admits_one_probe() -> None:
    b = opened()
    for dt in (timedelta(0), timedelta(minutes=1), R - timedelta(microseconds=1)):
        ok, same = admit(b, now=T0 + dt, policy=POLICY)
        assert not ok, f"admitted {dt} after opening"
        assert same == b
    assert reopens_at(b, POLICY) == T0 + R

    ok, half = admit(b, now=T0 + R, policy=POLICY)
    assert ok
    assert half.status is BreakerStatus.HALF_OPEN
    assert half.probe_at == T0 + R
    assert half.is_open
    # one probe at a time
    ok, again = admit(half, now=T0 + R + timedelta(minutes=1), policy=POLICY)
    assert not ok
    assert again == half
    assert reopens_at(half, POLICY) == T0 + 2 * R


def test_probe_success_closes() -> None:
    _, half = admit(opened(), now=T0 + R, policy=POLICY)
    assert record_success(half) == closed("p", "poll")


def test_probe_failure_reopens_from_now() -> None:
    _, half = admit(opened(), now=T0 + R, policy=POLICY)
    later = T0 + R + timedelta(minutes=2)
    b = record_failure(half, now=later, policy=POLICY)
    assert b.status is BreakerStatus.OPEN
    assert b.opened_at == later
    assert b.probe_at is None
    assert b.failures == 4
    assert not admit(b, now=later + R - timedelta(seconds=1), policy=POLICY)[0]
    assert admit(b, now=later + R, policy=POLICY)[0]


def test_lost_probe_is_readmitted_after_another_reset_after() -> None:
    _, half = admit(opened(), now=T0 + R, policy=POLICY)
    assert not admit(half, now=T0 + 2 * R - timedelta(seconds=1), policy=POLICY)[0]
    ok, again = admit(half, now=T0 + 2 * R, policy=POLICY)
    assert ok
    assert again.status is BreakerStatus.HALF_OPEN
    assert again.probe_at == T0 + 2 * R


def test_failure_while_open_keeps_opened_at() -> None:
    b = opened()
    later = T0 + timedelta(minutes=10)
    b2 = record_failure(b, now=later, policy=POLICY)
    assert b2.status is BreakerStatus.OPEN
    assert b2.opened_at == T0
    assert b2.failures == 4
    assert admit(b2, now=T0 + R, policy=POLICY)[0], "a failure while open must not push the probe back"


def test_success_while_open_closes() -> None:
    # a job queued before the breaker opened still runs; its success closes it
    assert record_success(opened()) == closed("p", "poll")


@pytest.mark.parametrize("which", ["closed", "some_failures", "open", "half_open"])
def test_manual_reset_closes_from_anywhere(which: str) -> None:
    b = {
        "closed": closed("p", "poll"),
        "some_failures": fail_n(closed("p", "poll"), 2),
        "open": opened(),
        "half_open": admit(opened(), now=T0 + R, policy=POLICY)[1],
    }[which]
    assert reset(b) == closed("p", "poll")
    assert admit(reset(b), now=T0, policy=POLICY)[0]


def test_breaker_is_frozen_and_keeps_its_identity() -> None:
    b = opened()
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        b.failures = 0  # type: ignore[misc]
    assert (reset(b).plugin, reset(b).command) == ("p", "poll")


# --- stateful check against a tiny reference model ------------------------------


@attrs.define
class Model:
    """The breaker as SPEC D3 describes it, in the plainest terms."""

    threshold: int
    reset_after: timedelta
    state: str = "closed"
    failures: int = 0
    opened_at: datetime | None = None
    probe_at: datetime | None = None

    def admit(self, now: datetime) -> bool:
        if self.state == "closed":
            return True
        since = self.opened_at if self.state == "open" else self.probe_at
        assert since is not None
        if now - since >= self.reset_after:
            self.state, self.probe_at = "half_open", now
            return True
        return False

    def success(self) -> None:
        self.state, self.failures, self.opened_at, self.probe_at = "closed", 0, None, None

    def failure(self, now: datetime) -> None:
        self.failures += 1
        if self.state == "half_open" or (self.state == "closed" and self.failures >= self.threshold):
            self.state, self.opened_at, self.probe_at = "open", now, None


class BreakerMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.now = T0
        self.policy = POLICY
        self.breaker = closed("p", "poll")
        self.model = Model(threshold=POLICY.threshold, reset_after=POLICY.reset_after)
        self.last_probe: datetime | None = None

    @initialize(threshold=st.integers(1, 5), reset_minutes=st.integers(1, 60))
    def configure(self, threshold: int, reset_minutes: int) -> None:
        self.policy = BreakerPolicy(threshold=threshold, reset_after=timedelta(minutes=reset_minutes))
        self.model = Model(threshold=threshold, reset_after=self.policy.reset_after)

    @rule(minutes=st.integers(0, 90), seconds=st.integers(0, 59))
    def advance(self, minutes: int, seconds: int) -> None:
        self.now += timedelta(minutes=minutes, seconds=seconds)

    @rule()
    def ask(self) -> None:
        was_open = self.breaker.is_open
        ok, self.breaker = admit(self.breaker, now=self.now, policy=self.policy)
        assert ok == self.model.admit(self.now)
        if ok and was_open:
            # at most one probe per reset_after while not closed
            if self.last_probe is not None:
                assert self.now - self.last_probe >= self.policy.reset_after
            self.last_probe = self.now

    @rule()
    def success(self) -> None:
        self.breaker = record_success(self.breaker)
        self.model.success()
        self.last_probe = None

    @rule()
    def failure(self) -> None:
        before = self.breaker
        self.breaker = record_failure(self.breaker, now=self.now, policy=self.policy)
        self.model.failure(self.now)
        if before.status is BreakerStatus.OPEN:
            assert self.breaker.opened_at == before.opened_at

    @rule()
    def operator_reset(self) -> None:
        self.breaker = reset(self.breaker)
        self.model.success()
        self.last_probe = None

    @invariant()
    def matches_model(self) -> None:
        b, m = self.breaker, self.model
        assert b.status.value == m.state
        assert b.failures == m.failures
        assert b.opened_at == m.opened_at
        assert b.probe_at == m.probe_at
        assert b.is_open == (m.state != "closed")

    @invariant()
    def open_refuses_before_reset_after(self) -> None:
        b = self.breaker
        if b.status is BreakerStatus.OPEN:
            assert b.opened_at is not None
            if self.now < b.opened_at + self.policy.reset_after:
                assert admit(b, now=self.now, policy=self.policy) == (False, b)
        if b.status is BreakerStatus.HALF_OPEN:
            assert b.probe_at is not None
            if self.now < b.probe_at + self.policy.reset_after:
                assert admit(b, now=self.now, policy=self.policy) == (False, b)
        if b.status is BreakerStatus.CLOSED:
            assert admit(b, now=self.now, policy=self.policy) == (True, b)

    @invariant()
    def reopens_at_agrees_with_admit(self) -> None:
        at = reopens_at(self.breaker, self.policy)
        if at is None:
            assert self.breaker.status is BreakerStatus.CLOSED
        else:
            assert not admit(self.breaker, now=at - timedelta(microseconds=1), policy=self.policy)[0]
            assert admit(self.breaker, now=at, policy=self.policy)[0]


BreakerMachine.TestCase.settings = settings(max_examples=150, stateful_step_count=30, deadline=None)
test_breaker_against_model = BreakerMachine.TestCase
