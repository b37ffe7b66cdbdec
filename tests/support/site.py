"""A throwaway ductile site in ``tmp_path`` and the real daemon running on it.

:class:`Site` writes ``ductile.yaml``, a plugins directory with tiny plugins
and an ``out/`` directory the plugins report into (one file per plugin);
:meth:`Site.start` runs ``ductile start --config ...`` (the console script
next to ``sys.executable``) as a subprocess. A reader thread parses its
stdout, which D18 reserves for JSON log lines; tests wait on those lines
(:meth:`Daemon.wait_for_log`) or on any other condition (:func:`wait_until`),
always with a bounded deadline: nothing here sleeps and hopes.

The webhook listener is configured on ``127.0.0.1:0``: the kernel picks a
free port and the daemon's ``listening`` log line names it, so there is no
window in which another process could take a port the test chose.

:func:`plugin_processes` finds every live process that belongs to a site's
plugins: its command line names the site, or its working directory (a
plugin runs in its own folder) is inside the site. The fixture that owns a
site stops every daemon it started and then requires that list to be empty.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import closing, suppress
from pathlib import Path
from typing import Any, TypeVar

import httpx
import yaml

from tests.support.plugins import plugin_folder

SCRIPT = Path(sys.executable).with_name("ductile")
SECRET = "integration-secret"
#: Bounds (seconds). Generous for a loaded 2-core machine, short enough to keep failures quick.
START_TIMEOUT = 15.0
STOP_TIMEOUT = 10.0
CLI_TIMEOUT = 30.0

T = TypeVar("T")
LogLine = dict[str, Any]
Predicate = Callable[[LogLine], bool]


# --------------------------------------------------------------------------- signing


def signature(body: bytes, secret: str = SECRET) -> str:
    """The webhook signature header's value, computed here, independently of ductile's own helper."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


# --------------------------------------------------------------------------- waiting


def wait_until(condition: Callable[[], T], timeout: float, what: str, *, interval: float = 0.05) -> T:
    """Poll ``condition`` until it returns something truthy (returned), or fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what} (last value: {value!r})")
        time.sleep(interval)


def log_match(
    message: str | None = None,
    *,
    level: str | None = None,
    component: str | None = None,
    plugin: str | None = None,
    job_id: str | None = None,
    exact: bool = False,
) -> Predicate:
    """A predicate on a log line: ``message`` is a substring (or, with ``exact``, the whole message)."""

    def predicate(line: LogLine) -> bool:
        if message is not None:
            text = str(line.get("message", ""))
            if (text != message) if exact else (message not in text):
                return False
        wanted = {"level": level, "component": component, "plugin": plugin, "job_id": job_id}
        return all(value is None or line.get(key) == value for key, value in wanted.items())

    return predicate


# --------------------------------------------------------------------------- processes


def _proc_state(pid: int) -> str | None:
    """The state letter of ``pid`` (``R``, ``S``, ``Z``...), None when there is no such process."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # "pid (comm) S ...": comm may contain spaces and parentheses; the state follows the last ')'.
    return raw[raw.rfind(b")") + 2 :][:1].decode()


def alive(pid: int) -> bool:
    """True while ``pid`` runs; a zombie (dead, waiting for a parent to reap it) counts as gone."""
    state = _proc_state(pid)
    return state is not None and state not in ("Z", "X")


def plugin_processes(root: Path, *, exclude: Iterable[int] = ()) -> list[tuple[int, str]]:
    """Live processes whose command line names ``root`` or whose working directory is inside it."""
    prefix = str(root).rstrip("/") + "/"
    skip = {os.getpid(), *exclude}
    found: list[tuple[int, str]] = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) in skip:
            continue
        pid = int(entry)
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode("utf-8", "replace").strip()
            try:
                cwd = os.readlink(f"/proc/{pid}/cwd") + "/"
            except OSError:
                cwd = ""
        except OSError:
            continue
        if (prefix in cmdline + " " or cwd.startswith(prefix)) and alive(pid):
            found.append((pid, cmdline or f"[cwd {cwd}]"))
    return found


# --------------------------------------------------------------------------- the daemon


