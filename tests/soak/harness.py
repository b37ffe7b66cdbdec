"""Kill -9 soak of the real daemon: the harness behind ``tests/soak`` and ``bench/soak.py``.

A throwaway site (``tests.integration.daemon_site.Site``): one webhook endpoint
whose deliveries become ``handle`` jobs of a *recording* plugin. The plugin
(``/bin/sh``) appends ``<job_id> <attempt> start <pid>`` to a log file, sleeps
0-49 ms (one run in 25: 1.5 s, to outlive a restart), appends
``<job_id> <attempt> end <pid>`` and answers ok. Each line is one ``write`` on
an ``O_APPEND`` descriptor, far below ``PIPE_BUF``, so lines never interleave.
A plugin leads its own process group, so ``<pid>`` is also its group id.

The soak runs ``kills`` cycles. Each cycle starts ``ductile start`` and either
kills it with SIGKILL at a random moment of its start-up (crash recovery
itself gets interrupted), or waits until it runs, lets a sender thread post
signed webhooks (distinct ``X-Delivery`` dedupe keys) and kills it at a random
moment after that. A delivery that gets no 202 is posted again in a later
cycle with the same key, as a webhook sender would redeliver it. A final cycle
delivers the rest, waits until nothing is queued or running, and stops the
daemon with SIGTERM.

Then :func:`analyse` checks what was promised: every acknowledged job id
exists and is terminal (succeeded, or dead only by exhausting its attempts on
kills), re-executions are at most one per kill, no plugin process survives,
``PRAGMA integrity_check`` is ok, nothing is left running. Random choices come
from one seeded generator; the moments they pick still race with a real
process, so a run is representative, not replayable.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import sqlite3
import statistics
import sys
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import attrs
import httpx

from tests.support.plugins import shell_plugin
from tests.support.site import (
    START_TIMEOUT,
    Daemon,
    Site,
    alive,
    log_match,
    plugin_processes,
    signature,
    wait_until,
)

PLUGIN = "soakrec"
HOOK = "/hook/soak"
SECRET = "soak-secret"
DELIVERY_HEADER = "X-Delivery"
#: Default ``max_attempts`` (D2): a job dies only if four kills each catch it running.
MAX_ATTEMPTS = 4


def recording_plugin(log: Path) -> str:
    # dash has no $RANDOM: two digits of the pid make a 0-49 ms sleep. One run in 25
    # takes 1.5 s instead, outliving a restart, so that crash recovery has orphan
    # process groups to kill (D6) and the stray-process check has something to find.
    return shell_plugin(
        f"""
