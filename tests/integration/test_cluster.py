"""Two real daemons on one PostgreSQL (ADR 0033, 0034): shared work, fail-over, the fence.

Two sites, ``hostA`` and ``hostB`` (separate state directories, so separate
instances), run the same config against one database of the session's
throwaway cluster: a lease of 3 s renewed every second, plugin timeouts of
3 s (a claim's hold, and so its deadline, is 3 + 5 + 2 = 10 s). The plugin
appends ``<job> <attempt> start|end <time> <pid> <site>`` lines to one shared
log (one ``write`` each on an ``O_APPEND`` file), so the test sees every run
of both daemons. Its first attempt of a job sleeps ``FIRST`` seconds (the
payload-free way to make a run long), later attempts 0.2 s. Every wait has a
bounded deadline.
"""

from __future__ import annotations

import itertools
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.cluster import FAILOVER_BOUND, Pair
from tests.support.postgres import Cluster
from tests.support.site import Daemon, Site, alive, log_match, wait_until


@pytest.fixture
def pair(tmp_path: Path, pg_url: str) -> Iterator[Pair]:
    both = Pair(tmp_path, pg_url)
    try:
        yield both
    finally:
        both.teardown()


def overlapping(runs: list[list[str]]) -> list[str]:
    """Runs of one job that overlap (a run without an end line counts as never ending)."""
    spans: dict[str, list[tuple[float, float]]] = {}
    starts = {(r[0], r[1]): r for r in runs if r[2] == "start"}
    finished = {(r[0], r[1]): float(r[3]) for r in runs if r[2] == "end"}
    for key, r in starts.items():
        end = finished.get(key, float("inf"))
        spans.setdefault(key[0], []).append((float(r[3]), end))
    bad = []
    for job, intervals in spans.items():
        intervals.sort()
        bad += [job for (_, e1), (s2, _) in itertools.pairwise(intervals) if s2 < e1]
    return bad


# --------------------------------------------------------------------------- tests


def test_two_daemons_share_the_work_and_a_webhook_on_either_makes_one_job(pair: Pair) -> None:
    pair.configure(first=0.3, workers=2, parallelism=2)
    da, db = pair.a.start(), pair.b.start()
    ids = [(pair.a if n % 2 else pair.b).run_job("rec") for n in range(10)]
    wait_until(
        lambda: pair.query("SELECT count(*) FROM jobs WHERE status = 'succeeded'") == [(10,)],
        60.0,
        "ten jobs to succeed",
    )
    nodes = {row[0] for row in pair.query("SELECT DISTINCT node FROM jobs")}
    assert len(nodes) == 2, f"one node did all the work: {nodes}"
    assert {r[0] for r in pair.runs() if r[2] == "end"} == set(ids)
    assert all(r[1] == "1" for r in pair.runs())  # nothing ran twice
    queue_doc = pair.b.cli_json("status", "--no-health")
    assert sorted(n["id"] for n in queue_doc["nodes"]) == sorted(nodes)
    assert sum(1 for n in queue_doc["nodes"] if n["leading"]) == 1
    assert da.terminate() == 0
    assert db.terminate() == 0


def test_a_sigkilled_daemons_job_is_rerun_by_the_other_after_its_deadline(pair: Pair) -> None:
    pair.configure(first=30)
    da = pair.a.start()
    job = pair.a.run_job("rec")
    first = wait_until(lambda: pair.started(job, 1), 15.0, "hostA to start the job")
    db = pair.b.start()
    killed_at = time.time()
    os.kill(da.pid, signal.SIGKILL)
    da.wait_exit(10.0)
    pid = first[4]
    gone = wait_until(lambda: not alive(int(pid)) and time.time(), 20.0, "the watchdog to end attempt 1")
    second = wait_until(lambda: pair.started(job, 2), FAILOVER_BOUND, "hostB to run attempt 2")
    assert second[5] == "B"
    assert float(second[3]) >= gone - 0.05, "attempt 2 began while attempt 1 still ran"
    assert float(second[3]) - killed_at < FAILOVER_BOUND
    wait_until(lambda: pair.status(job) == ("succeeded", 2, _node_of(db)), 15.0, "attempt 2 to succeed on B")
    db.wait_for_log(log_match("job of a dead node re-queued", component="recovery"), 5.0, "the peer recovery")


