"""The two-daemon soak, short version: random SIGKILL, SIGSTOP and PostgreSQL restarts under load.

Run with ``-m slow`` (~45 s): each of its faults is also covered alone, in the default suite, by
``tests/integration/test_cluster.py``; together they would take the suite past its 15 minutes.

The long version (>= 1,000 jobs, many faults, a cluster with fsync on) is
``bench/soak_cluster.py``; the harness and its checks are in
:mod:`tests.soak.cluster`.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.soak.cluster import ClusterSoakSettings, overlaps, run_cluster_soak
from tests.support.postgres import Cluster

#: Every kind of fault once, the SIGSTOP (a fence) first.
SHORT = ClusterSoakSettings(
    cycles=5,
    jobs=150,
    seed=20260317,
    pace=2.0,
    sequence=("stop", "kill_restart", "pg_restart", "kill_down", "kill_restart"),
)


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_two_daemons_lose_nothing_and_never_overlap_a_lane_under_faults(
    tmp_path: Path, pg_url: str, pg_cluster: Cluster
) -> None:
    report = run_cluster_soak(tmp_path, pg_url, pg_cluster, SHORT)
    figures = report.figures()
    print("\ncluster soak (short):", "; ".join(f"{k}: {v}" for k, v in figures.items()))
    assert report.problems() == [], figures
    assert len(report.acknowledged) == SHORT.jobs
    assert report.succeeded + len(report.dead) == report.jobs_in_db
    assert report.timer_jobs > 0
    assert sum(report.faults.values()) == SHORT.cycles
    assert report.fences >= 1  # the frozen daemon fenced itself


def test_the_overlap_check_has_teeth() -> None:
    runs = [
        ["j1", "1", "start", "100.0", "500", "A"],  # killed at 103 (its group's kill was logged)
        ["j1", "2", "start", "102.0", "600", "B"],
        ["j1", "2", "end", "102.5", "600", "B"],
        ["j2", "1", "start", "110.0", "700", "A"],  # no end, no kill: it may run until 110 + hold
        ["j2", "2", "start", "115.0", "800", "B"],
        ["j2", "2", "end", "115.1", "800", "B"],
        ["j3", "1", "start", "130.0", "900", "A"],
        ["j3", "1", "end", "130.1", "900", "A"],
    ]
    found = overlaps(runs, {"500": 103.0})
    assert found == ["j1#2 began while j1#1 ran", "j2#2 began while j2#1 ran"]
    assert overlaps(runs[5:], {}) == []
