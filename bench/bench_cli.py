"""The read verbs' wall time: ``ductile queue``, ``plugins``, ``job <id>`` and ``--help``.

    python bench/bench_cli.py [--runs 7] [--against TREE]

A site with the shipped example's plugins and a database holding 20 queued
jobs (and the same config with its one cron schedule made ``every: 5m``).
``plugins`` is also run with a real ``python3`` first on ``PATH`` (see
:data:`REAL_PYTHON3`).
Each command is run by the venv's ``ductile`` script (its absolute
interpreter, not a PATH shim), ``--runs`` times, alternated, in two
environments as in ``bench_startup.py``: without a bytecode cache for
ductile's own modules (``PYTHONDONTWRITEBYTECODE=1``, this development
environment) and with a warmed one (``PYTHONPYCACHEPREFIX``, as a user
normally has). Beside them, the floors: the interpreter alone, with asyncio
and sqlite3, and importing the config reader and the SQLite store (what a
read verb cannot do without). Medians in ms, wall and CPU (user + system: on
a loaded machine the wall time is mostly waiting for a core). With
``--against TREE`` every command also runs importing ductile from TREE's
``src/`` (interleaved with this tree's), and the ratio is printed.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from _common import (
    ROOT,
    SCRIPT,
    child_env,
    goal_row,
    heading,
    loadavg,
    machine,
    median,
    scratch,
    table,
    verdict,
)

from ductile.adapters.sqlite import SqliteStore
from ductile.domain.job import Actor, Job

READ_GOAL_MS = 150.0
HELP_GOAL_MS = 80.0
JOB_ID = "0b1e5c8e-0000-4000-8000-000000000003"


async def fill(db: Path) -> None:
    store = await SqliteStore.open(db)
    now = datetime.now(UTC)
    try:
        for n in range(20):
            job = Job(id=f"0b1e5c8e-0000-4000-8000-{n:012d}", plugin="hello", command="poll", created_at=now)
            await store.enqueue(job, actor=Actor.CLI, now=now, dedupe_ttl=timedelta(hours=1))
    finally:
        await store.close()


def site(root: Path) -> Path:
    """The example's config and plugins, with a database of 20 queued jobs."""
    shutil.copytree(ROOT / "examples", root / "site")
    (root / "site" / "state").mkdir()
    asyncio.run(fill(root / "site" / "state" / "ductile.db"))
    config = root / "site" / "ductile.yaml"
    text = config.read_text()
    assert 'cron: "*/5 * * * *"' in text
    (root / "site" / "every.yaml").write_text(text.replace('cron: "*/5 * * * *"', "every: 5m"))
    return config


