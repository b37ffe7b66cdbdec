"""``ductile selfcheck`` and ``ductile backup`` on real sites, with the daemon running and after a crash
(issue 19, item 6)."""

from __future__ import annotations

import json
import os
import sqlite3
import stat
import threading
from pathlib import Path
from typing import Any

from tests.support.disks import fill, tmpfs
from tests.support.plugins import recorder
from tests.support.site import SECRET, Site, signature, wait_until


def checks(site: Site) -> tuple[int, dict[str, Any]]:
    done = site.cli("selfcheck", "--json")
    return done.returncode, json.loads(done.stdout)


def by_name(doc: dict[str, Any]) -> dict[str, dict[str, str]]:
    return {c["check"]: c for c in doc["checks"]}


def test_selfcheck_on_a_running_daemon_is_all_ok(site: Site) -> None:
    site.plugin("rec", recorder(site, "rec"))
    site.write_config({"rec": {}}, endpoints=[])
    daemon = site.start()
    site.run_job("rec")
    code, doc = checks(site)
    assert code == 0, doc
    assert doc["healthy"] is True
    assert doc["daemon_pid"] == daemon.pid
    found = by_name(doc)
    assert set(found) == {
        "state dir",
        "instance lock",
        "database",
        "integrity",
        "schema",
        "write-ahead log",
        "free space",
    }
    assert all(c["status"] == "ok" for c in doc["checks"]), doc
    assert f"held by the running daemon (pid {daemon.pid})" in found["instance lock"]["detail"]
    text = site.cli("selfcheck")
    assert text.returncode == 0
    assert text.stdout.splitlines()[-1] == "healthy: 0 failed, 0 to look at"


def test_selfcheck_after_a_crash_names_the_leftovers_as_harmless(site: Site) -> None:
    site.plugin("rec", recorder(site, "rec"))
    site.write_config({"rec": {}}, endpoints=[])
    daemon = site.start()
    site.run_job("rec")
    wait_until(lambda: site.runs("rec"), 15, "the job to run")
    daemon.kill()
    code, doc = checks(site)
    assert code == 0, doc
    found = by_name(doc)
    assert found["instance lock"]["status"] == "ok"
    assert f"names pid {daemon.pid}, a daemon that is gone: harmless" in found["instance lock"]["detail"]
    assert found["write-ahead log"]["status"] == "warn"
    assert "did not stop cleanly" in found["write-ahead log"]["detail"]


def test_selfcheck_fails_a_damaged_database_and_a_full_disk(site: Site, tmp_path: Path) -> None:
    site.plugin("rec", recorder(site, "rec"))
    site.write_config({"rec": {}}, endpoints=[])
    daemon = site.start()
    for _ in range(3):
        site.run_job("rec")
    assert daemon.terminate() == 0
    conn = sqlite3.connect(site.db_path)
    root = conn.execute("SELECT rootpage FROM sqlite_master WHERE name = 'transitions'").fetchone()[0]
    conn.close()
    with open(site.db_path, "r+b") as f:
        f.seek((root - 1) * 4096)
        f.write(b"\xa5" * 4096)
    code, doc = checks(site)
    assert code == 1
    assert by_name(doc)["integrity"]["status"] == "fail"
    assert "the database is damaged" in by_name(doc)["integrity"]["detail"]

    state = tmp_path / "full-state"
    with tmpfs(state, 1024 * 1024):
        site.write_config({"rec": {}}, endpoints=[], service={"state_dir": str(state)})
        site.run_job("rec")  # makes the database
        fill(state)
        code, doc = checks(site)
        assert code == 1
        space = by_name(doc)["free space"]
        assert space["status"] == "fail"
        assert "the database needs at least" in space["detail"]


def test_backup_while_the_daemon_takes_webhooks_is_a_standalone_checked_copy(site: Site) -> None:
    site.plugin("rec", recorder(site, "rec"))
    site.write_config({"rec": {}}, endpoints=[{"path": "/hook", "plugin": "rec", "secret": SECRET}])
    daemon = site.start()
    acknowledged: list[str] = []
    stop = threading.Event()

    def deliver() -> None:
        n = 0
        while not stop.is_set():
            body = json.dumps({"n": n}).encode()
            response = daemon.post("/hook", body, {"X-Hub-Signature-256": signature(body)})
            assert response.status_code == 202
            acknowledged.append(response.json()["job_id"])
            n += 1

    sender = threading.Thread(target=deliver)
    sender.start()
    try:
        wait_until(lambda: len(acknowledged) >= 20, 20, "some deliveries")
        before = len(acknowledged)
        target = site.root / "backups" / "ductile-1.db"
        target.parent.mkdir()
        done = site.cli("backup", "--to", str(target), "--json")
        assert done.returncode == 0, done.stderr
    finally:
        stop.set()
        sender.join(20)
    doc = json.loads(done.stdout)
    assert doc["backup"] == str(target)
    assert doc["jobs"] >= before
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert sorted(p.name for p in target.parent.iterdir()) == ["ductile-1.db"]  # no -wal, no leftovers
    conn = sqlite3.connect(target)
    assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    assert conn.execute("PRAGMA journal_mode").fetchone() == ("delete",)
    assert conn.execute("SELECT count(*) FROM jobs").fetchone()[0] == doc["jobs"]
    conn.close()
    # Never over an existing file.
    again = site.cli("backup", "--to", str(target))
    assert again.returncode == 1
    assert "already exists" in again.stderr
    assert sqlite3.connect(target).execute("SELECT count(*) FROM jobs").fetchone()[0] == doc["jobs"]
    # And it restores: stop, put it in place (with no -wal of the old one), start.
    assert daemon.terminate() == 0
    os.replace(target, site.db_path)
    site.start()
    assert site.cli_json("queue")["jobs"] is not None


def test_status_says_the_database_refuses_writes_under_a_held_lock_and_a_full_disk(
    site: Site, tmp_path: Path
) -> None:
    from tests.integration.test_daemon_faults import hold_exclusive

    site.plugin("rec", recorder(site, "rec"))
    site.write_config({"rec": {}}, endpoints=[])
    site.run_job("rec")  # makes the database
    calm = json.loads(site.cli("status", "--no-health", "--json").stdout)  # exit 1: no daemon runs
    assert calm["store"] == {"writable": True, "problem": None}
    holder = hold_exclusive(site.db_path)
    try:
        done = site.cli("status", "--no-health", "--json")
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(10)
    doc = json.loads(done.stdout)
    assert done.returncode == 1
    assert doc["store"]["writable"] is False
    assert "write lock has been held by another process" in doc["store"]["problem"]

    state = tmp_path / "small"
    with tmpfs(state, 1024 * 1024):
        site.write_config({"rec": {}}, endpoints=[], service={"state_dir": str(state)})
        daemon = site.start()  # its -wal and -shm are there: the command line can read
        try:
            fill(state)
            done = site.cli("status", "--no-health", "--json")
            doc = json.loads(done.stdout)
            assert done.returncode == 1
            assert doc["store"]["problem"].startswith("the disk is full")
            assert doc["daemon"]["running"] is True
        finally:
            daemon.shut()
