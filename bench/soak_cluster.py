"""Two daemons on one PostgreSQL, long soak: random SIGKILL, SIGSTOP, PostgreSQL restarts under load.

    .venv/bin/python bench/soak_cluster.py [--cycles 40] [--jobs 1000] [--seed 1] [--fsync]

Starts a throwaway PostgreSQL cluster (as the tests do: ``tests/support/postgres.py``;
``--fsync`` keeps fsync on), two daemons on it (hostA, hostB), posts signed
webhooks to both, and draws one fault per cycle (SIGKILL and restart, SIGKILL
and stay down past a lease, SIGSTOP past a lease and a deadline, ``pg_ctl
restart``); then drains and checks: nothing acknowledged lost, every job
terminal, no two runs of the lane overlapping, no planned run fired twice, no
plugin process left, both daemons exit 0 on SIGTERM. The harness is
``tests/soak/cluster.py`` (the short version runs in the test suite).
Exit status 1 when a check fails.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.soak.cluster import ClusterSoakSettings, run_cluster_soak  # noqa: E402
from tests.support.postgres import running_cluster  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cycles", type=int, default=40, help="faults to draw (default 40)")
    parser.add_argument("--jobs", type=int, default=1000, help="webhook deliveries (default 1000)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--fsync", action="store_true", help="run PostgreSQL with fsync on")
    args = parser.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="ductile-soak-cluster-"))
    try:
        with running_cluster(fsync=args.fsync) as cluster:
            name = cluster.new_database()
            settings = ClusterSoakSettings(cycles=args.cycles, jobs=args.jobs, seed=args.seed)
            report = run_cluster_soak(root, cluster.url(name), cluster, settings)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    for key, value in report.figures().items():
        print(f"{key:40} {value}")
    problems = report.problems()
    for problem in problems:
        print("PROBLEM:", problem)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
