"""Webhook throughput of the HTTP adapter with an in-memory submit (no durable store).

The server (the thing measured) runs in this process on its own event loop,
exactly as the daemon runs it; the load generator runs in a child process so
that the two do not share a GIL. The generator keeps ``--concurrency``
keep-alive connections busy with signed POSTs over raw asyncio streams (an
HTTP client library would cost more CPU than the server) for ``--seconds``.

    .venv/bin/python bench/bench_webhooks.py [--concurrency 32] [--seconds 5] [--size 1000]

Prints requests/s, latency percentiles and the server's CPU time per request
(includes the child's start-up wait, so it slightly overstates the cost). The figure with the durable store
(SqliteStore) is measured separately: it is bounded by commits per second.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import platform
import statistics
import sys
import time
from typing import Any

from ductile.adapters.http import HttpServer, WebhookDelivery, build_app, sign
from ductile.domain.config import Endpoint

SECRET = "bench secret"
PATH = "/hook/bench"


def make_request(size: int) -> bytes:
    payload = {"action": "push", "ref": "refs/heads/main", "padding": "x" * max(0, size - 60)}
    body = json.dumps(payload).encode()
    head = (
        f"POST {PATH} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"X-Hub-Signature-256: {sign(SECRET, body)}\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    return head + body


async def _worker(port: int, request: bytes, until: float, latencies: list[float], errors: list[str]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        while time.perf_counter() < until:
            started = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            await reader.readexactly(length)
            if not head.startswith(b"HTTP/1.1 202"):
                errors.append(head.split(b"\r\n", 1)[0].decode())
            latencies.append(time.perf_counter() - started)
    finally:
        writer.close()


def _load(port: int, concurrency: int, seconds: float, size: int, results: Any) -> None:
    async def main() -> None:
        request = make_request(size)
        latencies: list[float] = []
        errors: list[str] = []
        started = time.perf_counter()
        until = started + seconds
        await asyncio.gather(*(_worker(port, request, until, latencies, errors) for _ in range(concurrency)))
        results.put((len(latencies), time.perf_counter() - started, latencies, errors[:5], len(errors)))

    asyncio.run(main())


async def run(concurrency: int, seconds: float, size: int) -> None:
    received = 0

    async def submit(delivery: WebhookDelivery) -> str:
        nonlocal received
        received += 1
        return f"job-{received}"

    async def health() -> dict[str, Any]:
        return {"status": "ok"}

    endpoint = Endpoint(path=PATH, plugin="bench", secret=SECRET)
    app = build_app(endpoints=lambda: [endpoint], submit=submit, health=health)
    server = HttpServer(app, "127.0.0.1", 0, max_connections=concurrency + 16)
    await server.start()
    try:
        ctx = multiprocessing.get_context("spawn")
        results = ctx.Queue()
        child = ctx.Process(target=_load, args=(server.port, concurrency, seconds, size, results))
        child.start()
        loop = asyncio.get_running_loop()
        cpu_started = time.process_time()
        count, elapsed, latencies, errors, n_errors = await loop.run_in_executor(None, results.get, True, 120)
        server_cpu = time.process_time() - cpu_started
        await loop.run_in_executor(None, child.join, 30)
    finally:
        await server.stop()

    latencies.sort()
    quantiles = statistics.quantiles(latencies, n=100) if len(latencies) > 1 else latencies * 99
    print(f"interpreter: {platform.python_implementation()} {platform.python_version()} ({sys.executable})")
    print(f"machine: {platform.machine()}, {multiprocessing.cpu_count()} CPUs")
    wire = len(make_request(size))
    print(f"webhooks: concurrency {concurrency}, {seconds:.0f} s, {wire} bytes per request on the wire")
    print(f"completed {count} requests in {elapsed:.2f} s -> {count / elapsed:,.0f} requests/s")
    p50, p90, p99 = (quantiles[i] * 1000 for i in (49, 89, 98))
    print(f"latency ms: p50 {p50:.1f}  p90 {p90:.1f}  p99 {p99:.1f}")
    per_request = server_cpu / max(count, 1)
    print(
        f"server CPU: {per_request * 1e6:.0f} us per request -> at most ~{1 / per_request:,.0f} requests/s "
        "on one free core (the figure that does not depend on other load on the machine)"
    )
    print(f"submitted (server side): {received}; non-202 answers: {n_errors} {errors}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--size", type=int, default=1000, help="approximate JSON body size in bytes")
    args = parser.parse_args()
    asyncio.run(run(args.concurrency, args.seconds, args.size))


if __name__ == "__main__":
    main()
