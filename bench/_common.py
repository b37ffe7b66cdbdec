"""Shared helpers of the benchmarks: machine facts, a throwaway site, the real daemon, tables.

Every bench prints the machine line first (interpreter, SQLite, CPUs, load
average, the filesystem its files live on), measures the variants it compares
side by side in one run, alternating them (A, B, B, A, ...) so both see the
same load on this shared machine, and prints medians.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any, TypeVar

import yaml

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = Path(sys.executable).with_name("ductile")
SECRET = "bench secret"
T = TypeVar("T")


# --------------------------------------------------------------------------- the machine


def loadavg() -> float:
    with open("/proc/loadavg") as f:
        return float(f.read().split()[0])


def filesystem_of(path: Path) -> str:
    best, kind = "", "?"
    with open("/proc/mounts") as mounts:
        for line in mounts:
            parts = line.split()
            target = str(path.resolve())
            if (
                len(parts) >= 3
                and (target + "/").startswith(parts[1].rstrip("/") + "/")
                and len(parts[1]) > len(best)
            ):
                best, kind = parts[1], parts[2]
    return f"{kind} at {best or '?'}"


def machine(where: Path | None = None) -> str:
    lines = [
        f"python   {sys.executable} ({platform.python_implementation()} {platform.python_version()})",
        f"sqlite   {sqlite3.sqlite_version}; {os.cpu_count()} CPUs; {platform.platform()}",
        f"load     {loadavg():.2f} (1-minute load average at the start of this bench)",
    ]
    if where is not None:
        lines.append(f"files    {where} on {filesystem_of(where)}")
    return "\n".join(lines)


def wait_for_quiet(limit: float = 1.0, bound: float = 0.0) -> float:
    """Wait (at most ``bound`` seconds) for the 1-minute load average to drop below ``limit``."""
    deadline = time.monotonic() + bound
    while loadavg() >= limit and time.monotonic() < deadline:
        time.sleep(min(5.0, max(0.0, deadline - time.monotonic())))
    return loadavg()


def bench_dir() -> Path:
    """Where benches put their files: a real disk, never a tmpfs (fsync would cost nothing)."""
    chosen = os.environ.get("DUCTILE_BENCH_DIR")
    base = Path(chosen) if chosen else Path(tempfile.gettempdir())
    if not chosen and filesystem_of(base).startswith("tmpfs"):
        base = Path.home() / ".cache" / "ductile-bench"
    base.mkdir(parents=True, exist_ok=True)
    return base


@contextmanager
def scratch(prefix: str) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=bench_dir()))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


# --------------------------------------------------------------------------- statistics and tables


def median(values: Iterable[float]) -> float:
    return statistics.median(list(values))


def spread(values: Sequence[float]) -> str:
    """min-max of the rounds, for the reader to judge the noise."""
    return f"{_cell(float(min(values)))}-{_cell(float(max(values)))}"


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A GitHub-flavoured Markdown table (prints well and pastes into docs/benchmarks.md)."""
    cells = [[str(h) for h in headers]] + [[_cell(v) for v in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]

    def line(row: Sequence[str]) -> str:
        return (
            "| "
            + " | ".join(
                c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))
            )
            + " |"
        )

    sep = (
        "|"
        + "|".join(("-" * (w + 2)) if i == 0 else ("-" * (w + 1) + ":") for i, w in enumerate(widths))
        + "|"
    )
    return "\n".join([line(cells[0]), sep, *(line(r) for r in cells[1:])])


def _cell(value: Any) -> str:
    if isinstance(value, float):
        if value >= 100:
            return f"{value:,.0f}"
        if value >= 10:
            return f"{value:.1f}"
        return f"{value:.2f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def verdict(value: float, goal: float, *, at_least: bool) -> str:
    ok = value >= goal if at_least else value <= goal
    return ("met" if ok else "NOT met") + f" (goal {'>=' if at_least else '<='} {goal:g})"


def heading(title: str) -> None:
    print(f"\n## {title}\n", flush=True)


