"""The real daemon's life: crash recovery (D6), one instance (D12), a clean
SIGTERM, and the circuit breaker of a failing schedule (D3, D20)."""

from __future__ import annotations

import os
import signal
import subprocess

from tests.support.plugins import gated, recorder
from tests.support.site import (
    SCRIPT,
    Site,
    alive,
    log_match,
    plugin_processes,
    transitions,
    wait_until,
)

# --------------------------------------------------------------------------- crash recovery (D6)


def test_after_a_sigkill_the_orphan_is_killed_and_the_job_runs_again_as_attempt_2(site: Site) -> None:
    # Attempt 1 hangs (a shell and its `sleep` child, one process group); attempt 2 answers at once.
    site.plugin(
        "slow",
        recorder(site, "slow", before='[ "$DUCTILE_ATTEMPT" = 1 ] && sleep 30'),
        commands=["poll"],
    )
    site.write_config()
    first = site.start()
    job_id = site.run_job("slow")
    wait_until(lambda: site.runs("slow"), 10, "attempt 1 to start")
    ((_, attempt, pid_text),) = site.runs("slow")
    pid = int(pid_text)
    assert attempt == "1"
    # Recovery can only kill what was recorded: wait for the daemon to record the group.
    rows = wait_until(
        lambda: site.query("SELECT pid, pgid FROM processes WHERE job_id = ?", (job_id,)),
        5,
        "the process group to be recorded",
    )
    assert rows == [(pid, pid)], "the plugin leads its own process group"

    def the_group() -> list[int]:
        found = [p for p, _ in plugin_processes(site.root, exclude=[first.pid])]
        return found if len(found) == 2 else []

    group = wait_until(the_group, 5, "the plugin's shell and its sleep child")
    assert pid in group

    assert first.kill() == -signal.SIGKILL
    assert alive(pid), "a SIGKILLed daemon leaves its plugin running (the reason for this recovery)"

    second = site.start()
    killed = second.wait_for_log(
        log_match("killed the process group of an orphaned job", component="recovery", job_id=job_id),
        5,
        "recovery to kill the orphan's group",
    )
    assert killed["level"] == "warn"
    assert killed["pgid"] == pid
    requeued = second.wait_for_log(
        log_match("orphaned job re-queued (attempt 2 of", level="warn", job_id=job_id), 5, "the re-queue"
    )
    done = second.wait_for_log(log_match("poll succeeded", job_id=job_id), 15, "attempt 2 to succeed")
    lines = second.snapshot()
    assert lines.index(killed) < lines.index(requeued) < lines.index(done)

    assert not any(alive(p) for p in group), "the whole first group is gone"
    assert plugin_processes(site.root, exclude=[second.pid]) == []
    runs = site.runs("slow")
    assert [(j, a) for j, a, _ in runs] == [(job_id, "1"), (job_id, "2")], "the plugin saw DUCTILE_ATTEMPT=2"
    doc = site.job(job_id)
    assert (doc["job"]["status"], doc["job"]["attempt"]) == ("succeeded", 2)
    moves = transitions(doc)
    assert [(f, t, a) for f, t, a, _ in moves].count(("running", "queued", "recovery")) == 1, moves
    assert moves[-1][:2] == ("running", "succeeded")


# --------------------------------------------------------------------------- one instance (D12)


def test_a_second_instance_is_refused_naming_the_first_and_touches_nothing(site: Site) -> None:
    site.plugin("slow", gated(site, "slow"), commands=["poll"])
    site.write_config()
    first = site.start()
    job_id = site.run_job("slow")
    wait_until(lambda: site.runs("slow"), 10, "the job to start")
    ((_, _, pid_text),) = site.runs("slow")
    state_before = sorted(p.name for p in site.state.iterdir())
    lock_before = (site.state / "ductile.lock").read_text()

    second = subprocess.run(
        [str(SCRIPT), "start", "--config", str(site.config_path)],
        capture_output=True,
        text=True,
        env=site.env(),
        timeout=30,
        check=False,
    )

    assert second.returncode == 1, second
    assert f"pid {first.pid}" in second.stderr, second.stderr
    assert "already running" in second.stderr
    assert second.stdout == "", "it logged nothing: no discovery, no init, no recovery"
    assert "Traceback" not in second.stderr
    # Had it recovered, it would have killed the running job's group and re-queued the job.
    assert alive(int(pid_text))
    assert site.query("SELECT status, attempt FROM jobs WHERE id = ?", (job_id,)) == [("running", 1)]
    assert (site.state / "ductile.lock").read_text() == lock_before == f"{first.pid}\n"
    assert sorted(p.name for p in site.state.iterdir()) == state_before
    assert first.proc.poll() is None

    site.release()
    first.wait_for_log(log_match("poll succeeded", job_id=job_id), 15, "the job to finish")
    assert [a for _, a, _ in site.runs("slow")] == ["1"]
    assert "recovery" not in {a for _, _, a, _ in transitions(site.job(job_id))}


