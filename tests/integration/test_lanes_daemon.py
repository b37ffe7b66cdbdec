"""Lanes in the real daemon (D14 [A2]): several jobs at once, each lane within its width.

The plugins are ``/bin/sh`` scripts that append ``<job> start <t>`` and
``<job> end <t>`` lines (``date +%s.%N``, one ``write`` each on an
``O_APPEND`` file) around a sleep, so the test reads the real overlap of the
runs. Waits are on conditions with bounded deadlines.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

from tests.support.plugins import shell_plugin
from tests.support.site import (
    START_TIMEOUT,
    Site,
    alive,
    log_match,
    wait_until,
)


def timed(log: Path, seconds: str, *, later: str | None = None) -> str:
    """A plugin that logs its start and end around a sleep of ``seconds`` (``later``: from
    the second attempt on)."""
    pause = (
        f"sleep {seconds}"
        if later is None
        else (f'if [ "$DUCTILE_ATTEMPT" = 1 ]; then sleep {seconds}; else sleep {later}; fi')
    )
    return shell_plugin(
        f"""
echo "$DUCTILE_JOB_ID start $(date +%s.%N) $$" >> '{log}'
{pause}
echo "$DUCTILE_JOB_ID end $(date +%s.%N) $$" >> '{log}'
printf '%s\\n' '{{"status": "ok"}}'
"""
    )


def intervals(log: Path) -> dict[str, tuple[float, float | None]]:
    """job id -> (start, end or None) of its last run, from a plugin's log."""
    spans: dict[str, tuple[float, float | None]] = {}
    for line in log.read_text().splitlines() if log.exists() else []:
        job, what, at, _ = line.split()
        if what == "start":
            spans[job] = (float(at), None)
        else:
            spans[job] = (spans[job][0], float(at))
    return spans


def most_at_once(spans: list[tuple[float, float]]) -> int:
    edges = sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans], key=lambda e: (e[0], e[1]))
    now = most = 0
    for _, step in edges:
        now += step
        most = max(most, now)
    return most


def finished(site: Site, plugin: str, count: int) -> dict[str, tuple[float, float]]:
    def done() -> dict[str, tuple[float, float]] | None:
        spans = intervals(site.out / f"{plugin}.log")
        ended = {j: (s, e) for j, (s, e) in spans.items() if e is not None}
        return ended if len(ended) >= count else None

    found = wait_until(done, 60.0, f"{count} runs of {plugin} to end")
    return found


def test_lanes_run_within_their_widths_and_a_full_lane_holds_back_no_one(site: Site) -> None:
    site.plugin("slow", timed(site.out / "slow.log", "1"))
    site.plugin("quick", timed(site.out / "quick.log", "0.1"))
    site.write_config({"slow": {"parallelism": 2}}, service={"max_workers": 3})
    for _ in range(6):
        site.run_job("slow")
    quick_id = site.run_job("quick")  # queued behind six slow jobs
    site.start()
    slow = finished(site, "slow", 6)
    quick = finished(site, "quick", 1)
    assert most_at_once(list(slow.values())) == 2  # slow's lane is 2 wide
    assert most_at_once([*slow.values(), *quick.values()]) <= 3  # max_workers
    # quick was queued last, yet it did not wait for the six slow runs (3 s at width 2)
    last_slow_start = max(s for s, _ in slow.values())
    assert quick[quick_id][0] < last_slow_start
    # a plugin's last line comes before its settle commits: wait for the store, not the log
    wait_until(
        lambda: site.query("SELECT status, COUNT(*) FROM jobs GROUP BY status") == [("succeeded", 7)],
        START_TIMEOUT,
        "every job settled",
    )


def test_shutdown_waits_for_every_job_in_flight(site: Site) -> None:
    site.plugin("slow", timed(site.out / "slow.log", "2"))
    site.write_config({"slow": {"parallelism": 3}}, service={"max_workers": 3})
    daemon = site.start()
    ids = [site.run_job("slow") for _ in range(3)]
    wait_until(
        lambda: len(intervals(site.out / "slow.log")) == 3, START_TIMEOUT, "three runs in flight at once"
    )
    assert daemon.terminate(30.0) == 0
    spans = intervals(site.out / "slow.log")
    assert all(spans[i][1] is not None for i in ids), spans  # each finished, none was cut short
    rows = site.query("SELECT id, status FROM jobs ORDER BY id")
    assert rows == sorted((i, "succeeded") for i in ids)


def test_crash_recovery_kills_every_orphaned_group_before_requeueing(site: Site) -> None:
    site.plugin("slow", timed(site.out / "slow.log", "60", later="0.1"))
    site.write_config(
        {"slow": {"parallelism": 3, "retry": {"backoff_base": "1h"}}}, service={"max_workers": 3}
    )
    daemon = site.start()
    ids = [site.run_job("slow") for _ in range(3)]
    wait_until(lambda: len(intervals(site.out / "slow.log")) == 3, START_TIMEOUT, "three runs in flight")
    pids = [int(line.split()[3]) for line in (site.out / "slow.log").read_text().splitlines()]
    os.kill(daemon.pid, signal.SIGKILL)
    daemon.wait_exit(10.0)
    assert all(alive(pid) for pid in pids), "the plugins outlive a SIGKILLed daemon (their own groups)"
    again = site.start()
    again.wait_for_log(log_match("orphaned job re-queued", component="recovery"), 15.0, "recovery", count=3)
    killed = again.logs(log_match("killed the process group of an orphaned job", component="recovery"))
    assert len(killed) == 3
    wait_until(lambda: not any(alive(pid) for pid in pids), 10.0, "every orphaned group to be gone")
    # re-queued (attempt 2) and run again: each job succeeds on its second attempt
    wait_until(
        lambda: site.query("SELECT COUNT(*) FROM jobs WHERE status = 'succeeded'") == [(3,)],
        30.0,
        "the three jobs to succeed on their second attempt",
    )
    rows = site.query("SELECT id, attempt FROM jobs ORDER BY id")
    assert rows == sorted((i, 2) for i in ids)
