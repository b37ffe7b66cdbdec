"""Webhook ingest of the real daemon: durable 202s per second at concurrency 32, against huey's bare enqueue.

    python bench/bench_ingest.py [--rounds 3] [--seconds 3] [--concurrency 32] [--enqueues 640]
                                 [--against TREE]

The daemon (``ductile start``, SqliteStore with synchronous=FULL) listens on
127.0.0.1; the load generator, in this process, keeps ``--concurrency``
keep-alive connections busy with correctly signed POSTs (``X-Hub-Signature-256``,
a ~1 KB JSON body) over raw asyncio streams for ``--seconds`` and counts the
202 answers: each one is a job committed (fsynced) before the answer. The
endpoint's plugin holds the serial dispatcher with its first job (it sleeps),
so what is measured is intake, not intake plus runs.

In the same run, alternating with it: the bare durable enqueue of a peer,
huey's SqliteStorage (fsync=True) from 32 threads, and ductile's own bare
``SqliteStore.enqueue`` from 32 asyncio tasks (see bench_huey.py). With
``--against TREE`` a second daemon, importing ductile from TREE's ``src/``
(the same config, a state directory of its own), takes the load in turn, so
both trees are measured side by side. Per 202, the CPU each daemon's event
loop and its other threads (mostly the SQLite writer) spent, from
``/proc/<pid>/task/*/stat``.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import os
import signal
import sys
import time
from pathlib import Path

from _common import (
    SECRET,
    Daemon,
    child_env,
    goal_row,
    heading,
    loadavg,
    machine,
    median,
    query,
    scratch,
    spread,
    table,
    write_site,
)
from bench_huey import ductile_enqueue_rate, huey_enqueue_rate

from ductile.adapters.http import sign

PATH = "/hook/bench"
GOAL = 3000.0
HOLD = "#!/bin/sh\nexec sleep 600\n"


def make_request(port: int) -> bytes:
    payload = {
        "action": "push",
        "ref": "refs/heads/main",
        "repository": {"full_name": "someone/something", "id": 123456},
        "commits": [{"id": "0" * 40, "message": "x" * 600, "author": {"name": "A. Person"}}],
    }
    body = json.dumps(payload).encode()
    head = (
        f"POST {PATH} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
        f"X-Hub-Signature-256: {sign(SECRET, body)}\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    return head + body


async def _worker(port: int, request: bytes, until: float, counts: dict[str, int]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        while time.perf_counter() < until:
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            await reader.readexactly(length)
            status = head.split(b" ", 2)[1].decode()
            counts[status] = counts.get(status, 0) + 1
    finally:
        writer.close()


def webhook_rate(port: int, concurrency: int, seconds: float) -> tuple[float, dict[str, int]]:
    async def main() -> tuple[float, dict[str, int]]:
        request = make_request(port)
        counts: dict[str, int] = {}
        started = time.perf_counter()
        await asyncio.gather(*(_worker(port, request, started + seconds, counts) for _ in range(concurrency)))
        return counts.get("202", 0) / (time.perf_counter() - started), counts

    return asyncio.run(main())


def daemon_threads_cpu(pid: int) -> tuple[float, float]:
    """CPU seconds of the daemon's event loop (its main thread) and of its other threads."""
    loop = other = 0.0
    for task in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(FileNotFoundError), open(f"/proc/{pid}/task/{task}/stat", "rb") as f:
            fields = f.read().rpartition(b")")[2].split()
        seconds = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        if int(task) == pid:
            loop += seconds
        else:
            other += seconds
    return loop, other


def start_daemon(root: Path, src: Path | None) -> tuple[Daemon, Path]:
    """A daemon on a site of its own under ``root``; ``src``: import ductile from that tree."""
    root.mkdir()
    config = write_site(
        root,
        {"hold": HOLD},
        settings={"hold": {"timeouts": {"handle": "15m"}}},
        endpoints=[
            {"path": PATH, "plugin": "hold", "secret": SECRET, "signature_header": "X-Hub-Signature-256"}
        ],
    )
    env = child_env(PYTHONPATH=str(src)) if src is not None else None
    return Daemon(config, env=env).wait_running(), root / "state" / "ductile.db"


def stop_daemon(daemon: Daemon, db: Path) -> int:
    """Stop intake, kill the held job's plugin, stop; the jobs stored."""
    daemon.proc.send_signal(signal.SIGTERM)  # stop intake; the held job ends when its plugin does
    stored = query(db, "SELECT COUNT(*) FROM jobs")[0][0]
    for (pgid,) in query(db, "SELECT pgid FROM processes"):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)
    daemon.stop()
    return int(stored)


Figures = dict[str, list[float]]


