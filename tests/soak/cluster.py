"""The two-daemon soak: faults at random under webhook load, one PostgreSQL (ADR 0034).

Behind ``tests/soak/test_cluster_soak.py`` (short) and ``bench/soak_cluster.py``
(long). Two sites, ``hostA`` and ``hostB``, run the same config on one
database: a webhook endpoint whose deliveries are ``handle`` jobs of a
*recording* plugin, and a timer (``every: 2s``) whose event the same plugin
handles. The plugin's lane is 1 wide (``parallelism: 1``) across the cluster;
each daemon has two workers. The plugin (``/bin/sh``) appends
``<job> <attempt> start <t> <pgid> <site>``, sleeps 0-49 ms (one run in 25:
1.5 s), appends the same with ``end``; one ``write`` each on an ``O_APPEND``
file shared by both sites.

A sender thread posts signed deliveries with distinct dedupe keys to both
daemons in turn (a delivery without a 202 is posted again later, with the
same key, as a webhook sender would). Meanwhile, each cycle draws a fault:
SIGKILL one daemon and restart it at once; SIGKILL one and keep it down for a
lease and more; SIGSTOP one past its lease and its claims' deadline, then
SIGCONT (it must fence itself); restart PostgreSQL (``pg_ctl restart -m
fast``: every connection cut). Then the faults stop, the rest is delivered,
everything drains, both daemons get SIGTERM.

:func:`analyse` checks, from the database and the plugin's log:

* **nothing lost**: every acknowledged job exists and is terminal, ``dead``
  only for exhausting its attempts;
* **one run at a time in the lane**: no two runs overlap. A run that logged no
  end ended when its group was killed (the restarted daemon's and the fenced
  daemon's kills are logged with their group ids), at the latest at its
  claim's deadline (the watchdog's bound: its start + the claim's hold);
* **no planned run fired twice**: no two jobs handle one timer event (its id is
  derived from the planned run);
* nothing left running, no plugin process left, both daemons exit 0.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import threading
import time
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

import attrs
import httpx
import psycopg

from tests.support.plugins import shell_plugin
from tests.support.postgres import Cluster
from tests.support.site import Daemon, Site, log_match, plugin_processes, signature, wait_until

PLUGIN = "soakrec"
HOOK = "/hook/soak"
SECRET = "soak-secret"
DELIVERY_HEADER = "X-Delivery"
LEASE = 3.0
#: The plugin's timeouts: a claim holds 2 + 5 (kill grace) + 2 (spawn allowance) = 9 s.
TIMEOUT = 2.0
HOLD = TIMEOUT + 5.0 + 2.0
FAULTS = ("kill_restart", "kill_down", "stop", "pg_restart")


def recording_plugin(log: Path, site: str) -> str:
    return shell_plugin(
        f"""
