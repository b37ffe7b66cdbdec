"""Fail-over times of two daemons on one PostgreSQL (ADR 0034): new work, in-flight work, leadership.

    .venv/bin/python bench/bench_failover.py [--rounds 3] [--lease 15s] [--heartbeat 3s] [--timeout 10s]

A throwaway PostgreSQL cluster, two daemons (hostA, hostB) with the same
config: the lease and heartbeat given (the defaults are ductile's), the
plugin's timeouts all ``--timeout`` (a claim's deadline is that + 5 s kill
grace + 2 s spawn allowance). Each round measures, from the moment hostA is
SIGKILLed:

* **new work**: a job enqueued with ``ductile run`` on hostB right after the
  kill starts there (the CLI's own start-up included; hostB's dispatcher is
  woken at once; hostA's death does not matter to new work);
* **in-flight work, host lost**: the job hostA was running (its first attempt
  sleeps 300 s) starts again on hostB — bound: max(lease, deadline + 2 s) + one
  peer-recovery sweep period (5 s), counted from the claim;
* **in-flight work, same host restarted**: hostA killed mid-job and started
  again at once recovers its own claim (the flock proves its predecessor dead);
* **leadership**: hostB logs "this node leads now" — bound: the lease and one
  heartbeat (hostB looks at the leadership row at its heartbeats).

Prints the median seconds of the rounds with the range, and the bound each
should keep.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import tempfile
import time
from pathlib import Path

from _common import heading, machine, median, spread, table

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support.cluster import Pair
from tests.support.postgres import running_cluster
from tests.support.site import log_match, wait_until

from ductile.domain.quantities import parse_duration


def one_round(root: Path, url: str, args: argparse.Namespace) -> dict[str, float]:
    pair = Pair(root, url)
    timeouts = {c: args.timeout for c in ("poll", "handle", "health", "init")}
    # hostB runs two jobs at most (its lane is capped at its max_workers); hostA's lane is four
    # wide: hostA's dead claim holds a slot until recovered, new work takes another, and however
    # many jobs hostB takes, hostA always has room for the job it is offered after the restart
    pair.configure(
        first=300,
        lease=args.lease,
        heartbeat=args.heartbeat,
        timeouts=timeouts,
        workers=2,
        a_workers=4,
        parallelism=4,
    )
    bound = parse_duration(args.lease).total_seconds() + parse_duration(args.timeout).total_seconds() + 30
    out: dict[str, float] = {}
    try:
        a = pair.a.start()
        a.wait_for_log(log_match("this node leads now", component="cluster"), 30.0, "A to lead")
        busy = pair.a.run_job("rec")
        wait_until(lambda: pair.started(busy, 1), 30.0, "A to run the job")
        b = pair.b.start()  # only now: the job runs on hostA
        os.kill(a.pid, signal.SIGKILL)
        killed = time.time()
        a.wait_exit(10.0)
        fresh = pair.b.run_job("rec")
        started = wait_until(lambda: pair.started(fresh, 1), 60.0, "B to run new work")
        out["new work"] = float(started[3]) - killed
        again = wait_until(lambda: pair.started(busy, 2), bound, "B to re-run A's job")
        out["in-flight, host lost"] = float(again[3]) - killed
        led = b.wait_for_log(log_match("this node leads now", component="cluster"), bound, "B to lead")
        out["leadership"] = _epoch(str(led["timestamp"])) - killed
        # the same host, restarted at once, hostB running beside it
        a2 = pair.a.start()
        local = _running_on_a(pair)
        os.kill(a2.pid, signal.SIGKILL)
        killed = time.time()
        a2.wait_exit(10.0)
        pair.a.start()
        restarted = wait_until(lambda: pair.started(local, 2), bound, "A to recover its own claim")
        out["in-flight, same host restarted"] = float(restarted[3]) - killed
    finally:
        pair.teardown()
    return out


def _running_on_a(pair: Pair) -> str:
    """A job whose first attempt runs on hostA (hostB may take one: it runs two at most, and
    already runs the new-work job)."""
    for _ in range(4):
        job = pair.a.run_job("rec")
        run = wait_until(lambda job=job: pair.started(job, 1), 60.0, "a job to start")  # type: ignore[misc]
        if run[5] == "A":
            return job
    raise AssertionError("hostA never ran a job")


def _epoch(stamp: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--lease", default="15s")
    parser.add_argument("--heartbeat", default="3s")
    parser.add_argument("--timeout", default="10s")
    args = parser.parse_args()
    print(machine())
    results: dict[str, list[float]] = {}
    with running_cluster() as cluster:
        for n in range(args.rounds):
            with tempfile.TemporaryDirectory(prefix=f"ductile-failover-{n}-") as tmp:
                root = Path(tmp)
                root.chmod(0o755)
                for key, value in one_round(root, cluster.url(cluster.new_database()), args).items():
                    results.setdefault(key, []).append(value)
    lease = parse_duration(args.lease).total_seconds()
    deadline = parse_duration(args.timeout).total_seconds() + 7
    bounds = {
        "new work": "the CLI's start + the wake-up",
        "in-flight, host lost": f"max(lease, deadline + 2) + 5 = {max(lease, deadline + 2) + 5:g} s",
        "in-flight, same host restarted": "the restart + recovery",
        "leadership": f"lease + heartbeat = {lease + parse_duration(args.heartbeat).total_seconds():g} s",
    }
    heading(
        f"fail-over after SIGKILL, seconds (median of {args.rounds}; lease {args.lease}, "
        f"heartbeat {args.heartbeat}, plugin timeout {args.timeout})"
    )
    print(
        table(
            ["what", "seconds", "range", "bound"],
            [[k, median(v), spread(v), bounds[k]] for k, v in results.items()],
        )
    )


if __name__ == "__main__":
    main()
