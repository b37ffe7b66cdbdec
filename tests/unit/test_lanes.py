"""Lanes (D14 [A2], ADR 0031): slots, widths, the running identities, a claim's facts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from ductile.domain.job import Claim, Job, JobStatus
from ductile.domain.lanes import Busy, Lanes, busy, claim_of, free_slot, identity

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def running(plugin: str, slot: int | None, *, key: str | None = None, command: str = "poll") -> Job:
    return Job(
        id=f"{plugin}-{slot}-{key}",
        plugin=plugin,
        command=command,
        status=JobStatus.RUNNING,
        dedupe_key=key,
        created_at=T0,
        slot=slot,
    )


@given(st.sets(st.integers(min_value=0, max_value=12)), st.one_of(st.none(), st.integers(1, 14)))
def test_free_slot_is_the_lowest_untaken_one_below_the_width(taken: set[int], width: int | None) -> None:
    slot = free_slot(taken, width)
    lowest = min(n for n in range(len(taken) + 1) if n not in taken)
    if width is None or lowest < width:
        assert slot == lowest
    else:
        assert slot is None


def test_busy_counts_running_jobs_their_slots_and_identities() -> None:
    state = busy([running("a", 0, key="k"), running("a", 1), running("b", None), running("c", 0, key="k")])
    assert state.running == {"a": 2, "b": 1, "c": 1}
    assert state.slots == {"a": frozenset({0, 1}), "c": frozenset({0})}
    assert state.identities == {("a", "poll", "k"), ("c", "poll", "k")}


def test_saturated_lanes_are_those_at_their_width() -> None:
    state = busy([running("a", 0), running("b", 0), running("b", 1)])
    lanes = Lanes(widths={"a": 1, "b": 3}, default_width=1)
    assert state.saturated(lanes) == {"a"}
    assert state.saturated(Lanes()) == frozenset()  # no width: never saturated


@given(
    st.lists(st.tuples(st.sampled_from("abc"), st.integers(0, 5)), max_size=12, unique=True),
    st.dictionaries(st.sampled_from("abc"), st.integers(1, 4)),
    st.sampled_from("abc"),
)
def test_a_claim_never_overfills_a_lane_nor_takes_a_taken_slot(
    taken: list[tuple[str, int]], widths: dict[str, int], plugin: str
) -> None:
    state = busy([running(p, s) for p, s in taken])
    lanes = Lanes(widths=widths, default_width=2)
    job = Job(id="new", plugin=plugin, command="poll", created_at=T0)
    got = claim_of(job, state, lanes, node=None, now=T0)
    width = lanes.width(plugin)
    assert width is not None
    if state.running.get(plugin, 0) >= width:
        assert got is None
    elif got is not None:
        assert got.slot is not None
        assert got.slot not in state.slots.get(plugin, frozenset())
        assert got.slot < width


def test_a_claim_of_a_running_identity_is_refused_and_otherwise_carries_node_and_deadline() -> None:
    state = busy([running("a", 0, key="k")])
    lanes = Lanes(default_width=3, default_hold=timedelta(seconds=97))
    same = Job(id="x", plugin="a", command="poll", dedupe_key="k", created_at=T0)
    other = Job(id="y", plugin="a", command="poll", dedupe_key="other", created_at=T0)
    assert identity(same) == ("a", "poll", "k")
    assert claim_of(same, state, lanes, node="n1", now=T0) is None
    assert claim_of(other, state, lanes, node="n1", now=T0) == Claim(
        slot=1, node="n1", deadline_at=T0 + timedelta(seconds=97)
    )
    assert claim_of(other, Busy(), Lanes(), node=None, now=T0) == Claim(slot=0)
