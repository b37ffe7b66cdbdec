"""Properties of the pieces that keep faults quiet and figures honest: episodes, MiB rounding,
the fault tracker's episodes, the mode-bit permission check (issue 19; ADR 0041, 0042)."""

from __future__ import annotations

import logging
import os
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ductile.adapters.runas import R, RunAs, W, X, allowed
from ductile.adapters.sqlite.errors import StoreBusyError, StoreCorruptError, StoreFullError
from ductile.adapters.sqlite.faults import QUIET, FaultTracker, mib
from ductile.log import Episode, Log

# --------------------------------------------------------------------------- Episode


class Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def quiet_logger(name: str) -> tuple[logging.Logger, Lines]:
    """A private logger (not ductile's) whose lines are kept."""
    logger = logging.getLogger(name)
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    logger.handlers = []
    lines = Lines()
    logger.addHandler(lines)
    return logger, lines


def _runs(outcomes: list[bool]) -> int:
    """How many runs of failures (``False``) the sequence holds."""
    return sum(1 for i, ok in enumerate(outcomes) if not ok and (i == 0 or outcomes[i - 1]))


@given(st.lists(st.booleans(), max_size=60))
def test_an_episode_logs_once_when_a_run_of_failures_begins_and_once_when_it_ends(
    outcomes: list[bool],
) -> None:
    logger, lines = quiet_logger("tests.episode")
    episode = Episode(Log("x", logger=logger), "thing")
    for ok in outcomes:
        if ok:
            episode.ended()
        else:
            episode.failed(ValueError("boom"))
    began = [r for r in lines.records if "thing failed: boom" in r.getMessage()]
    ended = [r for r in lines.records if "thing works again" in r.getMessage()]
    runs = _runs(outcomes)
    assert len(began) == runs
    assert len(ended) == runs - (1 if outcomes and not outcomes[-1] else 0)
    assert len(lines.records) == len(began) + len(ended)
    assert episode.failing == bool(outcomes and not outcomes[-1])


def test_an_episode_keeps_the_traceback_only_when_asked() -> None:
    logger, lines = quiet_logger("tests.episode.tb")
    episode = Episode(Log("x", logger=logger), "thing")
    try:
        raise RuntimeError("a bug")
    except RuntimeError as e:
        episode.failed(e, traceback=True)
    episode.ended()
    episode.failed(StoreFullError("the disk is full"))
    assert lines.records[0].exc_info is not None
    assert lines.records[2].exc_info is None


# --------------------------------------------------------------------------- mib


@given(st.integers(min_value=0, max_value=2**50))
def test_mib_never_understates_what_to_free(size: int) -> None:
    text = mib(size)
    assert text.endswith(" MiB")
    shown = float(text.removesuffix(" MiB"))
    assert shown >= 0.1
    assert shown * 1024 * 1024 >= size
    assert (shown - 0.1) * 1024 * 1024 < max(size, 1)


# --------------------------------------------------------------------------- the fault tracker


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 12, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


_STEP = st.one_of(
    st.tuples(st.just("fail"), st.sampled_from(["full", "busy"])),
    st.tuples(st.just("ok"), st.just("")),
    st.tuples(st.just("wait"), st.floats(min_value=0, max_value=10)),
)


@given(st.lists(_STEP, max_size=40))
def test_the_tracker_says_the_fault_of_now_and_logs_each_episode_once(
    steps: list[tuple[str, object]],
) -> None:
    logger = logging.getLogger("ductile")
    lines = Lines()
    logger.addHandler(lines)
    level = logger.level
    logger.setLevel(logging.DEBUG)
    clock = Clock()
    tracker = FaultTracker(Path("/x/ductile.db"), now=clock)
    errors = {"full": StoreFullError("full"), "busy": StoreBusyError("busy")}
    try:
        for kind, arg in steps:
            if kind == "fail":
                tracker.failed(errors[str(arg)])
                fault = tracker.fault
                assert fault is not None
                assert fault.kind == arg
            elif kind == "ok":
                tracker.succeeded()
                assert tracker.fault is None
            else:
                clock.now += timedelta(seconds=float(arg))  # type: ignore[arg-type]
                tracker.tick()
        began = [r for r in lines.records if "refuses writes" in r.getMessage()]
        ended = [r for r in lines.records if "accepts writes again" in r.getMessage()]
        # An episode is announced before it ends, and never ends twice.
        assert len(ended) <= len(began)
        failures = sum(1 for kind, _ in steps if kind == "fail")
        assert len(began) <= failures
    finally:
        logger.removeHandler(lines)
        logger.setLevel(level)


def test_an_episode_ends_only_after_writes_worked_quietly_and_a_permanent_fault_stays() -> None:
    clock = Clock()
    tracker = FaultTracker(Path("/x/ductile.db"), now=clock)
    tracker.failed(StoreFullError("full"))
    since = tracker.fault.since if tracker.fault else None
    tracker.succeeded()
    clock.now += timedelta(seconds=QUIET / 2)
    tracker.failed(StoreFullError("full again"))  # the same episode
    assert tracker.fault is not None
    assert tracker.fault.since == since
    tracker.succeeded()
    clock.now += timedelta(seconds=QUIET)
    tracker.tick()
    tracker.failed(StoreCorruptError("corrupt"))
    tracker.succeeded()
    fault = tracker.fault
    assert fault is not None
    assert (fault.kind, fault.transient) == ("corrupt", False)
    tracker.failed(StoreFullError("full"))  # a permanent fault keeps its own words
    assert tracker.fault == fault


# --------------------------------------------------------------------------- mode bits


def _who(uid: int, groups: tuple[int, ...]) -> RunAs:
    return RunAs(name="u", uid=uid, gid=groups[0], groups=groups, home="/")


def _st(mode: int, uid: int, gid: int, *, directory: bool = False) -> os.stat_result:
    kind = stat.S_IFDIR if directory else stat.S_IFREG
    return os.stat_result((kind | mode, 0, 0, 1, uid, gid, 0, 0, 0, 0))


@given(
    st.integers(min_value=0, max_value=0o777),
    st.sampled_from([1000, 2000]),
    st.sampled_from([100, 200]),
    st.sampled_from([R, W, X, R | X, R | W | X]),
)
def test_permission_comes_from_the_first_class_that_matches(
    mode: int, owner: int, group: int, want: int
) -> None:
    who = _who(1000, (100, 300))
    st_ = _st(mode, owner, group)
    if owner == who.uid:
        bits = (mode >> 6) & 7
    elif group in who.groups:
        bits = (mode >> 3) & 7
    else:
        bits = mode & 7
    assert allowed(st_, who, want) == (bits & want == want)


@pytest.mark.parametrize(("mode", "expected"), [(0o000, False), (0o100, True), (0o001, True), (0o644, False)])
def test_root_needs_one_execute_bit_to_run_a_file_and_nothing_to_read_it(mode: int, expected: bool) -> None:
    root = _who(0, (0,))
    assert allowed(_st(mode, 1000, 1000), root, X) is expected
    assert allowed(_st(mode, 1000, 1000), root, R | W) is True
