"""The watchdog's cost (ADR 0035): one plugin run with and without ``timeout`` in front of it.

    .venv/bin/python bench/bench_watchdog.py [runs]   (default 200)

On a shared store every plugin runs under coreutils ``timeout`` (its claim's
deadline holds even if the daemon is SIGKILLed or frozen); on SQLite, the
default, it runs directly. Same SubprocessSpawner, same request, alternated
run by run (direct, watchdog, watchdog, direct, ...). Prints the medians, the
added milliseconds per run and the ratio, for a do-nothing ELF, a ``/bin/sh``
script and a Python plugin (this interpreter, by absolute path).
"""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import tempfile
import time

import attrs
from _common import heading, machine, table

from ductile.adapters.spawner import SubprocessSpawner
from ductile.ports.spawner import SpawnRequest

ENV = {"PATH": "/usr/bin:/bin"}
STDIN = b'{"protocol": 1, "command": "poll", "config": {}, "state": {}}'


async def once(spawner: SubprocessSpawner, request: SpawnRequest) -> float:
    start = time.perf_counter()
    outcome = await spawner.run(request)
    assert outcome.exit_code == 0, outcome
    return time.perf_counter() - start


async def bench(executable: str, runs: int) -> tuple[list[float], list[float]]:
    spawner = SubprocessSpawner()
    direct = SpawnRequest(executable=executable, cwd="/", stdin=STDIN, env=ENV, timeout=10)
    guarded = attrs.evolve(direct, watchdog=60.0)
    plain: list[float] = []
    watched: list[float] = []
    for n in range(runs):
        pair = [(plain, direct), (watched, guarded)]
        for bucket, request in pair if n % 2 == 0 else reversed(pair):
            bucket.append(await once(spawner, request))
    return plain, watched


def main() -> None:
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    print(machine())
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        sh = os.path.join(tmp, "noop.sh")
        py = os.path.join(tmp, "noop.py")
        with open(sh, "w") as f:
            f.write("#!/bin/sh\nread -r request\nexit 0\n")
        with open(py, "w") as f:
            f.write(f"#!{sys.executable} -I\nimport sys, json\njson.load(sys.stdin)\n")
        for path in (sh, py):
            os.chmod(path, 0o755)
        for label, exe in (("/bin/true", "/bin/true"), ("#!/bin/sh script", sh), ("Python plugin", py)):
            asyncio.run(bench(exe, 10))  # warm up
            plain, watched = asyncio.run(bench(exe, runs))
            a, b = statistics.median(plain), statistics.median(watched)
            rows.append([label, a * 1e3, b * 1e3, (b - a) * 1e3, b / a])
    heading(f"one run, median of {runs} (ms)")
    print(table(["plugin", "direct", "under the watchdog", "added", "ratio"], rows))


if __name__ == "__main__":
    main()