def goal_row(goal: str, what: str, measured: str, target: str, *, met: bool | None) -> None:
    """Record one row of issue 18's goal table: printed now, and appended (as a JSON line) to
    ``$BENCH_GOALS`` when set, which ``bench/run_all`` prints together at the end."""
    row = {
        "goal": goal,
        "what": what,
        "measured": measured,
        "target": target,
        "met": None if met is None else bool(met),
    }
    print(f"GOAL {goal}: {what}: {measured} (goal {target}) -> {_met(met)}", flush=True)
    path = os.environ.get("BENCH_GOALS")
    if path:
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")


def _met(met: bool | None) -> str:
    return "reported" if met is None else ("met" if met else "NOT met")


def goal_table(path: Path) -> str:
    """The goal rows recorded in ``path``, sorted by goal number, as one Markdown table."""
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    rows.sort(key=lambda r: (int("".join(ch for ch in r["goal"] if ch.isdigit()) or 0), r["goal"]))
    return table(
        ("#", "what", "measured", "goal", "met?"),
        ((r["goal"], r["what"], r["measured"], r["target"], _met(r["met"])) for r in rows),
    )


# --------------------------------------------------------------------------- plugins and sites


def sh_plugin(answer: str = '{"status": "ok"}') -> str:
    """A /bin/sh plugin that reads its request (builtins only) and answers."""
    return f"#!/bin/sh\nread -r request\nprintf '%s\\n' '{answer}'\n"


def python_plugin() -> str:
    """A Python plugin run by this very interpreter, by absolute path (the PATH shim costs ~150 ms)."""
    return (
        f"#!{sys.executable} -I\n"
        "import json, sys\n"
        "request = json.load(sys.stdin)\n"
        "sys.stdout.write(json.dumps({'status': 'ok'}))\n"
    )


def write_plugin(
    plugins_dir: Path, name: str, script: str, commands: Sequence[str] = ("poll", "handle")
) -> Path:
    folder = plugins_dir / name
    folder.mkdir(mode=0o755, parents=True)
    folder.chmod(0o755)
    (folder / "manifest.yaml").write_text(
        f"name: {name}\nversion: 1.0.0\nprotocol: 1\nentrypoint: run\ncommands: [{', '.join(commands)}]\n"
    )
    entry = folder / "run"
    entry.write_text(script)
    entry.chmod(0o755)
    return entry


def write_site(
    root: Path,
    plugins: Mapping[str, str],
    *,
    settings: Mapping[str, Any] | None = None,
    endpoints: Sequence[Mapping[str, Any]] | None = None,
    listen: str = "127.0.0.1:0",
    service: Mapping[str, Any] | None = None,
) -> Path:
    """A site: ``ductile.yaml``, ``plugins/<name>/{manifest.yaml,run}``; returns the config path."""
    plugins_dir = root / "plugins"
    plugins_dir.mkdir(mode=0o755, exist_ok=True)
    plugins_dir.chmod(0o755)
    for name, script in plugins.items():
        write_plugin(plugins_dir, name, script)
    config: dict[str, Any] = {
        "service": {"state_dir": "./state", "tick_interval": "60s", "log_level": "info", **(service or {})},
        "plugins_dir": "./plugins",
        "plugins": {name: dict((settings or {}).get(name, {})) for name in plugins},
    }
    if endpoints is not None:
        config["webhooks"] = {"listen": listen, "endpoints": [dict(e) for e in endpoints]}
    path = root / "ductile.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def free_port() -> int:
    with closing(socket.socket()) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def child_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DUCTILE_")}
    env["TZ"] = "UTC"
    env.update(extra)
    return env


# --------------------------------------------------------------------------- the real daemon