class Daemon:
    """One ``ductile start`` subprocess and the JSON lines it has logged so far."""

    def __init__(self, proc: subprocess.Popen[str], stderr_path: Path) -> None:
        self.proc = proc
        self.stderr_path = stderr_path
        self.lines: list[LogLine] = []
        #: stdout lines that are not one JSON object with the D18 keys (should stay empty).
        self.garbage: list[str] = []
        self._cond = threading.Condition()
        self._eof = False
        self._reader = threading.Thread(target=self._read, name=f"ductile-log-{proc.pid}", daemon=True)
        self._reader.start()
        self.port: int | None = None
        #: The operator API's port, when the config has an ``api`` section.
        self.api_port: int | None = None

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            text = raw.rstrip("\n")
            try:
                line = json.loads(text)
            except ValueError:
                line = None
            with self._cond:
                if isinstance(line, dict) and {"timestamp", "level", "component", "message"} <= line.keys():
                    self.lines.append(line)
                else:
                    self.garbage.append(text)
                self._cond.notify_all()
        with self._cond:
            self._eof = True
            self._cond.notify_all()

    # ----------------------------------------------------------------- reading the log
    def snapshot(self) -> list[LogLine]:
        with self._cond:
            return list(self.lines)

    def logs(self, predicate: Predicate) -> list[LogLine]:
        return [line for line in self.snapshot() if predicate(line)]

    def index(self, predicate: Predicate) -> int:
        """Position of the first matching line (fails when there is none)."""
        for i, line in enumerate(self.snapshot()):
            if predicate(line):
                return i
        raise AssertionError(f"no such log line in:\n{self.tail()}")

    def tail(self, n: int = 40) -> str:
        lines = self.snapshot()[-n:]
        text = "\n".join(json.dumps(line, ensure_ascii=False) for line in lines)
        if self.garbage:
            text += "\nnon-JSON stdout:\n" + "\n".join(self.garbage[-10:])
        stderr = self.stderr_path.read_text(errors="replace") if self.stderr_path.exists() else ""
        if stderr.strip():
            text += "\nstderr:\n" + stderr[-3000:]
        return text

    def wait_for_log(self, predicate: Predicate, timeout: float, what: str, *, count: int = 1) -> LogLine:
        """Wait until ``count`` lines match; returns the ``count``-th. Fails when the
        deadline passes or the daemon's stdout ends first."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                found = [line for line in self.lines if predicate(line)]
                if len(found) >= count:
                    return found[count - 1]
                left = deadline - time.monotonic()
                if left <= 0 or self._eof:
                    why = "the daemon's stdout ended" if self._eof else f"timed out after {timeout:g}s"
                    break
                self._cond.wait(left)
        raise AssertionError(
            f"{why} waiting for {what} ({len(found)} of {count} seen); exit code {self.proc.poll()}; "
            f"last lines:\n{self.tail()}"
        )

    # ----------------------------------------------------------------- HTTP
    @property
    def url(self) -> str:
        assert self.port is not None, "the daemon is not listening (no webhooks section?)"
        return f"http://127.0.0.1:{self.port}"

    def get(self, path: str) -> httpx.Response:
        return httpx.get(self.url + path, timeout=10.0)

    def post(
        self, path: str, content: Any, headers: Mapping[str, str | bytes] | None = None
    ) -> httpx.Response:
        raw = [
            (name.encode("latin-1"), value if isinstance(value, bytes) else value.encode("latin-1"))
            for name, value in (headers or {}).items()
        ]
        return httpx.post(self.url + path, content=content, headers=raw, timeout=10.0)

    def health(self) -> dict[str, Any]:
        response = self.get("/healthz")
        assert response.status_code == 200, response.text
        doc: dict[str, Any] = response.json()
        return doc

    # ----------------------------------------------------------------- ending it
    def wait_exit(self, timeout: float) -> int:
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"the daemon (pid {self.pid}) did not exit within {timeout:g}s; last lines:\n{self.tail()}"
            ) from None
        self._reader.join(5.0)
        return code

    def terminate(self, timeout: float = STOP_TIMEOUT) -> int:
        """SIGTERM, then wait for the exit code."""
        self.proc.send_signal(signal.SIGTERM)
        return self.wait_exit(timeout)

    def kill(self) -> int:
        self.proc.kill()
        return self.wait_exit(STOP_TIMEOUT)

    def shut(self) -> None:
        """Teardown: SIGTERM, SIGKILL if it does not end within the bound; never raises."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(STOP_TIMEOUT)
        self._reader.join(5.0)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


# --------------------------------------------------------------------------- the site