pgid=$(cut -d' ' -f5 /proc/$$/stat)
echo "$DUCTILE_JOB_ID $DUCTILE_ATTEMPT start $(date +%s.%N) $pgid {site}" >> '{log}'
if [ $(( $$ % 25 )) -eq 0 ]; then sleep 1.5; else sleep 0.0$(( $$ % 5 ))$(( ($$ / 5) % 10 )); fi
echo "$DUCTILE_JOB_ID $DUCTILE_ATTEMPT end $(date +%s.%N) $pgid {site}" >> '{log}'
printf '%s\\n' '{{"status": "ok"}}'
"""
    )


@attrs.frozen(kw_only=True)
class ClusterSoakSettings:
    cycles: int
    jobs: int
    seed: int
    #: Seconds of load between two faults.
    pace: float = 2.0
    #: The faults in this order (then drawn at random); empty: all drawn.
    sequence: tuple[str, ...] = ()
    drain_timeout: float = 240.0


@attrs.define
class ClusterSoakReport:
    settings: ClusterSoakSettings
    faults: Counter[str] = attrs.field(factory=Counter)
    posts: int = 0
    acknowledged: dict[int, str] = attrs.field(factory=dict)
    jobs_in_db: int = 0
    succeeded: int = 0
    dead: list[str] = attrs.field(factory=list)
    lost: list[str] = attrs.field(factory=list)
    not_terminal: list[str] = attrs.field(factory=list)
    executions: int = 0
    overlaps: list[str] = attrs.field(factory=list)
    timer_jobs: int = 0
    fired_twice: list[str] = attrs.field(factory=list)
    fences: int = 0
    refused_settles: int = 0
    strays: list[tuple[int, str]] = attrs.field(factory=list)
    exit_codes: list[int | None] = attrs.field(factory=list)
    wall: float = 0.0

    def figures(self) -> dict[str, Any]:
        return {
            "faults": dict(self.faults),
            "HTTP posts": self.posts,
            "deliveries acknowledged": len(self.acknowledged),
            "jobs in the database": self.jobs_in_db,
            "timer jobs": self.timer_jobs,
            "succeeded": self.succeeded,
            "dead (attempts exhausted by faults)": len(self.dead),
            "lost": len(self.lost),
            "not terminal": len(self.not_terminal),
            "plugin executions": self.executions,
            "overlapping runs in the lane": len(self.overlaps),
            "planned runs fired twice": len(self.fired_twice),
            "fences": self.fences,
            "late settles refused by the fence": self.refused_settles,
            "stray plugin processes": len(self.strays),
            "final SIGTERM exit codes": self.exit_codes,
            "wall time (s)": round(self.wall, 1),
        }

    def problems(self) -> list[str]:
        found = []
        if self.lost:
            found.append(f"acknowledged jobs lost: {self.lost[:5]}")
        if self.not_terminal:
            found.append(f"jobs not terminal at the end: {self.not_terminal[:5]}")
        if self.overlaps:
            found.append(f"overlapping runs in the lane: {self.overlaps[:5]}")
        if self.fired_twice:
            found.append(f"planned runs fired twice: {self.fired_twice[:5]}")
        if self.strays:
            found.append(f"plugin processes left: {self.strays[:5]}")
        if any(code != 0 for code in self.exit_codes):
            found.append(f"a final SIGTERM did not exit 0: {self.exit_codes}")
        return found


class Sites:
    """hostA and hostB on one database, and the soak's log."""

    def __init__(self, root: Path, url: str) -> None:
        self.url = url
        self.log = root / "executions.log"
        self.sites = [Site(_folder(root / "hostA")), Site(_folder(root / "hostB"))]
        self.daemons: list[Daemon | None] = [None, None]
        for site, name in zip(self.sites, "AB", strict=True):
            site.plugin(PLUGIN, recording_plugin(self.log, name), commands=["handle"])
            site.plugin("ticker", shell_plugin("read -r r\nprintf '%s\\n' '{\"status\": \"ok\"}'"))
            timeouts = {c: f"{TIMEOUT:g}s" for c in ("poll", "handle", "health", "init")}
            site.write_config(
                {
                    PLUGIN: {"timeouts": timeouts, "retry": {"max_attempts": 6, "backoff_base": "1s"}},
                    "ticker": {"schedule": {"every": "2s", "emit": {"type": "soak.tick"}}},
                },
                routes=[{"from": "ticker", "event_type": "soak.tick", "to": PLUGIN}],
                endpoints=[
                    {"path": HOOK, "plugin": PLUGIN, "secret": SECRET, "dedupe_header": DELIVERY_HEADER}
                ],
                service={"max_workers": 2, "tick_interval": "1s"},
                store={"url": url, "lease": f"{LEASE:g}s", "heartbeat": "1s"},
            )

    def start(self, n: int) -> Daemon:
        daemon = self.sites[n].start()
        self.daemons[n] = daemon
        return daemon

    def urls(self) -> list[str]:
        return [d.url for d in self.daemons if d is not None and d.proc.poll() is None and d.port]


def _folder(path: Path) -> Path:
    path.mkdir(mode=0o755)
    path.chmod(0o755)
    return path


class Sender:
    """Posts deliveries 0..total-1 to the live daemons in turn (redeliveries first)."""

    def __init__(self, total: int, sites: Sites) -> None:
        self.total = total
        self.sites = sites
        self.next = 0
        self.retry: list[int] = []
        self.acked: dict[int, str] = {}
        self.posts = 0

    @property
    def done(self) -> bool:
        return self.next >= self.total and not self.retry

    def run(self, stop: threading.Event, pace: float = 0.01) -> None:
        with httpx.Client(timeout=5.0) as client:
            turn = 0
            while not stop.is_set() and not self.done:
                urls = self.sites.urls()
                if not urls:
                    time.sleep(0.05)
                    continue
                n = self.retry.pop(0) if self.retry else self.next
                if n == self.next:
                    self.next += 1
                body = json.dumps({"n": n}).encode()
                headers = {"X-Hub-Signature-256": signature(body, SECRET), DELIVERY_HEADER: f"d-{n}"}
                turn += 1
                try:
                    self.posts += 1
                    answer = client.post(urls[turn % len(urls)] + HOOK, content=body, headers=headers)
                except httpx.HTTPError:
                    answer = None
                if answer is not None and answer.status_code == 202:
                    self.acked[n] = answer.json()["job_id"]
                else:
                    self.retry.append(n)
                time.sleep(pace)


def run_cluster_soak(
    root: Path, url: str, cluster: Cluster, settings: ClusterSoakSettings
) -> ClusterSoakReport:
    report = ClusterSoakReport(settings=settings)
    rng = random.Random(settings.seed)
    sites = Sites(root, url)
    started = time.monotonic()
    sites.start(0)
    sites.start(1)
    sender = Sender(settings.jobs, sites)
    stop = threading.Event()
    thread = threading.Thread(target=sender.run, args=(stop,), name="soak-sender", daemon=True)
    thread.start()
    try:
        for cycle in range(settings.cycles):
            time.sleep(rng.uniform(0.5, settings.pace))
            fault = settings.sequence[cycle] if cycle < len(settings.sequence) else rng.choice(FAULTS)
            report.faults[fault] += 1
            _fault(fault, rng.randrange(2), sites, cluster)
        for n in (0, 1):
            if sites.daemons[n] is None or sites.daemons[n].proc.poll() is not None:  # type: ignore[union-attr]
                sites.start(n)
        wait_until(
            lambda: sender.done, settings.drain_timeout, "every delivery to be acknowledged", interval=0.2
        )
        _drain(url, settings.drain_timeout)
    finally:
        stop.set()
        thread.join(10.0)
    report.posts = sender.posts
    report.acknowledged = dict(sender.acked)
    report.exit_codes = [d.terminate(60.0) if d is not None else None for d in sites.daemons]
    report.wall = time.monotonic() - started
    analyse(sites, report)
    for site in sites.sites:
        with contextlib.suppress(AssertionError):
            site.teardown()
    return report