echo "$DUCTILE_JOB_ID $DUCTILE_ATTEMPT start $$" >> '{log}'
if [ $(( $$ % 25 )) -eq 0 ]; then sleep 1.5; else sleep 0.0$(( $$ % 5 ))$(( ($$ / 5) % 10 )); fi
echo "$DUCTILE_JOB_ID $DUCTILE_ATTEMPT end $$" >> '{log}'
printf '%s\\n' '{{"status": "ok"}}'
"""
    )


@attrs.frozen(kw_only=True)
class SoakSettings:
    kills: int
    jobs: int
    seed: int
    #: After the daemon runs, the kill comes uniformly within (0.05 s, window).
    window: float = 2.0
    #: Share of the kills aimed at start-up instead (recovery, discovery, listener start).
    startup_kill_share: float = 0.15
    #: Longest start-up kill delay (seconds after the process was started).
    startup_window: float = 1.0
    #: Bound on the final drain (seconds).
    drain_timeout: float = 180.0


@attrs.define
class SoakReport:
    settings: SoakSettings
    kills: int = 0
    kills_during_startup: int = 0
    deliveries: int = 0
    posts: int = 0
    redeliveries: int = 0
    acknowledged: dict[int, str] = attrs.field(factory=dict)
    jobs_in_db: int = 0
    succeeded: int = 0
    dead: list[str] = attrs.field(factory=list)
    lost: list[str] = attrs.field(factory=list)
    not_terminal: list[str] = attrs.field(factory=list)
    executions: int = 0
    duplicate_executions: int = 0
    interrupted_executions: int = 0
    recovery_times: list[float] = attrs.field(factory=list)
    strays: list[tuple[int, str]] = attrs.field(factory=list)
    integrity: list[Any] = attrs.field(factory=list)
    running_left: int = 0
    exit_code: int | None = None
    wall: float = 0.0
    problems: list[str] = attrs.field(factory=list)

    def figures(self) -> dict[str, Any]:
        times = self.recovery_times
        return {
            "kills": self.kills,
            "kills during start-up": self.kills_during_startup,
            "deliveries": self.deliveries,
            "HTTP posts": self.posts,
            "redeliveries (no 202 before a kill)": self.redeliveries,
            "jobs acknowledged": len(set(self.acknowledged.values())),
            "jobs in the database": self.jobs_in_db,
            "jobs succeeded": self.succeeded,
            "jobs dead (attempts exhausted by kills)": len(self.dead),
            "lost": len(self.lost),
            "plugin executions": self.executions,
            "duplicate executions": self.duplicate_executions,
            "executions cut short by a kill": self.interrupted_executions,
            "restarts with work pending": len(times),
            "max recovery time (s)": round(max(times), 3) if times else None,
            "median recovery time (s)": round(statistics.median(times), 3) if times else None,
            "stray plugin processes": len(self.strays),
            "integrity_check": ", ".join(str(row[0]) for row in self.integrity),
            "jobs left running": self.running_left,
            "final SIGTERM exit code": self.exit_code,
            "wall time (s)": round(self.wall, 1),
            "interpreter": f"{sys.implementation.name} {sys.version.split()[0]} ({sys.executable})",
        }


# --------------------------------------------------------------------------- the site


def build_site(site: Site) -> Path:
    """Write the recording plugin and the config; returns the execution log's path."""
    log = site.out / "executions.log"
    site.plugin(PLUGIN, recording_plugin(log), commands=["handle"])
    site.write_config(
        endpoints=[
            {"path": HOOK, "plugin": PLUGIN, "secret": SECRET, "dedupe_header": DELIVERY_HEADER},
        ],
        # debug: the dispatcher logs "running handle ..." as it starts each job (recovery time).
        service={"log_level": "debug", "tick_interval": "1s"},
    )
    return log


class Sender:
    """Posts deliveries 0..total-1 (redeliveries first), one at a time, ``pace`` s apart."""

    def __init__(self, total: int, pace: float) -> None:
        self.total = total
        self.pace = pace
        self.fresh = 0
        self.retry: deque[int] = deque()
        self.acked: dict[int, str] = {}
        self.posts = 0
        self.redeliveries = 0
        self.refusals: list[str] = []

    @property
    def done(self) -> bool:
        return self.fresh >= self.total and not self.retry

    def _next(self) -> int | None:
        if self.retry:
            self.redeliveries += 1
            return self.retry.popleft()
        if self.fresh < self.total:
            self.fresh += 1
            return self.fresh - 1
        return None

    def run(self, url: str, stop: threading.Event) -> None:
        """Until ``stop``, everything is delivered, or the daemon stops answering."""
        with httpx.Client(timeout=5.0) as client:
            while not stop.is_set():
                n = self._next()
                if n is None:
                    return
                body = json.dumps({"delivery": n}).encode()
                headers = {"X-Hub-Signature-256": signature(body, SECRET), DELIVERY_HEADER: f"d-{n}"}
                self.posts += 1
                try:
                    response = client.post(url + HOOK, content=body, headers=headers)
                except httpx.HTTPError:
                    self.retry.append(n)  # the daemon died under us: redeliver later
                    return
                if response.status_code == 202:
                    self.acked[n] = response.json()["job_id"]
                else:
                    self.refusals.append(f"delivery {n}: {response.status_code} {response.text[:200]}")
                    self.retry.append(n)
                    return
                stop.wait(self.pace)


# --------------------------------------------------------------------------- one soak


def _instant(text: str) -> float:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC).timestamp()


def _pending(site: Site) -> int:
    """Jobs queued or running (0 before the schema exists: a start-up kill may come first)."""
    if not site.db_path.exists():
        return 0
    try:
        rows = site.query("SELECT COUNT(*) FROM jobs WHERE status IN ('queued', 'running')")
    except sqlite3.OperationalError as e:
        if "no such table" in str(e):
            return 0
        raise
    return int(rows[0][0])