def timed(argv: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Wall and CPU (user + system) milliseconds of one command."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=True, cwd="/")
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    return wall * 1000, cpu * 1000


def environments(root: Path, trees: dict[str, Path]) -> dict[tuple[str, str], dict[str, str]]:
    """(tree, cache kind) -> the environment: ductile's modules compiled at every start, or cached."""
    envs = {}
    for tree, src in trees.items():
        cold = child_env(PYTHONDONTWRITEBYTECODE="1", PYTHONPATH=str(src))
        cold.pop("PYTHONPYCACHEPREFIX", None)
        warm = child_env(PYTHONPYCACHEPREFIX=str(root / f"pycache-{len(envs)}"), PYTHONPATH=str(src))
        warm.pop("PYTHONDONTWRITEBYTECODE", None)
        envs[(tree, "no cache")], envs[(tree, "cache")] = cold, warm
    return envs


Times = dict[tuple[str, str, str], list[tuple[float, float]]]


def measure(root: Path, trees: dict[str, Path], runs: int) -> Times:
    config = str(site(root))
    commands = {name: [str(SCRIPT), *argv] for name, argv in COMMANDS.items()}
    every = str(Path(config).with_name("every.yaml"))
    commands = FLOORS | {
        name: [a.replace("CONFIG", config).replace("EVERY", every) for a in argv]
        for name, argv in commands.items()
    }
    envs = environments(root, trees)
    for env in envs.values():  # warm the caches; check every command works
        for name, argv in commands.items():
            timed(argv, env_of(name, env))
    times: Times = {}
    for n in range(runs):
        for key, env in envs.items() if n % 2 == 0 else reversed(envs.items()):
            for name, argv in commands.items():
                times.setdefault((name, *key), []).append(timed(argv, env_of(name, env)))
    return times


def env_of(name: str, env: dict[str, str]) -> dict[str, str]:
    """The command's environment: for :data:`REAL_PYTHON3`, the venv's ``bin`` first on ``PATH``, so
    the plugins' ``#!/usr/bin/env python3`` finds an interpreter, not a shim (pyenv's, here)."""
    if name != REAL_PYTHON3:
        return env
    return env | {"PATH": f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"}


def figure(times: Times, key: tuple[str, str, str], what: int) -> float:
    return median(t[what] for t in times[key])


def report(times: Times, trees: dict[str, Path]) -> None:
    rows = []
    for name in FLOORS:
        cells = [figure(times, (name, "this tree", kind), what) for kind, what in COLUMNS]
        rows.append((name, "-", *(f"{c:.0f}" for c in cells), "-"))
    for name in COMMANDS:
        goal = HELP_GOAL_MS if name.endswith("--help") else READ_GOAL_MS
        for tree in trees:
            cells = [figure(times, (name, tree, kind), what) for kind, what in COLUMNS]
            rows.append((name, tree, *(f"{c:.0f}" for c in cells), verdict(cells[1], goal, at_least=False)))
    headers = ("command", "tree", "wall ms, no bytecode cache", "wall ms, cache", "CPU ms, cache", "goal")
    print(table(headers, rows))
    reads = [
        figure(times, (name, "this tree", "cache"), 0)
        for name in ("ductile queue", "ductile plugins", "ductile job <id>")
    ]
    goal_row(
        "6a",
        "`ductile queue`, `plugins`, `job <id>` wall time (bytecode cached)",
        " / ".join(f"{ms:.0f}" for ms in reads) + " ms",
        f"<= {READ_GOAL_MS:g} ms",
        met=max(reads) <= READ_GOAL_MS,
    )
    helped = figure(times, ("ductile --help", "this tree", "cache"), 0)
    goal_row(
        "6b",
        "`ductile --help` wall time",
        f"{helped:.0f} ms",
        f"<= {HELP_GOAL_MS:g} ms",
        met=helped <= HELP_GOAL_MS,
    )
    if "--against" in trees:
        print("\nthis tree / --against, medians (the lower the better):")
        for name in COMMANDS:
            ratios = [
                figure(times, (name, "this tree", kind), what)
                / figure(times, (name, "--against", kind), what)
                for kind, what in COLUMNS
            ]
            print(f"  {name}: wall {ratios[0]:.2f} (no cache), {ratios[1]:.2f} (cache); CPU {ratios[2]:.2f}")


FLOORS = {
    "floor: python -c pass": [sys.executable, "-c", "pass"],
    "floor: python -c 'import asyncio, sqlite3'": [sys.executable, "-c", "import asyncio, sqlite3"],
    "imports: the config reader": [sys.executable, "-c", "import ductile.adapters.config"],
    "imports: the SQLite store": [sys.executable, "-c", "import ductile.adapters.sqlite"],
    "imports: both, and asyncio": [
        sys.executable,
        "-c",
        "import asyncio, ductile.adapters.config, ductile.adapters.sqlite",
    ],
}
COMMANDS = {
    "ductile --help": ["--help"],
    "ductile queue": ["queue", "--config", "CONFIG"],
    "ductile queue (no cron in the config)": ["queue", "--config", "EVERY"],
    "ductile plugins": ["plugins", "--config", "CONFIG"],
    "ductile plugins (python3 on PATH not a shim)": ["plugins", "--config", "CONFIG"],
    "ductile job <id>": ["job", JOB_ID, "--config", "CONFIG"],
}
#: ``plugins`` starts the plugins' own ``python3`` to check their imports (the preflight); on
#: this machine the ``python3`` on ``PATH`` is pyenv's shim (~150 ms a start): this row puts a
#: real interpreter first on ``PATH``, as a machine without pyenv has.
REAL_PYTHON3 = "ductile plugins (python3 on PATH not a shim)"
#: The table's figures: (environment, 0 wall / 1 CPU).
COLUMNS = (("no cache", 0), ("cache", 0), ("cache", 1))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--against", type=Path, help="another source tree (its src/) to time side by side")
    args = parser.parse_args()
    heading("CLI: the read verbs and --help")
    print(machine() + "\n", flush=True)
    trees = {"this tree": ROOT / "src"}
    if args.against:
        trees["--against"] = args.against.resolve() / "src"
    with scratch("cli") as root:
        times = measure(root, trees, args.runs)
    report(times, trees)
    print(f"\nload average at the end: {loadavg():.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
