"""Failure alerts end to end: the real daemon routes ``job.dead`` to ``builtin:notify``.

A real daemon, real plugin processes, a real SQLite database and a real HTTP
receiver on 127.0.0.1 recording what ``notify`` sends. Every wait is on a
condition with a bounded deadline; the counts are asserted once the jobs that
could send anything have all finished, so "exactly one" is not a guess.
"""

from __future__ import annotations

import json
import signal
import urllib.parse
from typing import Any

import yaml

from tests.support.plugins import gated, shell_plugin
from tests.support.receiver import Receiver, receiver
from tests.support.site import Site, wait_until

WAIT = 60.0
FORMATS = ("json", "ntfy", "discord", "slack", "gotify", "form")


def failing(site: Site) -> str:
    """Writes a line to stderr and fails, not retryable (exit 78): the job dies at once."""
    return shell_plugin(
        f"""
cat > /dev/null
echo "$DUCTILE_JOB_ID" >> '{site.out}/flaky.runs'
echo "disk on fire for $DUCTILE_JOB_ID" >&2
exit 78
"""
    )


def configure(site: Site, plugins: dict[str, Any], routes: list[dict[str, str]]) -> None:
    config = site.write_config(plugins, routes=routes)
    site.config_path.write_text(yaml.safe_dump(config, sort_keys=False))


def jobs_of(site: Site, plugin: str) -> list[tuple[str, str]]:
    return [(r[0], r[1]) for r in site.query("SELECT id, status FROM jobs WHERE plugin = ?", (plugin,))]


def all_finished(site: Site, plugin: str, count: int) -> bool:
    rows = jobs_of(site, plugin)
    return len(rows) >= count and all(status in ("succeeded", "dead") for _, status in rows)


def _alerts(rx: Receiver) -> dict[str, Any]:
    aliases = {f"alert_{fmt}": {"uses": "builtin:notify", "config": {"url": rx.url(f"/{fmt}"), "format": fmt}}
               for fmt in FORMATS}  # fmt: skip
    return aliases


def test_a_failing_plugin_is_told_once_per_dead_job_in_every_format(site: Site) -> None:
    site.plugin("flaky", failing(site))
    with receiver() as rx:
        aliases = _alerts(rx)
        routes = [{"from": "ductile", "event_type": "job.dead", "to": name} for name in aliases]
        configure(site, {"flaky": {"retry": {"max_attempts": 1}}, **aliases}, routes)
        site.start()
        dead = [site.run_job("flaky") for _ in range(2)]
        for name in aliases:
            wait_until(lambda n=name: all_finished(site, n, 2), WAIT, f"{name}'s two jobs to finish")
        for fmt in FORMATS:
            sent = rx.received(f"/{fmt}")
            assert len(sent) == 2, (fmt, sent)
            texts = [urllib.parse.unquote_plus(r.body.decode()) for r in sent]
            for job_id in dead:
                [one] = [t for t in texts if job_id in t]
                if fmt != "json":  # the default message: the job, the reason, the stderr tail
                    assert "died" in one
                assert f"disk on fire for {job_id}" in one
        assert all(status == "succeeded" for name in aliases for _, status in jobs_of(site, name))


def test_a_broken_notifier_dies_quietly_and_the_daemon_stays_healthy(site: Site) -> None:
    site.plugin("flaky", failing(site))
    with receiver(status=500) as rx:
        alert = {"uses": "builtin:notify", "config": {"url": rx.url("/down")},
                 "retry": {"max_attempts": 2, "backoff_base": "1s"}}  # fmt: skip
        routes = [
            {"from": "ductile", "event_type": "job.dead", "to": "alert"},
            {"from": "ductile", "event_type": "job.failed", "to": "alert"},
        ]
        configure(site, {"flaky": {"retry": {"max_attempts": 1}}, "alert": alert}, routes)
        daemon = site.start()
        for _ in range(2):
            site.run_job("flaky")
        wait_until(lambda: all_finished(site, "alert", 2), WAIT, "the notifier's jobs to die")
        assert [s for _, s in jobs_of(site, "alert")] == ["dead", "dead"]
        # two attempts each, and no job about the notifier's own failures or deaths
        assert len(rx.received("/down")) == 4
        assert len(site.query("SELECT id FROM jobs")) == 4
        [(suppressed,)] = site.query("SELECT value FROM counters WHERE name = 'lifecycle_suppressed'")
        assert suppressed == 2
        status = json.loads(site.cli("status", "--json").stdout)
        assert status["daemon"]["running"] is True, status
        # a v2 plugin's health is classified under protocol 2 (it was judged as protocol 1)
        [notifier] = [p for p in status["plugins"] if p["name"] == "alert"]
        assert notifier["health"]["ok"] is True, notifier
        assert daemon.proc.poll() is None


def test_a_crash_between_a_jobs_death_and_its_alert_tells_exactly_once(site: Site) -> None:
    """The last attempt is running when the daemon is killed: recovery buries the orphan and
    queues its alert in the same commit; another restart finds nothing more to tell."""
    site.plugin("slow", gated(site, "slow"))
    with receiver() as rx:
        alert = {"uses": "builtin:notify", "config": {"url": rx.url("/dead"), "format": "slack"}}
        routes = [{"from": "ductile", "event_type": "job.dead", "to": "alert"}]
        configure(site, {"slow": {"retry": {"max_attempts": 1}}, "alert": alert}, routes)
        daemon = site.start()
        job = site.run_job("slow")
        wait_until(lambda: site.runs("slow"), WAIT, "the job to start")
        daemon.proc.send_signal(signal.SIGKILL)
        daemon.proc.wait(timeout=WAIT)
        site.start()
        wait_until(lambda: all_finished(site, "alert", 1), WAIT, "the alert of the orphan's death")
        assert dict(jobs_of(site, "slow")) == {job: "dead"}
        site.daemons[-1].terminate()
        site.start()
        site.daemons[-1].terminate()
        [sent] = rx.received("/dead")
        assert job.encode() in sent.body
        assert b"interrupted" in sent.body
        assert len(jobs_of(site, "alert")) == 1