def _first_dispatch(daemon: Daemon, started: float) -> float | None:
    lines = daemon.logs(log_match("running handle", component="dispatcher"))
    return _instant(lines[0]["timestamp"]) - started if lines else None


def _serve(daemon: Daemon, sender: Sender, stop: threading.Event) -> threading.Thread:
    url = daemon.url
    thread = threading.Thread(target=sender.run, args=(url, stop), name="soak-sender", daemon=True)
    thread.start()
    return thread


def _record_restart(report: SoakReport, daemon: Daemon, started: float, pending: int) -> None:
    """How long a restart with work pending took to dispatch again."""
    if pending:
        took = _first_dispatch(daemon, started)
        if took is not None:
            report.recovery_times.append(took)


def _kill_once(
    site: Site, settings: SoakSettings, rng: random.Random, sender: Sender, report: SoakReport
) -> None:
    """One life cut short: SIGKILL during start-up, or after a random while under webhook load."""
    pending = _pending(site)
    started = time.time()
    if rng.random() < settings.startup_kill_share:
        daemon = site.start(wait=False)
        time.sleep(rng.uniform(0.0, settings.startup_window))
        if daemon.proc.poll() is not None:
            raise AssertionError(f"the daemon exited by itself during start-up:\n{daemon.tail()}")
        daemon.kill()
        report.kills_during_startup += 1
    else:
        daemon = site.start()
        stop = threading.Event()
        thread = _serve(daemon, sender, stop)
        time.sleep(rng.uniform(0.05, settings.window))
        if daemon.proc.poll() is not None:
            raise AssertionError(f"the daemon exited by itself:\n{daemon.tail()}")
        daemon.kill()
        stop.set()
        thread.join(10.0)
        _record_restart(report, daemon, started, pending)
    report.kills += 1


def _last_life(site: Site, settings: SoakSettings, sender: Sender, report: SoakReport) -> None:
    """The last life: deliver the rest, drain, stop gracefully."""
    pending = _pending(site)
    started = time.time()
    daemon = site.start()
    stop = threading.Event()
    deadline = time.monotonic() + settings.drain_timeout
    while not sender.done and time.monotonic() < deadline:
        thread = _serve(daemon, sender, stop)
        thread.join(settings.drain_timeout)
    wait_until(
        lambda: sender.done and _pending(site) == 0,
        max(1.0, deadline - time.monotonic()),
        "every delivery acknowledged and nothing queued or running",
        interval=0.2,
    )
    _record_restart(report, daemon, started, pending)
    report.exit_code = daemon.terminate()


def run_soak(
    site: Site, settings: SoakSettings, *, progress: Callable[[str], None] | None = None
) -> SoakReport:
    """Run the soak on ``site`` (fresh); the caller tears the site down."""
    rng = random.Random(settings.seed)
    report = SoakReport(settings)
    log = build_site(site)
    # Pace the sender so that intake lasts about as long as the kill cycles.
    uptime = settings.kills * (1 - settings.startup_kill_share) * (0.05 + settings.window) / 2
    sender = Sender(settings.jobs, pace=max(0.002, 0.8 * uptime / max(1, settings.jobs)))
    began = time.monotonic()
    for cycle in range(settings.kills):
        _kill_once(site, settings, rng, sender, report)
        if progress is not None and (cycle + 1) % 10 == 0:
            progress(f"{cycle + 1} kills, {len(sender.acked)} deliveries acknowledged")
    _last_life(site, settings, sender, report)
    report.wall = time.monotonic() - began

    report.deliveries = settings.jobs
    report.posts = sender.posts
    report.redeliveries = sender.redeliveries
    report.acknowledged = dict(sender.acked)
    report.problems += sender.refusals
    analyse(site, log, report)
    return report


# --------------------------------------------------------------------------- the verdict


