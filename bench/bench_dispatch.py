"""Dispatch overhead: the real daemon draining N queued jobs vs a raw loop spawning the same plugin.

    python bench/bench_dispatch.py [--jobs-sh 200] [--jobs-py 60] [--rounds 3] [--against TREE]

Two plugins: (a) a ``/bin/sh`` script that reads its request with the ``read``
builtin and prints ``{"status": "ok"}``; (b) a Python script started by
absolute path (``#!<sys.executable> -I``: this very interpreter) that parses
its request with ``json.load`` and answers.

* raw: ``subprocess.run([plugin], input=request, capture_output=True, cwd, env)``
  then ``json.loads(stdout)``, N times in a loop; per job = loop time / N.
* ductile: ``ductile start`` (the real daemon, SQLite with synchronous=FULL)
  is running; the bench enqueues N jobs at once through ``SqliteStore`` on the
  daemon's database and waits until all N succeeded; per job = the time between
  the first and the last ``completed_at`` / (N - 1): the steady state of the
  dispatcher (claim, read state, build the request, spawn, record the process
  group, read the answer, settle, log), without start-up or the wake-up delay.

The same request bytes and environment are given to both. The variants are
interleaved (raw, ductile, ductile, raw, ...) and the medians of the rounds are
compared. Figure: raw time / ductile time (1.0 = no overhead at all).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from _common import (
    Daemon,
    child_env,
    cpu_seconds,
    goal_row,
    heading,
    loadavg,
    machine,
    median,
    python_plugin,
    query,
    scratch,
    sh_plugin,
    spread,
    table,
    verdict,
    wait_until,
    write_site,
)

from ductile.adapters.sqlite import SqliteStore
from ductile.app.spawn import plugin_env
from ductile.domain.job import Actor, Job
from ductile.domain.protocol import build_request

GOALS = {"sh": 0.60, "py": 0.95}  # issue 18
TTL = timedelta(hours=24)


def request_for(plugin: str) -> tuple[bytes, dict[str, str]]:
    """The stdin and environment the daemon gives a poll of ``plugin`` (same shape, same size)."""
    job_id = str(uuid.uuid4())
    stdin = build_request(
        job_id=job_id,
        command="poll",
        config={},
        state={},
        deadline_at=datetime.now(UTC) + timedelta(seconds=60),
    )
    env = plugin_env(os.environ)
    env.update(DUCTILE_PLUGIN=plugin, DUCTILE_COMMAND="poll", DUCTILE_JOB_ID=job_id, DUCTILE_ATTEMPT="1")
    return stdin, env


def raw_loop(executable: Path, n: int) -> tuple[float, float]:
    """Seconds per job of the plain loop: wall time, and CPU time of the spawning process."""
    stdin, env = request_for(executable.parent.name)
    cwd = str(executable.parent)
    started = time.perf_counter()
    cpu = time.process_time()
    for _ in range(n):
        done = subprocess.run(
            [str(executable)], input=stdin, capture_output=True, cwd=cwd, env=env, check=False
        )
        if json.loads(done.stdout).get("status") != "ok":
            raise RuntimeError(f"{executable} answered {done.stdout!r}")
    return (time.perf_counter() - started) / n, (time.process_time() - cpu) / n


async def _enqueue(db: Path, plugin: str, n: int) -> list[str]:
    store = await SqliteStore.open(db)
    try:
        now = datetime.now(UTC)
        jobs = [Job(id=str(uuid.uuid4()), plugin=plugin, command="poll", created_at=now) for _ in range(n)]
        await asyncio.gather(*(store.enqueue(j, actor=Actor.CLI, now=now, dedupe_ttl=TTL) for j in jobs))
        return [j.id for j in jobs]
    finally:
        await store.close()


def ductile_drain(daemon: Daemon, db: Path, plugin: str, n: int) -> tuple[float, float]:
    """Seconds per job of the daemon's dispatcher in steady state (see the module's docs), and
    the daemon's CPU time per job (all its threads, from enqueue to the last job's end)."""
    cpu = cpu_seconds(daemon.pid)
    ids = asyncio.run(_enqueue(db, plugin, n))
    marks = ",".join("?" * len(ids))

    def finished() -> bool:
        if daemon.proc.poll() is not None:
            raise RuntimeError(f"the daemon died:\n{daemon.log_path.read_text()[-2000:]}")
        rows = query(db, f"SELECT status, COUNT(*) FROM jobs WHERE id IN ({marks}) GROUP BY status", ids)
        counts = dict(rows)
        bad = {k: v for k, v in counts.items() if k not in ("queued", "running", "succeeded")}
        if bad:
            raise RuntimeError(f"jobs did not succeed: {bad}")
        return counts.get("succeeded", 0) == n

    wait_until(finished, 60 + n * 0.5, f"{n} {plugin} jobs to succeed", interval=0.1)
    used = cpu_seconds(daemon.pid) - cpu
    first, last = query(
        db, f"SELECT MIN(completed_at), MAX(completed_at) FROM jobs WHERE id IN ({marks})", ids
    )[0]
    return (last - first) / 1e6 / (n - 1), used / n


def _measure(
    args: argparse.Namespace, root: Path, against: Path | None
) -> tuple[dict[tuple[str, str], list[float]], dict[tuple[str, str], list[float]]]:
    """Per-job wall and CPU seconds of every variant, rounds alternating the variants."""
    sites = {"ductile": root / "this"} | ({"before": root / "before"} if against else {})
    daemons: dict[str, tuple[Daemon, Path]] = {}
    results: dict[tuple[str, str], list[float]] = {}
    cpu: dict[tuple[str, str], list[float]] = {}
    try:
        for name, site in sites.items():
            site.mkdir()
            config = write_site(site, {"sh": sh_plugin(), "py": python_plugin()})
            env = child_env(PYTHONPATH=str(against / "src")) if name == "before" and against else None
            daemons[name] = (Daemon(config, env=env).wait_running(), site / "state" / "ductile.db")
        for plugin, n in (("sh", args.jobs_sh), ("py", args.jobs_py)):
            exe = root / "this" / "plugins" / plugin / "run"
            raw_loop(exe, 5)  # warm the page cache
            for daemon, db in daemons.values():
                ductile_drain(daemon, db, plugin, 5)
            variants = ["raw", *daemons]
            for r in range(args.rounds):
                for variant in variants if r % 2 == 0 else variants[::-1]:
                    if variant == "raw":
                        wall, used = raw_loop(exe, n)
                    else:
                        wall, used = ductile_drain(*daemons[variant], plugin, n)
                    results.setdefault((plugin, variant), []).append(wall)
                    cpu.setdefault((plugin, variant), []).append(used)
    finally:
        for daemon, _ in daemons.values():
            daemon.stop()
    return results, cpu


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs-sh", type=int, default=200, help="jobs per round, /bin/sh plugin")
    parser.add_argument("--jobs-py", type=int, default=60, help="jobs per round, Python plugin")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--against", type=Path, help="another source tree: its daemon drains too, side by side"
    )
    args = parser.parse_args()
    against = args.against.resolve() if args.against else None
    with scratch("bench-dispatch-") as root:
        heading("Dispatch overhead: raw spawn loop vs the real daemon")
        print(machine(root))
        print(f"sh is {os.path.realpath('/bin/sh')}; the Python plugin runs {sys.executable} -I")
        print(f"jobs per round: sh {args.jobs_sh}, py {args.jobs_py}; rounds {args.rounds}; medians")
        if against:
            print(f"'before' is the daemon of {against} (PYTHONPATH={against / 'src'})")
        print(flush=True)
        results, cpu = _measure(args, root, against)
        _report(results, cpu, against is not None)
        print(f"load average at the end: {loadavg():.2f}")
    return 0


def _report(
    results: dict[tuple[str, str], list[float]], cpu: dict[tuple[str, str], list[float]], before: bool
) -> None:
    rows = []
    labels = {"sh": "(a) /bin/sh plugin", "py": "(b) Python plugin (absolute interpreter)"}
    for plugin, label in labels.items():
        raw = median(results[(plugin, "raw")])
        for variant in ("ductile", "before") if before else ("ductile",):
            ours = median(results[(plugin, variant)])
            ratios = [
                a / b for a, b in zip(results[(plugin, "raw")], results[(plugin, variant)], strict=True)
            ]
            rows.append(
                (
                    label + ("" if variant == "ductile" else " - before"),
                    f"{raw * 1e3:.2f}",
                    f"{ours * 1e3:.2f}",
                    f"{(ours - raw) * 1e3:+.2f}",
                    f"{raw / ours:.2f}",
                    spread(ratios),
                    verdict(raw / ours, GOALS[plugin], at_least=True),
                )
            )
    print(
        table(
            ("plugin", "raw ms/job", "ductile ms/job", "overhead ms", "raw/ductile", "rounds", "goal"), rows
        )
    )
    variants = ("ductile", "before") if before else ("ductile",)
    print(
        "\nCPU of the spawning process per job (the plugin's own CPU not included): "
        + "; ".join(
            f"{plugin} {variant}: {median(cpu[(plugin, variant)]) * 1e3:.2f} ms"
            for plugin in ("sh", "py")
            for variant in ("raw", *variants)
        )
    )
    for goal, plugin in (("1", "sh"), ("2", "py")):
        ratio = median(results[(plugin, "raw")]) / median(results[(plugin, "ductile")])
        goal_row(
            goal,
            f"dispatch raw/ductile, {labels[plugin][4:]}",
            f"{ratio:.2f}",
            f">= {GOALS[plugin]:g}",
            met=ratio >= GOALS[plugin],
        )


if __name__ == "__main__":
    sys.exit(main())
