"""Spawn overhead: SubprocessSpawner vs a bare subprocess.run, for do-nothing plugins.

Usage: .venv/bin/python bench/bench_spawner.py [runs]   (default 200)

Both sides do the same work per run: new session, close_fds, a controlled
environment, the request written to stdin, stdout and stderr captured. The
spawner also opens a pidfd, reads /proc/<pid>/stat for the handle and runs on
an event loop. Prints the medians and their ratio (one run, one machine).
"""

from __future__ import annotations

import asyncio
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

from ductile.adapters.spawner import SubprocessSpawner
from ductile.ports.spawner import ProcessHandle, SpawnRequest

ENV = {"PATH": "/usr/bin:/bin"}
STDIN = b'{"protocol": 1, "command": "poll", "config": {}, "state": {}}'


def once_subprocess_run(executable: str) -> float:
    start = time.perf_counter()
    subprocess.run(
        [executable],
        input=STDIN,
        capture_output=True,
        env=ENV,
        cwd="/",
        start_new_session=True,
        close_fds=True,
        check=True,
    )
    return time.perf_counter() - start


async def bench(executable: str, runs: int) -> tuple[list[float], list[float]]:
    """Alternate the two, so both see the same load (the machine is shared)."""
    spawner = SubprocessSpawner()
    request = SpawnRequest(executable=executable, cwd="/", stdin=STDIN, env=ENV, timeout=10)

    async def on_start(handle: ProcessHandle) -> None:
        return None

    base: list[float] = []
    ours: list[float] = []
    for _ in range(runs):
        base.append(once_subprocess_run(executable))
        start = time.perf_counter()
        outcome = await spawner.run(request, on_start=on_start)
        ours.append(time.perf_counter() - start)
        assert outcome.exit_code == 0, outcome
    return base, ours


def main() -> None:
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    with tempfile.TemporaryDirectory() as tmp:
        script = os.path.join(tmp, "noop")
        with open(script, "w") as f:
            f.write("#!/bin/sh\nexit 0\n")
        os.chmod(script, 0o755)
        print(f"python: {sys.executable} ({platform.python_implementation()} {platform.python_version()})")
        print(f"median of {runs} runs each; /bin/sh is {os.path.realpath('/bin/sh')}")
        for label, exe in (("/bin/true (ELF, no interpreter)", "/bin/true"), ("#!/bin/sh script", script)):
            asyncio.run(bench(exe, 10))  # warm up
            times = asyncio.run(bench(exe, runs))
            base, ours = statistics.median(times[0]), statistics.median(times[1])
            print(
                f"{label:34} subprocess.run {base * 1e3:6.2f} ms | SubprocessSpawner {ours * 1e3:6.2f} ms"
                f" | ratio {ours / base:4.2f}x"
            )


if __name__ == "__main__":
    main()
