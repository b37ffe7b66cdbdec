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

import httpx
import pytest

from tests.support.disks import fill, tmpfs
from tests.support.plugins import gated, recorder, shell_plugin
from tests.support.site import SCRIPT, SECRET, Daemon, Site, log_match, signature, wait_until

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
    # One error line for the whole episode (the store's); the refused deliveries and claims at warn.
    [error] = errors(daemon)
    assert error.startswith("the database refuses writes:")
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
    site.write_config(
        {"slow": {}}, endpoints=[], api={"tokens": [{"name": "a", "token": "t" * 20, "scopes": ["*"]}]}
    )
    daemon = site.start()
    job_id = site.run_job("slow")
    wait_until(lambda: site.runs("slow"), 15, "the job to start")
    api_health = f"http://127.0.0.1:{daemon.api_port}/healthz"
    assert httpx.get(api_health, timeout=10).status_code == 200
    holder = hold_exclusive(site.db_path)
    try:
        site.release()
        daemon.wait_for_log(
            log_match("could not record the end of the job", job_id=job_id), 20, "the refused settle"
        )
        health = daemon.get("/healthz")
        assert health.status_code == 503
        assert health.json()["store"]["problem"] == "busy"
        api_answer = httpx.get(api_health, timeout=10)  # the API's /healthz says the same
        assert (api_answer.status_code, api_answer.json()["status"]) == (503, "degraded")
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


def test_a_page_corrupted_under_the_daemon_fails_that_settle_once_and_nothing_is_retried(site: Site) -> None:
    """A settle that meets a corrupt page is logged once and left to crash recovery; it is
    never retried (the lane used to wedge, retrying for ever). The job stays ``running`` in the
    database, so it keeps its lane's slot until recovery (ADR 0031): the plugin's next job
    waits, rather than run while its result could not be recorded either."""
    site.plugin("slow", gated(site, "slow"))
    site.write_config({"slow": {}}, endpoints=[])
    daemon = site.start()
    first = site.run_job("slow")
    wait_until(lambda: site.runs("slow"), 15, "the job to start")
    corrupt_table(site.db_path, "runs")  # only a settle writes there
    second = site.run_job("slow")  # a write by another process: the daemon re-reads its pages
    site.release()
    daemon.wait_for_log(
        log_match("could not record the end of the job", job_id=first, level="error"),
        20,
        f"job {first} left to recovery",
    )
    health = daemon.get("/healthz")
    assert health.status_code == 503
    store = health.json()["store"]
    assert (store["problem"], store["transient"]) == ("corrupt", False)
    assert "restore the database from a backup" in store["reason"]
    assert job_statuses(site) == {first: "running", second: "queued"}
    assert len(daemon.logs(log_match("could not record the end of the job", job_id=first))) == 1
    assert tracebacks(daemon) == []
    started = time.monotonic()
    assert daemon.terminate(STOP_BOUND) == 0
    assert time.monotonic() - started < 10


# ----------------------------------------------------------- a database damaged before the start


def _stopped_site_with_jobs(site: Site) -> bytes:
    """A site whose database holds a few finished jobs, the daemon stopped; the database's bytes."""
    site.plugin("rec", recorder(site, "rec"))
    site.write_config({"rec": {}}, endpoints=[])
    daemon = site.start()
    for _ in range(3):
        site.run_job("rec")
    wait_until(lambda: set(job_statuses(site).values()) == {"succeeded"}, 30, "the jobs")
    assert daemon.terminate() == 0
    assert not Path(f"{site.db_path}-wal").exists()  # a clean stop checkpoints the log away
    return site.db_path.read_bytes()


def _garbage(data: bytes, page: int, size: int = 4096) -> bytes:
    start = (page - 1) * size + (100 if page == 1 else 0)
    return data[:start] + bytes((i * 37 + 11) % 256 for i in range(start, page * size)) + data[page * size :]


