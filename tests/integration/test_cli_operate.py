"""The operator's verbs against the real daemon: jobs, retry, cancel, logs -f, reload, version.

They call the same service functions as the API (``ductile.app.operations``)
on the daemon's database; ids may be 8-character prefixes.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time

from tests.support.plugins import recorder
from tests.support.site import SCRIPT, Site, log_match, wait_until

WAIT = 15.0
DEAD = '{"status": "error", "error": "token expired", "retry": false}'


def finished(site: Site, job_id: str) -> dict[str, object]:
    def done() -> dict[str, object] | None:
        doc = site.job(job_id)
        return doc if doc["job"]["status"] in ("succeeded", "dead") else None

    return wait_until(done, WAIT, f"job {job_id} to end")


def test_jobs_retry_and_cancel_with_prefixes(site: Site) -> None:
    site.plugin("broken", recorder(site, "broken", response=DEAD))
    site.plugin("ok", recorder(site, "ok"))
    site.write_config({"broken": {}, "ok": {}})
    daemon = site.start()
    dead = site.run_job("broken")
    finished(site, dead)
    listed = site.cli_json("jobs", "--status", "dead", "--since", "1h")
    assert [j["id"] for j in listed["jobs"]] == [dead]
    assert [j["id"] for j in site.cli_json("jobs", "--text", "TOKEN expired")["jobs"]] == [dead]
    assert "no jobs match" in site.cli_ok("jobs", "--plugin", "nope")
    retried = site.cli_json("retry", dead[:8])
    assert retried["retry_of"] == dead
    assert finished(site, retried["job_id"])["job"]["retry_of"] == dead  # type: ignore[index]
    refused = site.cli("retry", "abc")
    assert refused.returncode == 1
    assert "at least 8 characters" in refused.stderr

    daemon.terminate()  # nothing claims a job now: it stays queued for cancel
    queued = site.run_job("ok")
    cancelled = site.cli_json("cancel", queued[:10])
    assert cancelled["job"]["status"] == "dead"
    assert cancelled["job"]["last_error"].startswith("cancelled by ")
    again = site.cli("cancel", queued)
    assert again.returncode == 1
    assert "only a queued job" in again.stderr


def test_logs_follow_prints_runs_as_they_end(site: Site) -> None:
    site.plugin("ok", recorder(site, "ok"))
    site.write_config({"ok": {}})
    site.start()
    first = site.run_job("ok")
    finished(site, first)
    follower = subprocess.Popen(
        [str(SCRIPT), "logs", "-f", "--json", "--config", str(site.config_path)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=site.env(), cwd="/",
    )  # fmt: skip
    try:
        assert follower.stdout is not None
        assert json.loads(follower.stdout.readline())["job"]["id"] == first  # the recent run first
        second = site.run_job("ok")
        line = json.loads(follower.stdout.readline())  # then the new one, as it ends
        assert (line["job"]["id"], line["run"]["error"]) == (second, None)
    finally:
        follower.send_signal(signal.SIGINT)
        assert follower.wait(WAIT) == 130


def test_reload_prints_what_changed(site: Site) -> None:
    site.plugin("ok", recorder(site, "ok"))
    site.write_config({"ok": {}})
    daemon = site.start()
    site.plugin("fresh", recorder(site, "fresh"))
    site.write_config({"ok": {"retry": {"max_attempts": 2}}, "fresh": {}})
    out = site.cli_ok("reload")
    assert out == f"reload requested (pid {daemon.pid})\nreloaded; added: fresh; changed: ok\n"
    doc = site.cli_json("reload")
    assert (doc["pid"], doc["reloaded"], doc["added"], doc["changed"]) == (daemon.pid, True, [], [])
    daemon.wait_for_log(log_match("configuration reloaded", component="reload"), WAIT, "the reloads", count=2)


def test_version(site: Site) -> None:
    site.write_config({})
    assert site.cli_ok("version").startswith("ductile ")
    started = time.monotonic()
    done = subprocess.run([str(SCRIPT), "--version"], capture_output=True, text=True, check=False)
    assert done.returncode == 0
    assert done.stdout.startswith("ductile ")
    assert time.monotonic() - started < WAIT