class Daemon:
    """``ductile start`` as a subprocess; its JSON log lines go to a file we read back."""

    def __init__(self, config: Path, *, env: Mapping[str, str] | None = None) -> None:
        self.config = config
        self.log_path = config.parent / f"daemon-{time.monotonic_ns()}.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.started = time.perf_counter()
        self.proc = subprocess.Popen(
            [str(SCRIPT), "start", "--config", str(config)],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=dict(env) if env is not None else child_env(),
            cwd="/",
        )
        self.port: int | None = None

    @property
    def pid(self) -> int:
        return self.proc.pid

    def lines(self) -> list[dict[str, Any]]:
        out = []
        for raw in self.log_path.read_bytes().splitlines():
            try:
                line = json.loads(raw)
            except ValueError:
                continue
            if isinstance(line, dict):
                out.append(line)
        return out

    def wait_running(self, timeout: float = 30.0) -> Daemon:
        def ready() -> bool:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"the daemon exited {self.proc.returncode}:\n{self.log_path.read_text()[-3000:]}"
                )
            return any(line.get("message") == "ductile is running" for line in self.lines())

        wait_until(ready, timeout, "the daemon to start", interval=0.02)
        for line in self.lines():
            if line.get("message") == "listening" and line.get("component") == "http":
                self.port = int(str(line["address"]).rpartition(":")[2])
        return self

    def rss_kib(self) -> int:
        return proc_status(self.pid)["VmRSS"]

    def stop(self, timeout: float = 30.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout)
        self._log.close()
        return self.proc.returncode

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(30)
        self._log.close()


def proc_status(pid: int) -> dict[str, int]:
    """The kB figures of /proc/<pid>/status (VmRSS, VmHWM, ...)."""
    out: dict[str, int] = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            parts = value.split()
            if len(parts) == 2 and parts[1] == "kB":
                out[key] = int(parts[0])
    return out


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` (all its threads; not its children)."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        fields = f.read().rpartition(b")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_until(condition: Callable[[], T], timeout: float, what: str, *, interval: float = 0.05) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


#: The fast builders' INSERTs (straight into the store's schema, bench_growth and bench_retention).
INSERT_JOB = (
    "INSERT INTO jobs (id, plugin, command, payload, status, attempt, max_attempts, "
    "submitted_by, dedupe_key, created_at, started_at, completed_at) "
    "VALUES (?,?,?,?,?,?,?,?,?,?,?,?)"
)
INSERT_TRANSITION = (
    "INSERT INTO transitions (job_id, from_status, to_status, reason, actor, at) VALUES (?,?,?,?,?,?)"
)
INSERT_RUN = (
    "INSERT INTO runs (job_id, attempt, started_at, finished_at, duration, exit_code, signal, "
    "timed_out, error, stderr_tail, stdout_head, logs, plugin) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)"
)


def fast_database(path: Path, fill: Callable[[sqlite3.Connection], None]) -> float:
    """A database of the current schema at ``path``, its rows written by ``fill`` in one
    transaction with no journal and no fsync (a bench's fixture: built once, then cached), then
    analysed; the seconds it took. Written to ``<path>.tmp`` and renamed: never half a file."""
    from ductile.adapters.sqlite.schema import MIGRATIONS, migrate

    for suffix in ("", "-wal", "-shm", ".tmp"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    tmp = Path(f"{path}.tmp")
    started = time.perf_counter()
    with closing(sqlite3.connect(tmp, isolation_level=None)) as conn:
        conn.execute("PRAGMA journal_mode = OFF")
        conn.execute("PRAGMA synchronous = OFF")
        conn.execute("PRAGMA cache_size = -1000000")
        migrate(conn, str(tmp), MIGRATIONS)
        conn.execute("BEGIN")
        fill(conn)
        conn.execute("COMMIT")
        conn.execute("ANALYZE")
    tmp.rename(path)
    return time.perf_counter() - started


def cached_database(
    name: str, build: Callable[[Path], float], *, rebuild: bool, max_age: float | None = None
) -> tuple[Path, float | None]:
    """The cached fixture database ``name`` (of this schema version) and the seconds building
    it took, or None when the cache had it (younger than ``max_age`` seconds, when given)."""
    from ductile.adapters.sqlite.schema import SCHEMA_VERSION

    folder = bench_dir() / "ductile-growth-cache"
    folder.mkdir(exist_ok=True)
    path = folder / f"schema{SCHEMA_VERSION}-{name}.db"
    fresh = path.exists() and (max_age is None or time.time() - path.stat().st_mtime < max_age)
    if fresh and not rebuild:
        return path, None
    return path, build(path)


def query(db: Path, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
    with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10.0)) as conn:
        return conn.execute(sql, params).fetchall()