def test_a_damaged_or_emptied_database_stops_the_start_with_one_clear_line(site: Site) -> None:
    good = _stopped_site_with_jobs(site)
    conn = sqlite3.connect(site.db_path)
    jobs_root = conn.execute("SELECT rootpage FROM sqlite_master WHERE name = 'jobs'").fetchone()[0]
    conn.close()
    cases = {
        "garbage schema page": (_garbage(good, 1), "is damaged"),
        "garbage data page": (_garbage(good, jobs_root), "is damaged"),
        "zero length": (b"", "is empty (0 bytes)"),
        "truncated": (good[: len(good) // 2], "is damaged"),
    }
    for case, (content, words) in cases.items():
        site.db_path.write_bytes(content)
        done = subprocess.run(
            [str(SCRIPT), "start", "--config", str(site.config_path)],
            capture_output=True,
            text=True,
            env=site.env(),
            timeout=30,
            check=False,
        )
        assert done.returncode == 1, (case, done.stdout[-2000:], done.stderr)
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1, (case, done.stderr)
        assert str(site.db_path) in lines[0], (case, lines[0])
        assert words in lines[0], (case, lines[0])
        assert "backup" in lines[0], (case, lines[0])
        assert "Traceback" not in done.stderr + done.stdout, case
        assert site.db_path.read_bytes() == content, f"{case}: the file was changed"
        assert not Path(f"{site.db_path}-wal").exists(), case
    site.db_path.write_bytes(good)  # restored from the "backup": it starts again
    site.start()


# --------------------------------------------------------------------------- a -wal deleted under the daemon


def test_a_write_ahead_log_deleted_under_the_daemon_loses_nothing_acknowledged(site: Site) -> None:
    site.plugin("slow", gated(site, "slow"))
    site.plugin("rec", recorder(site, "rec"))
    site.write_config(
        {"slow": {}, "rec": {}}, endpoints=[{"path": "/hook", "plugin": "rec", "secret": SECRET}]
    )
    daemon = site.start()
    site.run_job("slow")
    wait_until(lambda: site.runs("slow"), 15, "the slow job to hold the dispatcher")
    acknowledged = []
    for n in range(20):  # queued behind the slow job: only in the log so far
        response = post(daemon, n)
        assert response.status_code == 202, response.text
        acknowledged.append(response.json()["job_id"])
    wal = Path(f"{site.db_path}-wal")
    copy = site.root / "main-file-only.db"
    copy.write_bytes(site.db_path.read_bytes())
    in_main_file = (
        sqlite3.connect(f"file:{copy}?immutable=1", uri=True).execute("SELECT count(*) FROM jobs").fetchone()
    )
    assert in_main_file[0] < len(acknowledged), "the test needs acknowledged jobs that live only in the log"

    wal.unlink()  # the careless operator
    daemon.wait_for_log(
        log_match("was deleted or replaced while ductile ran", component="store"), 10, "the mend"
    )
    assert (
        daemon.logs(log_match("was deleted or replaced while ductile ran"))[0]["level"] == "error"
    )  # critical
    other = site.cli("queue", "--json")  # another process reads the database at once: no I/O error
    assert other.returncode == 0, other.stderr
    daemon.kill()  # the worst moment to die: no clean close, no last checkpoint

    again = site.start()
    statuses = job_statuses(site)
    assert set(acknowledged) <= set(statuses), "every acknowledged delivery survived"
    site.release()
    for job_id in acknowledged:
        again.wait_for_log(log_match("succeeded", job_id=job_id, component="dispatcher"), 30, f"job {job_id}")


# ----------------------------------------------------------- a lock file deleted under the daemon


def test_deleting_the_lock_file_does_not_let_a_second_daemon_in(site: Site) -> None:
    site.plugin("slow", gated(site, "slow"))
    site.write_config({"slow": {}}, endpoints=[])
    first = site.start()
    job_id = site.run_job("slow")
    wait_until(lambda: site.runs("slow"), 15, "the job to start")
    lock = site.state / "ductile.lock"
    lock.unlink()
    second = site.start(wait=False)
    assert second.wait_exit(15) == 1
    stderr = second.stderr_path.read_text()
    assert "ductile is already running" in stderr
    assert "Traceback" not in stderr
    assert second.logs(log_match("recovery")) == []  # it never touched the database
    assert first.proc.poll() is None
    wait_until(
        lambda: lock.exists() and lock.read_text() == f"{first.pid}\n", 10, "the lock file to be put back"
    )
    first.wait_for_log(
        log_match("was deleted or replaced while ductile ran: it was put back"), 1, "the warning"
    )
    assert site.cli_ok("reload").splitlines()[0] == f"reload requested (pid {first.pid})"  # found again
    site.release()
    first.wait_for_log(log_match("succeeded", job_id=job_id, component="dispatcher"), 15, "the job to end")
    assert [run[:2] for run in site.runs("slow")] == [[job_id, "1"]]  # never killed, never run twice