def test_a_frozen_daemon_fences_itself_on_resume_and_its_late_result_is_refused(pair: Pair) -> None:
    pair.configure(first=8)
    da = pair.a.start()
    job = pair.a.run_job("rec")
    first = wait_until(lambda: pair.started(job, 1), 15.0, "hostA to start the job")
    db = pair.b.start()
    os.kill(da.pid, signal.SIGSTOP)
    try:
        # the watchdog ends attempt 1 (sleeping 8 s) by its claim's deadline, the daemon frozen or not
        gone = wait_until(
            lambda: not alive(int(first[4])) and time.time(), 15.0, "the watchdog to end attempt 1"
        )
        second = wait_until(
            lambda: pair.started(job, 2), FAILOVER_BOUND, "hostB to run attempt 2 while A is frozen"
        )
        assert float(second[3]) >= gone - 0.05, "attempt 2 began while attempt 1 still ran"
        wait_until(
            lambda: pair.status(job) == ("succeeded", 2, _node_of(db)), 15.0, "attempt 2 to succeed on B"
        )
    finally:
        os.kill(da.pid, signal.SIGCONT)
    da.wait_for_log(log_match("claim lost, result discarded", job_id=job), 15.0, "A's late settle refused")
    da.wait_for_log(log_match("fenced:", component="cluster"), 15.0, "A to fence itself")
    da.wait_for_log(log_match("rejoined the cluster", component="cluster"), 15.0, "A to rejoin")
    assert pair.status(job) == ("succeeded", 2, _node_of(db))  # B's result stands
    assert [r[5] for r in pair.runs() if r[2] == "end"] == ["B"]  # A's attempt never ended by itself


def test_both_daemons_carry_on_through_a_postgresql_restart(pair: Pair, pg_cluster: Cluster) -> None:
    pair.configure(first=0.2, workers=2, parallelism=2)
    da, db = pair.a.start(), pair.b.start()
    ids = [pair.a.run_job("rec") for _ in range(12)]
    wait_until(
        lambda: pair.query("SELECT count(*) FROM jobs WHERE status = 'succeeded'")[0][0] >= 3,  # type: ignore[operator]
        30.0,
        "a few jobs to succeed",
    )
    pg_cluster.restart()
    ids += [_run_retrying(pair.b) for _ in range(6)]  # acknowledged after the restart
    wait_until(
        lambda: pair.query("SELECT count(*) FROM jobs WHERE status = 'succeeded'") == [(len(ids),)],
        60.0,
        "every acknowledged job to succeed",
    )
    assert sorted(str(r[0]) for r in pair.query("SELECT id FROM jobs")) == sorted(ids)
    assert da.proc.poll() is None
    assert db.proc.poll() is None
    assert not overlapping(pair.runs())


def test_the_leader_stepping_down_hands_over_within_a_few_heartbeats(pair: Pair) -> None:
    pair.configure(first=0.2)
    da = pair.a.start()
    da.wait_for_log(log_match("this node leads now", component="cluster"), 10.0, "A to lead")
    db = pair.b.start()
    stopped = time.monotonic()
    assert da.terminate() == 0
    db.wait_for_log(log_match("this node leads now", component="cluster"), 10.0, "B to take over")
    assert time.monotonic() - stopped < 10.0


def _node_of(daemon: Daemon) -> str:
    line = daemon.wait_for_log(log_match("joined the cluster", component="cluster"), 10.0, "the node id")
    return str(line["node"])


def _run_retrying(site: Site) -> str:
    """``ductile run`` until PostgreSQL takes connections again (it restarts meanwhile)."""
    deadline = time.monotonic() + 30.0
    while True:
        done = site.cli("run", "rec", "--json")
        if done.returncode == 0:
            import json

            job_id: str = json.loads(done.stdout)["job_id"]
            return job_id
        if time.monotonic() > deadline:
            raise AssertionError(f"ductile run kept failing: {done.stderr}")
        time.sleep(0.2)
