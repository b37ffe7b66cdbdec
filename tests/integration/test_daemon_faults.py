"""The real daemon under faults of its storage: a full disk (a tmpfs of a few MiB), the write lock
held by another process, a page corrupted under it (issue 19, items 1 and 2).

What must hold: no 202 for anything not committed, and every 202 runs once
the machine allows; intake and dispatch resume on their own within seconds;
``/healthz`` answers 503 while the store refuses writes; SIGTERM stays
bounded whatever the store does (a job whose end cannot be recorded is left
to crash recovery, and runs again at the next start); one error line per
episode, never a traceback for a fault of the machine.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.disks import fill, tmpfs
from tests.support.plugins import gated, recorder, shell_plugin
from tests.support.site import SECRET, Daemon, Site, log_match, signature, wait_until

#: Bound of a stop while the store refuses writes: the running job's end is tried once more.
STOP_BOUND = 20.0
RECOVER_TIMEOUT = 20.0


@pytest.fixture
def disk_site(site: Site) -> Iterator[Site]:
    """The site with its state directory on a 6 MiB tmpfs (root only; skipped loudly otherwise)."""
    with tmpfs(site.state, 6 * 1024 * 1024):
        try:
            yield site
        finally:
            for daemon in site.daemons:  # before the disk goes away under them
                daemon.shut()


def post(daemon: Daemon, n: int) -> Any:
    body = json.dumps({"n": n}).encode()
    return daemon.post(
        "/hook", body, {"X-Hub-Signature-256": signature(body), "Content-Type": "application/json"}
    )


def job_statuses(site: Site) -> dict[str, str]:
    return dict(site.query("SELECT id, status FROM jobs"))  # type: ignore[arg-type]


def tracebacks(daemon: Daemon) -> list[dict[str, Any]]:
    return [line for line in daemon.snapshot() if "traceback" in line]


def errors(daemon: Daemon) -> list[str]:
    return [str(line["message"]) for line in daemon.snapshot() if line["level"] in ("error", "critical")]


def test_a_full_disk_refuses_webhooks_and_every_acknowledged_one_runs_once_space_returns(
    disk_site: Site,
) -> None:
    site = disk_site
    site.plugin("rec", recorder(site, "rec"))
    site.write_config({"rec": {}}, endpoints=[{"path": "/hook", "plugin": "rec", "secret": SECRET}])
    daemon = site.start()
    acknowledged: list[str] = []
    for n in range(5):
        response = post(daemon, n)
        assert response.status_code == 202, response.text
        acknowledged.append(response.json()["job_id"])
    filler = fill(site.state)
    refused = 0
    for n in range(5, 400):  # the log may take a few more before the disk says no
        response = post(daemon, n)
        if response.status_code == 503:
            refused += 1
            if refused == 5:
                break
            continue
        assert response.status_code == 202, response.text
        acknowledged.append(response.json()["job_id"])
    else:
        raise AssertionError("the disk never filled")
    health = daemon.get("/healthz")
    assert health.status_code == 503
    store = health.json()["store"]
    assert (store["writable"], store["problem"], store["transient"]) == (False, "full", True)
    assert "Free at least" in store["reason"]

    filler.unlink()
    wait_until(lambda: daemon.get("/healthz").status_code == 200, RECOVER_TIMEOUT, "/healthz to say ok again")
    for n in range(400, 405):  # intake works again, by itself
        response = post(daemon, n)
        assert response.status_code == 202, response.text
        acknowledged.append(response.json()["job_id"])

    def all_ran() -> bool:
        statuses = job_statuses(site)
        return all(statuses.get(job_id) == "succeeded" for job_id in acknowledged)

    wait_until(all_ran, RECOVER_TIMEOUT, "every acknowledged delivery to run")
    ran = [line[0] for line in site.runs("rec")]
    assert sorted(ran) == sorted(acknowledged), "every 202 ran, once"
    assert set(job_statuses(site)) == set(acknowledged), "nothing was queued without its 202"
    assert tracebacks(daemon) == []
    assert [m for m in errors(daemon) if "refuses writes" in m] == [errors(daemon)[0]]
    daemon.wait_for_log(
        log_match("the database accepts writes again", component="store"), 15, "the episode's end"
    )
    assert (
        len(daemon.logs(log_match("queueing a webhook delivery (answered 503) failed", component="http")))
        == 1
    )


def heavy(site: Site, name: str) -> str:
    """A gated plugin whose answer merges ~800 KiB into its state: recording its end needs room
    on the disk that checkpointing the log cannot give back."""
    return shell_plugin(
        f"""
