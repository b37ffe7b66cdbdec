"""The Spawner contract: only what every Spawner must share.

The scripted spawner emulates the suite's plugins in Python; a real spawner
runs them as tiny ``#!/bin/sh`` scripts (``tests.support.cases.PLUGIN_SCRIPTS``).
"""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from ductile.domain.outcome import SpawnOutcome
from ductile.ports.spawner import ProcessHandle
from tests.support.cases import SLOW_SECONDS, SpawnerCase


async def run_recording(
    case: SpawnerCase, plugin: str, **request: object
) -> tuple[SpawnOutcome, list[object]]:
    """Run ``plugin``; return the outcome and what happened, in order."""
    events: list[object] = []

    async def on_start(handle: ProcessHandle) -> None:
        events.append(handle)

    outcome = await asyncio.wait_for(
        case.spawner.run(case.request(plugin, **request), on_start=on_start),  # type: ignore[arg-type]
        timeout=10.0,
    )
    events.append("returned")
    return outcome, events


def assert_started_once(events: list[object]) -> ProcessHandle:
    assert len(events) == 2, f"on_start should be awaited exactly once, then run returns: {events}"
    handle, last = events
    assert last == "returned"
    assert isinstance(handle, ProcessHandle), f"on_start got {handle!r}"
    assert handle.pid > 0
    assert handle.pgid > 0
    return handle


def test_an_ok_plugin_reports_exit_0_and_its_stdout(spawner_case: SpawnerCase) -> None:
    outcome, events = asyncio.run(run_recording(spawner_case, "ok"))
    assert_started_once(events)
    assert outcome.exit_code == 0
    assert json.loads(outcome.stdout) == {"status": "ok"}
    assert (outcome.timed_out, outcome.signal, outcome.spawn_error, outcome.stdout_overflow) == (
        False,
        None,
        None,
        False,
    )


def test_the_exit_code_is_reported_with_the_output(spawner_case: SpawnerCase) -> None:
    outcome, events = asyncio.run(run_recording(spawner_case, "exit3"))
    assert_started_once(events)
    assert outcome.exit_code == 3
    assert outcome.stdout == b"broken"
    assert outcome.timed_out is False


def test_the_plugin_reads_exactly_the_request_on_stdin(spawner_case: SpawnerCase) -> None:
    body = json.dumps({"protocol": 1, "job_id": "j-1", "command": "poll", "config": {"x": "ü"}}).encode()
    outcome, events = asyncio.run(run_recording(spawner_case, "echo", stdin=body))
    assert_started_once(events)
    assert (outcome.exit_code, outcome.stdout) == (0, body)


def test_a_plugin_exceeding_its_timeout_is_reported_timed_out(spawner_case: SpawnerCase) -> None:
    started = time.monotonic()
    outcome, events = asyncio.run(run_recording(spawner_case, "slow", timeout=0.3))
    assert_started_once(events)
    assert outcome.timed_out is True
    assert time.monotonic() - started < SLOW_SECONDS / 3, "the spawner waited for the plugin to finish"


def test_an_executable_that_does_not_exist_is_a_spawn_error_without_on_start(
    spawner_case: SpawnerCase,
) -> None:
    outcome, events = asyncio.run(run_recording(spawner_case, "missing"))
    assert events == ["returned"], "on_start must not be awaited when no process was started"
    assert outcome.spawn_error, outcome
    assert outcome.exit_code is None
    assert outcome.timed_out is False


@pytest.mark.parametrize("plugin", ["ok", "exit3"])
def test_kill_orphan_of_a_finished_run_signals_nothing(spawner_case: SpawnerCase, plugin: str) -> None:
    async def main() -> None:
        _, events = await run_recording(spawner_case, plugin)
        handle = assert_started_once(events)
        # run() returned: nothing of its group survives, so there is nothing to kill
        assert await spawner_case.spawner.kill_orphan(handle) is False

    asyncio.run(main())