def _fault(fault: str, n: int, sites: Sites, cluster: Cluster) -> None:
    daemon = sites.daemons[n]
    if fault == "pg_restart":
        cluster.restart()
        return
    if daemon is None or daemon.proc.poll() is not None:
        sites.start(n)
        return
    if fault == "stop":
        os.kill(daemon.pid, signal.SIGSTOP)
        time.sleep(LEASE + HOLD + 1.0)  # its lease and its claims' deadlines run out: peers take over
        os.kill(daemon.pid, signal.SIGCONT)
        with contextlib.suppress(
            AssertionError
        ):  # it fences itself (unless it held nothing and renewed first)
            daemon.wait_for_log(log_match("rejoined the cluster", component="cluster"), 30.0, "the rejoin")
        return
    daemon.proc.send_signal(signal.SIGKILL)
    daemon.wait_exit(10.0)
    if fault == "kill_down":
        time.sleep(LEASE + 2.0)
    sites.start(n)


def _drain(url: str, timeout: float) -> None:
    def idle() -> bool:
        with psycopg.connect(url, autocommit=True) as conn:
            row = conn.execute("SELECT count(*) FROM jobs WHERE status IN ('queued', 'running')").fetchone()
        return row is not None and row[0] == 0

    wait_until(idle, timeout, "nothing queued or running", interval=0.5)


def analyse(sites: Sites, report: ClusterSoakReport) -> None:
    with psycopg.connect(sites.url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT id, status, attempt, max_attempts, submitted_by, parent_job_id, source_event_id FROM jobs"
        ).fetchall()
    jobs = {r[0]: r for r in rows}
    report.jobs_in_db = len(jobs)
    report.succeeded = sum(1 for r in rows if r[1] == "succeeded")
    report.dead = [r[0] for r in rows if r[1] == "dead"]
    report.lost = sorted(i for i in set(report.acknowledged.values()) if i not in jobs)
    report.not_terminal = [r[0] for r in rows if r[1] not in ("succeeded", "dead")]
    timers = [r for r in rows if r[4] == "route" and r[5] is None]
    report.timer_jobs = len(timers)
    events = Counter(r[6] for r in timers)
    report.fired_twice = sorted(e for e, n in events.items() if n > 1)
    runs = [line.split() for line in sites.log.read_text().splitlines()] if sites.log.exists() else []
    report.executions = sum(1 for r in runs if r[2] == "start")
    kills = _kills(sites)
    report.overlaps = overlaps(runs, kills)
    lines = [line for d in _all_daemons(sites) for line in d.snapshot()]
    report.fences = sum(1 for line in lines if str(line.get("message", "")).startswith("fenced:"))
    report.refused_settles = sum(
        1 for line in lines if "claim lost, result discarded" in str(line.get("message"))
    )
    report.strays = plugin_processes(sites.sites[0].root.parent)


def _all_daemons(sites: Sites) -> list[Daemon]:
    return [d for site in sites.sites for d in site.daemons]


def _kills(sites: Sites) -> dict[str, float]:
    """pgid -> when a daemon killed that group (a restart's recovery, or a fence)."""
    found: dict[str, float] = {}
    for daemon in _all_daemons(sites):
        for line in daemon.snapshot():
            at = datetime.fromisoformat(str(line["timestamp"]).replace("Z", "+00:00")).timestamp()
            if "killed the process group of an orphaned job" in str(line.get("message")):
                found.setdefault(str(line.get("pgid")), at)
            for pgid in line.get("pgids", []) or []:
                found.setdefault(str(pgid), at)
    return found


def overlaps(runs: list[list[str]], kills: dict[str, float]) -> list[str]:
    """The runs of the lane (the one plugin) that overlap another. A run without an end ends at the
    kill of its group, at the latest at its claim's deadline (start + the claim's hold)."""
    starts = {(r[0], r[1]): r for r in runs if r[2] == "start"}
    ends = {(r[0], r[1]): float(r[3]) for r in runs if r[2] == "end"}
    spans = []
    for key, r in starts.items():
        begin = float(r[3])
        end = ends.get(key, min(kills.get(r[4], begin + HOLD), begin + HOLD))
        spans.append((begin, end, f"{key[0]}#{key[1]}"))
    spans.sort()
    found = []
    latest_end, latest = float("-inf"), ""
    for begin, end, name in spans:
        if begin < latest_end - 0.005:  # date +%N of two processes: a few ms of slack
            found.append(f"{name} began while {latest} ran")
        if end > latest_end:
            latest_end, latest = end, name
    return found
