"""Memory of the real daemon: idle RSS, and RSS growth while a plugin floods its output.

    python bench/bench_memory.py [--idle-seconds 3] [--idle-rounds 2] [--gib 1]

* idle: ``ductile start`` with four plugins (sh, Python, two floods) and a
  webhook listener, after start-up and ``--idle-seconds`` of idling: VmRSS;
  side by side (alternating, ``--idle-rounds`` each), the same site with the
  operator API (a token) and the dashboard (``ui.enabled``) on a listener of
  their own, after one authenticated call to each (``GET /jobs``, ``GET /ui/``),
  so that their lazily built parts are counted (issue 18's goal 9).
* floods: the peak RSS (VmHWM, reset through ``/proc/<pid>/clear_refs`` just
  before) minus the RSS before, while one job's plugin writes ``--gib`` GiB of
  zeros: (a) to stdout, which the spawner stops at its 10 MiB cap (D4: the group
  is killed, the job fails "stdout over 10 MiB"); (b) to stderr, which is read
  to the end (1 MiB taken into account, the rest drained and discarded, the
  last 64 KiB kept), so the whole GiB goes through the daemon.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
import urllib.request
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import yaml
from _common import (
    SECRET,
    Daemon,
    free_port,
    goal_row,
    heading,
    loadavg,
    machine,
    median,
    proc_status,
    python_plugin,
    query,
    scratch,
    sh_plugin,
    table,
    verdict,
    wait_until,
    write_site,
)

from ductile.adapters.sqlite import SqliteStore
from ductile.domain.job import Actor, Job

IDLE_GOAL_MB = 60.0
TOKEN = "bench-memory-token-0123456789"
GROWTH_GOAL_MB = 16.0


def flood(stream: str, gib: float) -> str:
    redirect = " 1>&2" if stream == "stderr" else ""
    answer = '{"status": "ok"}'
    size = int(gib * 2**30)
    return f"#!/bin/sh\nread -r request\nhead -c {size} /dev/zero{redirect}\nprintf '%s\\n' '{answer}'\n"


async def _enqueue(db: Path, plugin: str) -> str:
    store = await SqliteStore.open(db)
    try:
        now = datetime.now(UTC)
        job = Job(id=str(uuid.uuid4()), plugin=plugin, command="poll", max_attempts=1, created_at=now)
        await store.enqueue(job, actor=Actor.CLI, now=now, dedupe_ttl=timedelta(hours=1))
        return job.id
    finally:
        await store.close()


def run_flood(daemon: Daemon, db: Path, plugin: str) -> tuple[float, float, str]:
    """(RSS growth MiB, seconds the run took, how the job ended)."""
    before = proc_status(daemon.pid)["VmRSS"]
    Path(f"/proc/{daemon.pid}/clear_refs").write_text("5")  # VmHWM := VmRSS
    job_id = asyncio.run(_enqueue(db, plugin))

    def ended() -> list[tuple[object, ...]]:
        return query(
            db,
            "SELECT j.status, j.last_error, r.duration FROM jobs j JOIN runs r ON r.job_id = j.id "
            "WHERE j.id = ?",
            (job_id,),
        )

    rows = wait_until(ended, 300, f"the {plugin} job to end", interval=0.1)
    peak = proc_status(daemon.pid)["VmHWM"]
    status, error, duration = rows[0]
    return (peak - before) / 1024, float(str(duration)), f"{status}: {error or 'ok'}"


def with_api(config: Path) -> Path:
    """The same site with the operator API (one token) and the dashboard on a listener of their own."""
    site = yaml.safe_load(config.read_text())
    site["api"] = {
        "listen": f"127.0.0.1:{free_port()}",
        "tokens": [{"name": "bench", "token": TOKEN, "scopes": ["*"]}],
    }
    site["ui"] = {"enabled": True}
    path = config.with_name("ductile-api.yaml")
    path.write_text(yaml.safe_dump(site, sort_keys=False))
    return path


def touch_api(config: Path) -> None:
    """One authenticated call to the API and one to the dashboard (their lazy parts get built)."""
    listen = yaml.safe_load(config.read_text())["api"]["listen"]
    for path in ("/jobs", "/ui/"):
        request = urllib.request.Request(
            f"http://{listen}{path}", headers={"Authorization": f"Bearer {TOKEN}"}
        )
        with urllib.request.urlopen(request, timeout=30) as answer:
            answer.read()


def idle_rss(config: Path, seconds: float, *, api: bool) -> float:
    """VmRSS (MiB) of a daemon started on ``config``, ``seconds`` after start-up (and the calls)."""
    daemon = Daemon(config).wait_running()
    try:
        if api:
            touch_api(config)
        time.sleep(seconds)
        return proc_status(daemon.pid)["VmRSS"] / 1024
    finally:
        daemon.stop()


def idle_side_by_side(config: Path, seconds: float, rounds: int) -> dict[str, list[float]]:
    """Idle RSS without and with the API + dashboard, alternating (A B B A ...)."""
    api_config = with_api(config)
    rss: dict[str, list[float]] = {"plain": [], "api": []}
    for r in range(rounds):
        for variant in ("plain", "api") if r % 2 == 0 else ("api", "plain"):
            rss[variant].append(
                idle_rss(api_config if variant == "api" else config, seconds, api=variant == "api")
            )
    return rss


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--idle-seconds", type=float, default=3.0)
    parser.add_argument("--idle-rounds", type=int, default=2, help="idle daemons of each variant, alternated")
    parser.add_argument("--gib", type=float, default=1.0)
    args = parser.parse_args()
    with scratch("bench-memory-") as root:
        config = write_site(
            root,
            {
                "sh": sh_plugin(),
                "py": python_plugin(),
                "flood-stdout": flood("stdout", args.gib),
                "flood-stderr": flood("stderr", args.gib),
            },
            settings={
                "flood-stdout": {"timeouts": {"poll": "5m"}},
                "flood-stderr": {"timeouts": {"poll": "5m"}},
            },
            endpoints=[{"path": "/hook/x", "plugin": "sh", "secret": SECRET}],
        )
        db = root / "state" / "ductile.db"
        heading("Memory: idle RSS of the daemon, RSS growth under an output flood")
        print(machine(root) + "\n", flush=True)
        rss = idle_side_by_side(config, args.idle_seconds, args.idle_rounds)
        plain, api = median(rss["plain"]), median(rss["api"])
        rows = [
            (
                "idle daemon (4 plugins, webhook listener)",
                f"{plain:.1f}",
                "-",
                "-",
                verdict(plain, IDLE_GOAL_MB, at_least=False),
            ),
            (
                "idle daemon, the same + operator API and dashboard",
                f"{api:.1f}",
                "-",
                f"+{api - plain:.1f} MiB for the API and dashboard",
                verdict(api, IDLE_GOAL_MB, at_least=False),
            ),
        ]
        daemon = Daemon(config).wait_running()
        try:
            time.sleep(args.idle_seconds)
            idle = proc_status(daemon.pid)
            for stream in ("stdout", "stderr"):
                growth, took, how = run_flood(daemon, db, f"flood-{stream}")
                rows.append(
                    (
                        f"growth while a plugin writes {args.gib:g} GiB to {stream}",
                        f"{growth:+.1f}",
                        f"{took:.2f}",
                        how[:60],
                        verdict(growth, GROWTH_GOAL_MB, at_least=False),
                    )
                )
            after = proc_status(daemon.pid)["VmRSS"] / 1024
        finally:
            daemon.stop()
        print(table(("what", "MiB", "run s", "job ended", "goal"), rows))
        print(
            f"\nRSS after both floods: {after:.1f} MiB; peak since start (start-up included): "
            f"{idle['VmHWM'] / 1024:.1f} MiB before the floods"
        )
        print(f"idle rounds (MiB): plain {rss['plain']}, API + dashboard {rss['api']}")
        print(f"load average at the end: {loadavg():.2f}")
        goal_row(
            "9",
            "idle RSS with the API and dashboard",
            f"{api:.1f} MiB (without: {plain:.1f})",
            "<= 60 MiB",
            met=api <= IDLE_GOAL_MB,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
