"""Reloading the real daemon (D13): ``ductile reload`` sends SIGHUP; schedules
switch, a removed plugin's queued jobs die, an invalid config changes nothing."""

from __future__ import annotations

import hashlib
import hmac
import os
import signal
from datetime import UTC, datetime, timedelta

from tests.support.plugins import gated, recorder
from tests.support.site import SECRET, Site, log_match, transitions, wait_until


def next_planned(site: Site, plugin: str) -> datetime:
    """The first run ``ductile schedule`` lists for ``plugin`` in the next 3 hours."""
    runs = [
        r for r in site.cli_json("schedule", "--from", "now", "--to", "+3h")["runs"] if r["plugin"] == plugin
    ]
    assert runs, f"no planned run of {plugin}"
    return datetime.fromisoformat(runs[0]["planned_at"].replace("Z", "+00:00"))


def test_reload_switches_to_a_changed_schedule(site: Site) -> None:
    site.plugin("tick", recorder(site, "tick"), commands=["poll"])
    site.write_config({"tick": {"schedule": {"every": "1h"}}})
    daemon = site.start()
    # A new `every` schedule runs at once, then every hour.
    wait_until(lambda: len(site.runs("tick")) == 1, 10, "the first run of the new schedule")
    assert next_planned(site, "tick") - datetime.now(UTC) > timedelta(minutes=55)
    assert len(site.runs("tick")) == 1

    site.write_config({"tick": {"schedule": {"every": "2s"}}})
    assert site.cli_ok("reload").startswith(f"reload requested (pid {daemon.pid})")

    daemon.wait_for_log(log_match("configuration reloaded", component="reload"), 10, "the reload")
    assert next_planned(site, "tick") - datetime.now(UTC) < timedelta(seconds=5)
    wait_until(lambda: len(site.runs("tick")) >= 3, 10, "two runs on the new 2 s schedule")


def test_reload_cancels_the_queued_jobs_of_a_removed_plugin(site: Site) -> None:
    site.plugin("slow", gated(site, "slow"), commands=["poll"])
    site.plugin("victim", recorder(site, "victim"), commands=["poll"])
    site.write_config({"slow": {}, "victim": {"timeouts": {"poll": "30s"}}})
    daemon = site.start()
    slow = site.run_job("slow")
    wait_until(lambda: site.runs("slow"), 10, "the slow job to occupy the dispatcher")
    victims = [site.run_job("victim") for _ in range(2)]
    assert [j["status"] for j in site.cli_json("queue")["jobs"]] == ["running", "queued", "queued"]

    (site.plugins_dir / "victim").rename(site.root / "victim-removed")
    site.write_config({"slow": {}})
    site.cli_ok("reload")

    line = daemon.wait_for_log(
        log_match("plugin removed: 2 queued job(s) cancelled", plugin="victim"), 10, "the cancellation"
    )
    assert line["level"] == "warn"
    daemon.wait_for_log(log_match("configuration reloaded"), 10, "the reload to finish")
    for job_id in victims:
        doc = site.job(job_id)
        assert doc["job"]["status"] == "dead"
        assert doc["job"]["completed_at"] is not None
        assert transitions(doc)[-1][:2] == ("queued", "dead")
        assert transitions(doc)[-1][3] == "plugin removed"
    # The job in flight finishes with the config it started with.
    site.release()
    daemon.wait_for_log(log_match("poll succeeded", job_id=slow), 15, "the in-flight job to finish")
    assert site.runs("victim") == [], "a cancelled job never runs"
    assert site.query("SELECT COUNT(*) FROM jobs WHERE status = 'queued'") == [(0,)]


def test_an_invalid_config_on_reload_keeps_the_old_one_running(site: Site) -> None:
    site.plugin("quick", recorder(site, "quick"), commands=["handle"])
    site.write_config(endpoints=[{"path": "/hook/q", "plugin": "quick", "secret": SECRET}])
    daemon = site.start()
    good = site.config_path.read_text()
    site.config_path.write_text(good + "surprise_key: 1\n")

    refused = site.cli("reload")
    assert refused.returncode == 2, refused
    assert "surprise_key" in refused.stderr
    # The CLI checks first; the daemon itself must also refuse a bad file it is asked to re-read.
    os.kill(daemon.pid, signal.SIGHUP)
    line = daemon.wait_for_log(
        log_match("reload refused", level="error", component="reload"), 10, "the refused reload"
    )
    assert "surprise_key" in line["message"]
    assert not daemon.logs(log_match("configuration reloaded"))

    # Still serving, with the old configuration (its endpoint and plugin).
    assert daemon.health()["plugins_loaded"] == 1
    body = b'{"still": "here"}'
    sig = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    response = daemon.post("/hook/q", body, {"X-Hub-Signature-256": sig})
    assert response.status_code == 202
    daemon.wait_for_log(log_match("handle succeeded", plugin="quick"), 10, "the webhook's job")
    assert [r[0] for r in site.runs("quick")] == [response.json()["job_id"]]

    site.config_path.write_text(good)
    site.cli_ok("reload")
    daemon.wait_for_log(log_match("configuration reloaded"), 10, "a good reload after the bad one")