# --------------------------------------------------------------------------- SIGTERM


def test_sigterm_lets_the_running_job_finish_then_exits_0(site: Site) -> None:
    site.plugin("slow", recorder(site, "slow", before="sleep 1.5"), commands=["poll"])
    site.write_config()
    daemon = site.start()
    job_id = site.run_job("slow")
    wait_until(lambda: site.runs("slow"), 10, "the job to start")

    assert daemon.terminate(15) == 0

    stopping = daemon.index(log_match("stopping", component="daemon"))
    finished = daemon.index(log_match("poll succeeded", job_id=job_id))
    stopped = daemon.index(log_match("stopped", component="daemon", exact=True))
    assert stopping < finished < stopped == len(daemon.snapshot()) - 1
    assert daemon.snapshot()[stopped]["level"] == "info"
    doc = site.job(job_id)
    assert (doc["job"]["status"], doc["job"]["attempt"]) == ("succeeded", 1)
    assert plugin_processes(site.root) == []

    again = site.start()
    assert not again.logs(log_match(component="recovery")), "nothing was left running"
    assert site.cli_json("queue") == {"jobs": []}
    assert site.query("SELECT COUNT(*) FROM jobs WHERE status IN ('queued', 'running')") == [(0,)]
    assert again.terminate() == 0
    assert [a for _, a, _ in site.runs("slow")] == ["1"], "the job ran once"


# --------------------------------------------------------------------------- circuit breaker (D3)


def test_the_circuit_opens_after_3_scheduled_failures_and_reset_closes_it(site: Site) -> None:
    site.plugin(
        "flaky",
        recorder(site, "flaky", response='{"status": "error", "error": "upstream down"}', exit_code=1),
        commands=["poll"],
    )
    site.write_config(
        {
            "flaky": {
                "schedule": {"every": "1s"},
                "retry": {"max_attempts": 1},
                "circuit_breaker": {"threshold": 3, "reset_after": "1h"},
            }
        },
        endpoints=[],
    )
    daemon = site.start()
    skipped = log_match("circuit breaker open", plugin="flaky", component="scheduler")

    daemon.wait_for_log(skipped, 15, "the breaker to open")
    assert len(site.runs("flaky")) == 3
    daemon.wait_for_log(skipped, 10, "three ticks with the breaker open", count=3)
    assert len(site.runs("flaky")) == 3, "no run while the breaker is open"
    assert site.query("SELECT status, attempt FROM jobs") == [("dead", 1)] * 3
    health = daemon.health()
    assert health["plugins_circuit_open"] == 1
    assert health["queue_depth"] == 0 == len(site.cli_json("queue")["jobs"])

    doc = site.cli_json("reset", "flaky")
    assert doc["plugin"] == "flaky"
    assert [(b["command"], b["status"], b["failures"]) for b in doc["reset"]] == [("poll", "open", 3)]
    assert daemon.health()["plugins_circuit_open"] == 0
    wait_until(lambda: len(site.runs("flaky")) >= 4, 5, "scheduled runs to resume after the reset")


def test_sigint_stops_like_sigterm(site: Site) -> None:
    site.plugin("quick", recorder(site, "quick"), commands=["poll"])
    site.write_config()
    daemon = site.start()
    os.kill(daemon.pid, signal.SIGINT)
    assert daemon.wait_exit(10) == 0
    assert daemon.snapshot()[-1]["message"] == "stopped"