def one_round(
    variant: str, daemons: dict[str, Daemon], args: argparse.Namespace, root: Path, figures: Figures
) -> dict[str, int]:
    """Measure ``variant`` once, appending to ``figures``; the webhook answers counted."""
    counts: dict[str, int] = {}
    if variant == "huey":
        rate = huey_enqueue_rate(root, args.enqueues)
    elif variant == "ductile":
        rate = ductile_enqueue_rate(root, args.enqueues)
    else:
        daemon = daemons[variant]
        assert daemon.port is not None
        before = daemon_threads_cpu(daemon.pid)
        rate, counts = webhook_rate(daemon.port, args.concurrency, args.seconds)
        after = daemon_threads_cpu(daemon.pid)
        answered = max(1, counts.get("202", 0))
        figures[f"{variant} loop us"].append((after[0] - before[0]) / answered * 1e6)
        figures[f"{variant} other us"].append((after[1] - before[1]) / answered * 1e6)
    figures[variant].append(rate)
    return counts


def report(figures: Figures, trees: list[str], statuses: dict[str, int], stored: dict[str, int]) -> None:
    huey = median(figures["huey"])
    rows = []
    for tree in trees:
        web = median(figures[tree])
        label = "signed webhook -> durable 202 (real daemon)" + ("" if tree == "this tree" else f", {tree}")
        rows.append((label, web, spread(figures[tree]), f"{web / huey:.2f}"))
    rows.append(("huey SqliteStorage enqueue, fsync=True (bare)", huey, spread(figures["huey"]), "1.00"))
    bare = median(figures["ductile"])
    rows.append(
        ("ductile SqliteStore.enqueue, FULL (bare)", bare, spread(figures["ductile"]), f"{bare / huey:.2f}")
    )
    print(table(("intake, 32 concurrent", "per second", "rounds", "this/huey"), rows))
    print()
    print(
        table(
            ("daemon CPU per 202 (us, median)", "event loop", "other threads (the SQLite writer)", "in all"),
            [
                (
                    tree,
                    median(figures[f"{tree} loop us"]),
                    median(figures[f"{tree} other us"]),
                    median(figures[f"{tree} loop us"]) + median(figures[f"{tree} other us"]),
                )
                for tree in trees
            ],
        )
    )
    if "--against" in trees:
        print(f"\nthis tree / --against: {median(figures['this tree']) / median(figures['--against']):.2f}")
    print(f"\nanswers: {statuses}; jobs in the daemons' databases: {stored}")
    web = median(figures["this tree"])
    goal_row("4a", "durable webhook 202/s at concurrency 32", f"{web:,.0f}/s", ">= 3,000/s", met=web >= GOAL)
    goal_row(
        "4b",
        "durable webhook 202/s vs huey's bare durable enqueue (same run)",
        f"{web / huey:.2f}x ({web:,.0f} vs {huey:,.0f}/s)",
        ">= 1.0x",
        met=web / huey >= 1.0,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--enqueues", type=int, default=640, help="bare enqueues per round (32 concurrent)")
    parser.add_argument(
        "--against", type=Path, help="another source tree (its src/): a second daemon, alternated"
    )
    args = parser.parse_args()
    with scratch("bench-ingest-") as root:
        heading("Webhook ingest: durable 202s per second (real daemon) vs a peer's bare durable enqueue")
        print(machine(root))
        print(
            f"concurrency {args.concurrency}, {args.seconds:g} s per round, {args.rounds} rounds, medians; "
            f"{len(make_request(0))} bytes per request on the wire\n",
            flush=True,
        )
        trees = ["this tree"] + (["--against"] if args.against else [])
        daemons: dict[str, Daemon] = {}
        dbs: dict[str, Path] = {}
        figures: Figures = collections.defaultdict(list)
        statuses: dict[str, int] = {}
        stored: dict[str, int] = {}
        try:
            for n, tree in enumerate(trees):
                src = args.against.resolve() / "src" if tree == "--against" else None
                daemons[tree], dbs[tree] = start_daemon(root / f"site-{n}", src)
                assert daemons[tree].port is not None
                webhook_rate(daemons[tree].port, args.concurrency, 0.5)  # warm up (connections, caches)
            variants = [*trees, "huey", "ductile"]
            for r in range(args.rounds):
                for variant in variants if r % 2 == 0 else reversed(variants):
                    for k, v in one_round(variant, daemons, args, root, figures).items():
                        statuses[k] = statuses.get(k, 0) + v
        finally:
            for tree, daemon in daemons.items():
                stored[tree] = stop_daemon(daemon, dbs[tree])
        report(figures, trees, statuses, stored)
        print(f"load average at the end: {loadavg():.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
