"""Start-up: ``ductile --help``, and ``ductile start`` until ``/healthz`` answers 200.

    python bench/bench_startup.py [--runs 7]

Each is measured in two environments, interleaved, medians of ``--runs``:

* no bytecode cache: ``PYTHONDONTWRITEBYTECODE=1`` and no ``__pycache__`` for
  ductile's own modules (as in this development environment), so every start
  compiles them again (the third-party packages keep the ``.pyc`` pip wrote);
* bytecode cache: ``PYTHONPYCACHEPREFIX`` pointing at a warmed cache, as a user
  normally has (pip compiles an installed package; Python writes the rest).

Beside them, the floor: the same interpreter running ``-c pass`` (with and
without ``import asyncio`` for the daemon). ``/healthz`` is polled over a raw
socket every 2 ms from the moment the process is spawned.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from _common import (
    SCRIPT,
    SECRET,
    child_env,
    free_port,
    heading,
    loadavg,
    machine,
    median,
    scratch,
    sh_plugin,
    table,
    verdict,
    write_site,
)

HELP_GOAL_MS = 150.0
HEALTHZ_GOAL_MS = 1000.0


def environments(cache: Path) -> dict[str, dict[str, str]]:
    cold = child_env(PYTHONDONTWRITEBYTECODE="1")
    cold.pop("PYTHONPYCACHEPREFIX", None)
    warm = child_env(PYTHONPYCACHEPREFIX=str(cache))
    warm.pop("PYTHONDONTWRITEBYTECODE", None)
    return {"no bytecode cache": cold, "bytecode cache": warm}


def timed_run(argv: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True, cwd="/")
    return time.perf_counter() - started


def healthz_once(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0) as s:
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            return s.recv(64).startswith(b"HTTP/1.1 200")
    except OSError:
        return False


def time_to_healthz(root: Path, env: dict[str, str]) -> float:
    port = free_port()
    config = write_site(
        root,
        {},
        endpoints=[{"path": "/hook/x", "plugin": "sh", "secret": SECRET}],
        listen=f"127.0.0.1:{port}",
    )
    state = root / "state"
    if state.exists():
        for f in state.iterdir():
            f.unlink()
    started = time.perf_counter()
    proc = subprocess.Popen(
        [str(SCRIPT), "start", "--config", str(config)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd="/",
    )
    try:
        deadline = started + 30
        while not healthz_once(port):
            if proc.poll() is not None or time.perf_counter() > deadline:
                raise RuntimeError(f"the daemon did not answer /healthz (exit code {proc.poll()})")
            time.sleep(0.002)
        return time.perf_counter() - started
    finally:
        proc.terminate()
        proc.wait(30)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    with scratch("bench-startup-") as root:
        heading("Start-up: ductile --help, and daemon start to /healthz 200")
        print(machine(root) + "\n", flush=True)
        (root / "plugins").mkdir()
        write_site(root, {"sh": sh_plugin()})  # the plugin the endpoint names
        envs = environments(root / "pycache")
        py = sys.executable
        probes = {
            "python -c pass": [py, "-c", "pass"],
            "python -c 'import asyncio'": [py, "-c", "import asyncio"],
            "ductile --help": [str(SCRIPT), "--help"],
        }
        for env in envs.values():  # warm the page cache, and the bytecode cache where there is one
            for argv in probes.values():
                timed_run(argv, env)
            time_to_healthz(root, env)
        results: dict[tuple[str, str], list[float]] = {}
        for r in range(args.runs):
            names = list(envs) if r % 2 == 0 else list(envs)[::-1]
            for name in names:
                for what, argv in probes.items():
                    results.setdefault((what, name), []).append(timed_run(argv, envs[name]))
                results.setdefault(("start to /healthz 200", name), []).append(
                    time_to_healthz(root, envs[name])
                )
        rows = []
        for what in (*probes, "start to /healthz 200"):
            cold, warm = (median(results[(what, name)]) * 1e3 for name in envs)
            goal = {"ductile --help": HELP_GOAL_MS, "start to /healthz 200": HEALTHZ_GOAL_MS}.get(what)
            rows.append(
                (
                    what,
                    f"{cold:.0f}",
                    f"{warm:.0f}",
                    verdict(cold, goal, at_least=False) if goal else "-",
                    verdict(warm, goal, at_least=False) if goal else "-",
                )
            )
        print(table(("command (ms, median)", *envs, "goal, no cache", "goal, cache"), rows))
        print(f"\nPYTHONDONTWRITEBYTECODE in this environment: {os.environ.get('PYTHONDONTWRITEBYTECODE')!r}")
        print(f"load average at the end: {loadavg():.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
