"""Webhook ingest of the real daemon: durable 202s per second at concurrency 32, against huey's bare enqueue.

    python bench/bench_ingest.py [--rounds 3] [--seconds 3] [--concurrency 32] [--enqueues 640]

The daemon (``ductile start``, SqliteStore with synchronous=FULL) listens on
127.0.0.1; the load generator, in this process, keeps ``--concurrency``
keep-alive connections busy with correctly signed POSTs (``X-Hub-Signature-256``,
a ~1 KB JSON body) over raw asyncio streams for ``--seconds`` and counts the
202 answers: each one is a job committed (fsynced) before the answer. The
endpoint's plugin holds the serial dispatcher with its first job (it sleeps),
so what is measured is intake, not intake plus runs.

In the same run, alternating with it: the bare durable enqueue of a peer,
huey's SqliteStorage (fsync=True) from 32 threads, and ductile's own bare
``SqliteStore.enqueue`` from 32 asyncio tasks (see bench_huey.py).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
import time

from _common import (
    SECRET,
    Daemon,
    heading,
    loadavg,
    machine,
    median,
    query,
    scratch,
    spread,
    table,
    verdict,
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--enqueues", type=int, default=640, help="bare enqueues per round (32 concurrent)")
    args = parser.parse_args()
    with scratch("bench-ingest-") as root:
        config = write_site(
            root,
            {"hold": HOLD},
            settings={"hold": {"timeouts": {"handle": "15m"}}},
            endpoints=[
                {"path": PATH, "plugin": "hold", "secret": SECRET, "signature_header": "X-Hub-Signature-256"}
            ],
        )
        db = root / "state" / "ductile.db"
        heading("Webhook ingest: durable 202s per second (real daemon) vs a peer's bare durable enqueue")
        print(machine(root))
        print(
            f"concurrency {args.concurrency}, {args.seconds:g} s per round, {args.rounds} rounds, medians; "
            f"{len(make_request(0))} bytes per request on the wire\n",
            flush=True,
        )
        daemon = Daemon(config).wait_running()
        assert daemon.port is not None
        rates: dict[str, list[float]] = {"webhook": [], "huey": [], "ductile": []}
        statuses: dict[str, int] = {}
        try:
            webhook_rate(daemon.port, args.concurrency, 0.5)  # warm up (connections, caches)
            for r in range(args.rounds):
                order = ("webhook", "huey", "ductile") if r % 2 == 0 else ("ductile", "huey", "webhook")
                for variant in order:
                    if variant == "webhook":
                        rate, counts = webhook_rate(daemon.port, args.concurrency, args.seconds)
                        for k, v in counts.items():
                            statuses[k] = statuses.get(k, 0) + v
                    elif variant == "huey":
                        rate = huey_enqueue_rate(root, args.enqueues)
                    else:
                        rate = ductile_enqueue_rate(root, args.enqueues)
                    rates[variant].append(rate)
            stored = query(db, "SELECT COUNT(*) FROM jobs")[0][0]
        finally:
            daemon.proc.send_signal(signal.SIGTERM)  # stop intake; the held job ends when its plugin does
            for (pgid,) in query(db, "SELECT pgid FROM processes"):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pgid, signal.SIGKILL)
            daemon.stop()
        web, huey = median(rates["webhook"]), median(rates["huey"])
        print(
            table(
                ("intake, 32 concurrent", "per second", "rounds", "webhook/this"),
                [
                    ("signed webhook -> durable 202 (real daemon)", web, spread(rates["webhook"]), "1.00"),
                    (
                        "huey SqliteStorage enqueue, fsync=True (bare)",
                        huey,
                        spread(rates["huey"]),
                        f"{web / huey:.2f}",
                    ),
                    (
                        "ductile SqliteStore.enqueue, FULL (bare)",
                        median(rates["ductile"]),
                        spread(rates["ductile"]),
                        f"{web / median(rates['ductile']):.2f}",
                    ),
                ],
            )
        )
        print(f"\nanswers: {statuses}; jobs in the daemon's database: {stored:,}")
        print(f"goal 1, webhook 202/s: {verdict(web, GOAL, at_least=True)}")
        print(
            f"goal 2, webhook 202/s / huey bare enqueue/s = {web / huey:.2f}: "
            f"{verdict(web / huey, 1.0, at_least=True)}"
        )
        print(f"load average at the end: {loadavg():.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