class Site:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.plugins_dir = root / "plugins"
        self.state = root / "state"
        self.out = root / "out"
        self.config_path = root / "ductile.yaml"
        self.db_path = self.state / "ductile.db"
        #: Created by teardown (and by tests) to let release-gated plugins finish.
        self.release_file = self.out / "release"
        for folder in (self.plugins_dir, self.out):
            folder.mkdir(mode=0o755)
            folder.chmod(0o755)
        self.daemons: list[Daemon] = []
        self.config: dict[str, Any] = {}

    # ----------------------------------------------------------------- writing the site
    def plugin(self, name: str, script: str, commands: Iterable[str] = ("poll", "handle")) -> Path:
        return plugin_folder(self.plugins_dir, name, script, commands=commands)

    def write_config(
        self,
        plugins: Mapping[str, Any] | None = None,
        *,
        routes: Iterable[Mapping[str, Any]] = (),
        endpoints: Iterable[Mapping[str, Any]] | None = None,
        service: Mapping[str, Any] | None = None,
        store: Mapping[str, Any] | None = None,
        api: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Write ``ductile.yaml``; a ``webhooks`` section on 127.0.0.1:0 unless ``endpoints`` is None;
        a ``store`` section when given (a shared PostgreSQL)."""
        config: dict[str, Any] = {
            "service": {
                "state_dir": "./state",
                "tick_interval": "1s",
                "log_level": "info",
                **(service or {}),
            },
            "plugins_dir": "./plugins",
            "plugins": dict(plugins or {}),
            "routes": [dict(r) for r in routes],
        }
        if endpoints is not None:
            config["webhooks"] = {"listen": "127.0.0.1:0", "endpoints": [dict(e) for e in endpoints]}
        if store is not None:
            config["store"] = dict(store)
        if api is not None:  # the operator API, on 127.0.0.1:0 unless told
            config["api"] = {"listen": "127.0.0.1:0", **api}
        self.config = config
        self.config_path.write_text(yaml.safe_dump(config, sort_keys=False))
        return config

    # ----------------------------------------------------------------- running things
    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("DUCTILE_")}
        env["TZ"] = "UTC"
        return env

    def start(self, *, wait: bool = True) -> Daemon:
        """Start the daemon; with ``wait``, return once it logged "ductile is running"."""
        n = len(self.daemons)
        stderr_path = self.root / f"daemon-{n}.stderr"
        with open(stderr_path, "wb") as stderr:
            proc = subprocess.Popen(
                [str(SCRIPT), "start", "--config", str(self.config_path)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=stderr,
                env=self.env(),
                cwd="/",
                text=True,
                encoding="utf-8",
                errors="replace",
            )
        daemon = Daemon(proc, stderr_path)
        self.daemons.append(daemon)
        if wait:
            daemon.wait_for_log(
                log_match("ductile is running", component="daemon"), START_TIMEOUT, "start-up"
            )
            listening = daemon.logs(log_match("listening", component="http", exact=True))
            for line in listening:
                port = int(str(line["address"]).rpartition(":")[2])
                if line.get("listener") == "api":
                    daemon.api_port = port
                else:
                    daemon.port = port
        return daemon

    def cli(self, *args: str, timeout: float = CLI_TIMEOUT) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(SCRIPT), *args, "--config", str(self.config_path)],
            capture_output=True,
            text=True,
            env=self.env(),
            cwd="/",
            timeout=timeout,
            check=False,
        )

    def cli_ok(self, *args: str) -> str:
        done = self.cli(*args)
        assert done.returncode == 0, f"ductile {' '.join(args)} exited {done.returncode}: {done.stderr}"
        return done.stdout

    def cli_json(self, *args: str) -> Any:
        return json.loads(self.cli_ok(*args, "--json"))

    def run_job(self, plugin: str) -> str:
        """``ductile run <plugin>``: the new job's id."""
        doc = self.cli_json("run", plugin)
        assert doc["created"], doc
        job_id: str = doc["job_id"]
        return job_id

    def job(self, job_id: str) -> dict[str, Any]:
        doc: dict[str, Any] = self.cli_json("job", job_id)
        return doc

    # ----------------------------------------------------------------- looking inside
    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """Read the database directly (read-only), as a second opinion to the CLI."""
        uri = f"file:{self.db_path}?mode=ro"
        with closing(sqlite3.connect(uri, uri=True, timeout=10.0)) as conn:
            return conn.execute(sql, params).fetchall()

    def out_lines(self, name: str) -> list[str]:
        path = self.out / name
        return path.read_text().splitlines() if path.exists() else []

    def runs(self, plugin: str) -> list[list[str]]:
        """The ``<job_id> <attempt> <pid>`` lines a recording plugin appended to ``out/<plugin>.runs``."""
        return [line.split() for line in self.out_lines(f"{plugin}.runs")]

    def release(self) -> None:
        self.release_file.touch()

    # ----------------------------------------------------------------- teardown
    def teardown(self) -> None:
        """Stop every daemon, then require that no plugin process survives (killing any that does)."""
        self.release()
        for daemon in self.daemons:
            daemon.shut()
        problems = [
            f"daemon {d.pid} wrote non-JSON lines on stdout: {d.garbage[:5]}"
            for d in self.daemons
            if d.garbage
        ]
        try:
            wait_until(lambda: not plugin_processes(self.root), 5.0, "the plugins' processes to end")
        except AssertionError:
            survivors = plugin_processes(self.root)
            for pid, _ in survivors:
                with suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            problems.append(f"plugin processes outlived the daemon (now killed): {survivors}")
        assert not problems, "\n".join(problems)


def requests_of(site: Site, name: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in site.out_lines(f"{name}.requests")]


def transitions(doc: Mapping[str, Any]) -> list[tuple[str | None, str, str, str]]:
    return [(t["from"], t["to"], t["actor"], t["reason"]) for t in doc["transitions"]]


def site_fixture(tmp_path: Path) -> Iterator[Site]:
    """Body of the ``site`` fixtures: a Site, torn down whatever the test did."""
    site = Site(tmp_path)
    try:
        yield site
    finally:
        site.teardown()