cat > /dev/null
echo "$DUCTILE_JOB_ID $DUCTILE_ATTEMPT $$" >> '{site.out}/{name}.runs'
i=0; while [ ! -e '{site.release_file}' ] && [ $i -lt 600 ]; do sleep 0.05; i=$((i+1)); done
printf '{{"status": "ok", "state_updates": {{"blob": "'
head -c 800000 /dev/zero | tr '\\0' x
printf '"}}}}\\n'
"""
    )


def test_sigterm_while_the_disk_is_full_leaves_the_unrecorded_job_to_recovery(disk_site: Site) -> None:
    site = disk_site
    site.plugin("slow", heavy(site, "slow"))
    site.write_config({"slow": {}})
    daemon = site.start()
    job_id = site.run_job("slow")
    wait_until(lambda: site.runs("slow"), 15, "the job to start")
    fill(site.state)
    site.release()
    daemon.wait_for_log(
        log_match("could not record the end of the job", job_id=job_id), 15, "the refused settle"
    )
    started = time.monotonic()
    assert daemon.terminate(STOP_BOUND) == 0
    assert time.monotonic() - started < 8, "a failed write on a full disk fails at once"
    daemon.wait_for_log(log_match("before stopping", job_id=job_id), 1, "the job left to recovery")
    assert tracebacks(daemon) == []
    assert len(daemon.logs(log_match("could not record the end of the job", job_id=job_id))) == 2

    (site.state / "filler").unlink()
    again = site.start()
    again.wait_for_log(
        log_match("succeeded", job_id=job_id, component="dispatcher"), RECOVER_TIMEOUT, "the rerun"
    )
    assert [run[:2] for run in site.runs("slow")] == [[job_id, "1"], [job_id, "2"]]


def hold_exclusive(path: Path) -> subprocess.Popen[str]:
    """Another process holding the database's write lock (``BEGIN EXCLUSIVE``) until its stdin closes."""
    code = (
        "import sqlite3, sys\n"
        f"c = sqlite3.connect({str(path)!r}, isolation_level=None, timeout=10)\n"
        "c.execute('BEGIN EXCLUSIVE')\n"
        "print('held', flush=True)\n"
        "sys.stdin.read()\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_sigterm_while_another_process_holds_the_write_lock_is_bounded(site: Site) -> None:
    site.plugin("slow", gated(site, "slow"))
    site.write_config({"slow": {}}, endpoints=[])
    daemon = site.start()
    job_id = site.run_job("slow")
    wait_until(lambda: site.runs("slow"), 15, "the job to start")
    holder = hold_exclusive(site.db_path)
    try:
        site.release()
        daemon.wait_for_log(
            log_match("could not record the end of the job", job_id=job_id), 20, "the refused settle"
        )
        health = daemon.get("/healthz")
        assert health.status_code == 503
        assert health.json()["store"]["problem"] == "busy"
        started = time.monotonic()
        assert daemon.terminate(STOP_BOUND) == 0
        # The try under way, then one more: each waits at most busy_timeout (5 s) for the lock.
        assert time.monotonic() - started < 12
        daemon.wait_for_log(log_match("before stopping", job_id=job_id), 1, "the job left to recovery")
        assert tracebacks(daemon) == []
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(10)
    again = site.start()
    again.wait_for_log(
        log_match("succeeded", job_id=job_id, component="dispatcher"), RECOVER_TIMEOUT, "the rerun"
    )


def corrupt_table(path: Path, table: str) -> None:
    """Overwrite ``table``'s root page in the file with garbage (the log checkpointed first)."""
    conn = sqlite3.connect(path, isolation_level=None, timeout=10)
    try:
        busy, _, _ = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        assert busy == 0
        root = conn.execute("SELECT rootpage FROM sqlite_master WHERE name = ?", (table,)).fetchone()[0]
        size = conn.execute("PRAGMA page_size").fetchone()[0]
    finally:
        conn.close()
    with open(path, "r+b") as f:
        f.seek((root - 1) * size)
        f.write(os.urandom(size))
        f.flush()
        os.fsync(f.fileno())


def test_a_page_corrupted_under_the_daemon_fails_that_settle_once_and_the_lane_goes_on(site: Site) -> None:
    site.plugin("slow", gated(site, "slow"))
    site.write_config({"slow": {}}, endpoints=[])
    daemon = site.start()
    first = site.run_job("slow")
    wait_until(lambda: site.runs("slow"), 15, "the job to start")
    corrupt_table(site.db_path, "runs")  # only a settle writes there
    second = site.run_job("slow")  # a write by another process: the daemon re-reads its pages
    site.release()
    for job_id in (first, second):  # the lane is not wedged: the second job runs too
        daemon.wait_for_log(
            log_match("could not record the end of the job", job_id=job_id, level="error"),
            20,
            f"job {job_id} left to recovery",
        )
    health = daemon.get("/healthz")
    assert health.status_code == 503
    store = health.json()["store"]
    assert (store["problem"], store["transient"]) == ("corrupt", False)
    assert "restore the database from a backup" in store["reason"]
    assert len(daemon.logs(log_match("could not record the end of the job", job_id=first))) == 1
    assert tracebacks(daemon) == []
    started = time.monotonic()
    assert daemon.terminate(STOP_BOUND) == 0
    assert time.monotonic() - started < 10