def _pgid(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read()
    except OSError:
        return None
    return int(raw[raw.rfind(b")") + 2 :].split()[2])


def _environ(pid: int) -> bytes:
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            return f.read()
    except OSError:
        return b""


def stray_processes(root: Path, pgids: set[int]) -> list[tuple[int, str]]:
    """Live processes of the site's plugins: named or working in ``root``, or in a
    recorded plugin group (and carrying this plugin's environment, so a reused pid is
    not mistaken for one)."""
    found = dict(plugin_processes(root))
    marker = f"DUCTILE_PLUGIN={PLUGIN}".encode()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        pid = int(entry)
        if _pgid(pid) in pgids and alive(pid) and marker in _environ(pid).split(b"\0"):
            found.setdefault(pid, f"[group {_pgid(pid)}]")
    return sorted(found.items())


def analyse(site: Site, log: Path, report: SoakReport) -> None:
    rows = site.query("SELECT id, status, attempt, max_attempts, last_error FROM jobs")
    jobs = {r[0]: r for r in rows}
    report.jobs_in_db = len(jobs)
    report.succeeded = sum(1 for r in rows if r[1] == "succeeded")
    report.dead = sorted(r[0] for r in rows if r[1] == "dead")
    report.not_terminal = sorted(r[0] for r in rows if r[1] not in ("succeeded", "dead"))
    report.running_left = sum(1 for r in rows if r[1] == "running")
    report.integrity = site.query("PRAGMA integrity_check")
    for job_id in sorted(set(report.acknowledged.values())):
        row = jobs.get(job_id)
        if row is None:
            report.lost.append(f"{job_id}: acknowledged, not in the database")
        elif row[1] not in ("succeeded", "dead"):
            report.lost.append(f"{job_id}: acknowledged, still {row[1]}")
    for job_id in report.dead:
        _, _, attempt, max_attempts, error = jobs[job_id]
        if attempt != max_attempts or not str(error).startswith("interrupted"):
            report.problems.append(f"{job_id} is dead, not by kills: attempt {attempt}, {error!r}")

    lines = [line.split() for line in log.read_text().splitlines()] if log.exists() else []
    bad = [line for line in lines if len(line) != 4 or line[2] not in ("start", "end")]
    if bad:
        report.problems.append(f"{len(bad)} malformed execution lines, e.g. {bad[:3]}")
    starts = Counter(line[0] for line in lines if line[2] == "start")
    ends = Counter((line[0], line[1]) for line in lines if line[2] == "end")
    report.executions = sum(starts.values())
    report.duplicate_executions = sum(n - 1 for n in starts.values())
    report.interrupted_executions = report.executions - sum(ends.values())
    unknown = sorted(set(starts) - set(jobs))
    if unknown:
        report.problems.append(f"executions of jobs the database does not know: {unknown[:5]}")
    for job_id, row in jobs.items():
        if row[1] == "succeeded" and (job_id, str(row[2])) not in ends:
            report.problems.append(f"{job_id} succeeded at attempt {row[2]} but that attempt never ended")
    pgids = {int(line[3]) for line in lines if len(line) == 4 and line[3].isdigit()}
    try:
        wait_until(lambda: not stray_processes(site.root, pgids), 5.0, "the plugins' processes to end")
    except AssertionError:
        report.strays = stray_processes(site.root, pgids)
        for pid, _ in report.strays:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def verdict(report: SoakReport) -> list[str]:
    """What is wrong, in words (empty: the soak passed)."""
    problems = list(report.problems)
    if report.lost:
        problems.append(f"{len(report.lost)} acknowledged jobs lost: {report.lost[:5]}")
    if report.not_terminal:
        problems.append(f"{len(report.not_terminal)} jobs not terminal: {report.not_terminal[:5]}")
    if report.duplicate_executions > report.kills:
        problems.append(f"{report.duplicate_executions} duplicate executions > {report.kills} kills")
    if report.strays:
        problems.append(f"stray plugin processes (now killed): {report.strays[:5]}")
    if report.integrity != [("ok",)]:
        problems.append(f"integrity_check: {report.integrity}")
    if report.running_left:
        problems.append(f"{report.running_left} jobs left running")
    if report.exit_code != 0:
        problems.append(f"the final SIGTERM ended the daemon with exit code {report.exit_code}")
    if len(report.acknowledged) != report.deliveries:
        problems.append(f"{report.deliveries - len(report.acknowledged)} deliveries never acknowledged")
    return problems


__all__ = ["START_TIMEOUT", "SoakReport", "SoakSettings", "run_soak", "verdict"]
