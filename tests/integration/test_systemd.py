"""systemd's notify protocol end to end: a fake ``NOTIFY_SOCKET`` and the real daemon.

The fake systemd is an ``AF_UNIX`` datagram socket (a path in ``tmp_path``, or
an ``@abstract`` name) read by a thread that timestamps every datagram on
CLOCK_MONOTONIC, the clock ``MONOTONIC_USEC`` is read from. The daemon is
``ductile start`` in a subprocess with ``NOTIFY_SOCKET`` and
``WATCHDOG_USEC=500000`` (pings every 0.25 s). The liveness rules of the
watchdog (a blocked event loop, a dead loop, a store that does not answer) are
checked in process, on fakes, with the same receiver.

Every wait is a bounded wait on a condition (a datagram, a log line, an exit).
The few absence checks ("no ping while...") watch a window several ping
intervals long, which is what the property is about.
"""

from __future__ import annotations

import asyncio
import configparser
import contextlib
import itertools
import json
import logging
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import attrs
import httpx
import pytest

from ductile.app.bootstrap import Ductile
from ductile.fakes import InMemoryStore, ScriptedSpawner
from tests.support.site import SCRIPT

REPO = Path(__file__).resolve().parents[2]
UNIT_FILE = REPO / "examples" / "systemd" / "ductile.service"

PLUGIN = """#!/bin/sh
cat >/dev/null
echo '{"status": "ok"}'
"""
CONFIG = """\
service:
  state_dir: ./state
  tick_interval: 1s
plugins_dir: ./plugins
plugins:
  echo: {}   # no schedule: nothing is queued at start, so STATUS reads 0 queued
webhooks:
  listen: 127.0.0.1:0
  endpoints:
    - {path: /hook/echo, plugin: echo, secret: test-secret}
"""
WATCHDOG_USEC = 500_000
PING = WATCHDOG_USEC / 2 / 1_000_000


def now_usec() -> int:
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000


@attrs.frozen
class Datagram:
    at: float  # time.monotonic() when received
    fields: dict[str, str]
    raw: str

    def has(self, key: str, value: str | None = None) -> bool:
        return key in self.fields and (value is None or self.fields[key] == value)


class FakeSystemd:
    """The receiving end of ``NOTIFY_SOCKET``; a thread collects every datagram."""

    def __init__(self, bind_to: str | bytes, env_value: str) -> None:
        self.env_value = env_value
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(bind_to)
        self.sock.settimeout(0.05)
        self.received: list[Datagram] = []
        self._changed = threading.Condition()
        self._closing = False
        self._thread = threading.Thread(target=self._collect, name="fake-systemd", daemon=True)
        self._thread.start()

    @classmethod
    def at_path(cls, path: Path) -> FakeSystemd:
        assert len(os.fsencode(path)) < 100, f"{path} is too long for an AF_UNIX address"
        return cls(str(path), str(path))

    @classmethod
    def abstract(cls) -> FakeSystemd:
        name = f"ductile-test-{uuid.uuid4().hex}"
        return cls(b"\0" + name.encode(), "@" + name)

    def _collect(self) -> None:
        while not self._closing:
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            text = data.decode("utf-8")
            fields = dict(line.split("=", 1) for line in text.split("\n") if "=" in line)
            with self._changed:
                self.received.append(Datagram(time.monotonic(), fields, text))
                self._changed.notify_all()

    def close(self) -> None:
        self._closing = True
        self._thread.join(timeout=5)
        self.sock.close()

    def snapshot(self) -> list[Datagram]:
        with self._changed:
            return list(self.received)

    def wait_for(
        self, what: str, predicate: Callable[[Datagram], bool], *, after: int = 0, timeout: float = 15.0
    ) -> tuple[int, Datagram]:
        """The first datagram at index >= ``after`` matching ``predicate``; (index, datagram)."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for index in range(after, len(self.received)):
                    if predicate(self.received[index]):
                        return index, self.received[index]
                left = deadline - time.monotonic()
                if left <= 0:
                    seen = [d.raw for d in self.received[after:]][-20:]
                    raise AssertionError(f"no {what} within {timeout:g} s; last datagrams: {seen}")
                self._changed.wait(left)

    def wait_count(self, what: str, predicate: Callable[[Datagram], bool], count: int, *, after: int = 0,
                   timeout: float = 15.0) -> list[Datagram]:  # fmt: skip
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                found = [d for d in self.received[after:] if predicate(d)]
                if len(found) >= count:
                    return found
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"{len(found)} {what} within {timeout:g} s, wanted {count}")
                self._changed.wait(left)


def is_ping(d: Datagram) -> bool:
    return d.has("WATCHDOG", "1")


def is_ready(d: Datagram) -> bool:
    return d.has("READY", "1")


def gaps(datagrams: list[Datagram]) -> list[float]:
    return [b.at - a.at for a, b in itertools.pairwise(datagrams)]


@pytest.fixture
def fake_systemd(tmp_path: Path) -> Iterator[FakeSystemd]:
    receiver = FakeSystemd.at_path(tmp_path / "notify.sock")
    yield receiver
    receiver.close()


@pytest.fixture
def abstract_systemd() -> Iterator[FakeSystemd]:
    receiver = FakeSystemd.abstract()
    yield receiver
    receiver.close()


# =========================================================================== the real daemon


class Daemon:
    """``ductile start`` in a subprocess, its JSON log lines in a file."""

    def __init__(self, root: Path, systemd: FakeSystemd) -> None:
        self.root = root
        self.config = root / "ductile.yaml"
        self.log_path = root / "daemon.log"
        plugins = root / "plugins"
        for folder in (plugins, plugins / "echo"):
            folder.mkdir(mode=0o755)
            folder.chmod(0o755)
        (plugins / "echo" / "manifest.yaml").write_text(
            "name: echo\nversion: 1.0.0\nprotocol: 1\nentrypoint: run.sh\ncommands: [poll, handle]\n"
        )
        (plugins / "echo" / "run.sh").write_text(PLUGIN)
        (plugins / "echo" / "run.sh").chmod(0o755)
        self.config.write_text(CONFIG)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("DUCTILE_", "WATCHDOG_", "NOTIFY_"))}
        env.update(TZ="UTC", NOTIFY_SOCKET=systemd.env_value, WATCHDOG_USEC=str(WATCHDOG_USEC))
        self.env = env
        with self.log_path.open("wb") as out:
            self.proc = subprocess.Popen(
                [str(SCRIPT), "start", "--config", str(self.config)],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=root,
            )

    def logs(self) -> list[dict[str, Any]]:
        lines = self.log_path.read_text().splitlines()
        return [json.loads(line) for line in lines if line.startswith("{")]

    def logged(self, message_part: str) -> bool:
        return any(message_part in line.get("message", "") for line in self.logs())

    def address(self) -> str:
        for line in self.logs():
            if line.get("message") == "listening":
                return str(line["address"])
        raise AssertionError(f"no 'listening' line in the daemon's log:\n{self.log_path.read_text()}")

    def reload_cli(self) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(SCRIPT), "reload", "--config", str(self.config)],
            capture_output=True,
            text=True,
            env=self.env,
            timeout=30,
            check=False,
        )

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=20)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


@pytest.fixture
def daemon_factory(tmp_path: Path) -> Iterator[Callable[[FakeSystemd], Daemon]]:
    if not SCRIPT.exists():
        pytest.skip(f"the console script is not installed next to {sys.executable}")
    started: list[Daemon] = []

    def start(systemd: FakeSystemd) -> Daemon:
        daemon = Daemon(tmp_path, systemd)
        started.append(daemon)
        return daemon

    yield start
    for daemon in started:
        daemon.kill()


def test_the_daemon_speaks_sd_notify_ready_watchdog_status_reload_stopping(
    fake_systemd: FakeSystemd, daemon_factory: Callable[[FakeSystemd], Daemon]
) -> None:
    daemon = daemon_factory(fake_systemd)

    # READY=1 comes first, and only once the listener accepts connections.
    index, _ = fake_systemd.wait_for("READY=1", is_ready, timeout=30)
    assert index == 0, f"something was sent before READY=1: {fake_systemd.snapshot()[:index]}"
    answer = httpx.get(f"http://{daemon.address()}/healthz", timeout=5)
    assert answer.status_code == 200
    assert answer.json()["plugins_loaded"] == 1

    # STATUS= right after: queue depth and plugins loaded.
    _, status = fake_systemd.wait_for("STATUS=", lambda d: d.has("STATUS"), timeout=10)
    assert status.fields["STATUS"] == "0 queued, 1 plugin loaded", status.raw

    # WATCHDOG=1 every half WATCHDOG_USEC.
    pings = fake_systemd.wait_count("WATCHDOG=1 pings", is_ping, 8, timeout=15)
    between = gaps(pings)
    assert 0.8 * PING <= statistics.median(between) <= 1.6 * PING, between
    assert max(between) < WATCHDOG_USEC / 1e6, f"a ping came later than the watchdog timeout: {between}"

    # `ductile reload`: RELOADING=1 with MONOTONIC_USEC in the same datagram, then READY=1.
    (daemon.root / "plugins" / "echo" / "run.sh").touch()
    mark = len(fake_systemd.snapshot())
    before = now_usec()
    done = daemon.reload_cli()
    assert done.returncode == 0, done.stderr
    index, reloading = fake_systemd.wait_for("RELOADING=1", lambda d: d.has("RELOADING", "1"), after=mark)
    after = now_usec()
    assert set(reloading.fields) == {"RELOADING", "MONOTONIC_USEC"}, reloading.raw
    stamp = int(reloading.fields["MONOTONIC_USEC"])
    assert before <= stamp <= after, (before, stamp, after)
    index, _ = fake_systemd.wait_for("READY=1 after the reload", is_ready, after=index + 1)
    assert daemon.logged("configuration reloaded"), "READY=1 came before the reload had finished"

    # A refused reload (broken config) ends with READY=1 too: the old config stays in force.
    daemon.config.write_text("service: [this is not a mapping\n")
    mark = len(fake_systemd.snapshot())
    daemon.proc.send_signal(signal.SIGHUP)
    index, _ = fake_systemd.wait_for("RELOADING=1", lambda d: d.has("RELOADING", "1"), after=mark)
    fake_systemd.wait_for("READY=1 after the refused reload", is_ready, after=index + 1)
    assert daemon.logged("reload refused")
    fake_systemd.wait_for("a ping after the reloads", is_ping, after=index + 1)

    # SIGTERM: STOPPING=1, then a clean exit.
    mark = len(fake_systemd.snapshot())
    daemon.proc.send_signal(signal.SIGTERM)
    fake_systemd.wait_for("STOPPING=1", lambda d: d.has("STOPPING", "1"), after=mark)
    assert daemon.proc.wait(timeout=20) == 0
    later = fake_systemd.snapshot()[mark:]
    assert not any(is_ready(d) for d in later), "READY=1 after STOPPING=1"


def test_an_abstract_notify_socket_works_too(
    abstract_systemd: FakeSystemd, daemon_factory: Callable[[FakeSystemd], Daemon]
) -> None:
    assert abstract_systemd.env_value.startswith("@")
    daemon = daemon_factory(abstract_systemd)
    abstract_systemd.wait_for("READY=1", is_ready, timeout=30)
    abstract_systemd.wait_count("WATCHDOG=1 pings", is_ping, 2)
    mark = len(abstract_systemd.snapshot())
    assert daemon.stop() == 0
    abstract_systemd.wait_for("STOPPING=1", lambda d: d.has("STOPPING", "1"), after=mark, timeout=5)


# =========================================================================== liveness, in process

FAST_USEC = 100_000  # pings every 0.05 s
FAST_PING = FAST_USEC / 2 / 1_000_000


def write_config(root: Path) -> Path:
    (root / "plugins").mkdir(mode=0o755, exist_ok=True)
    config = root / "ductile.yaml"
    config.write_text("service:\n  state_dir: ./state\n  tick_interval: 1s\nplugins_dir: ./plugins\n")
    return config


def notify_env(systemd: FakeSystemd | None, **extra: str) -> dict[str, str]:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "TZ": "UTC", **extra}
    if systemd is not None:
        env.update(NOTIFY_SOCKET=systemd.env_value, WATCHDOG_USEC=str(FAST_USEC))
    return env


async def serving(d: Ductile, body: Callable[[], Any], *, notify_systemd: bool = True) -> None:
    """Serve ``d`` in a task, run ``body()`` (a coroutine function) once it is ready, then stop."""
    ready = asyncio.Event()
    server = asyncio.create_task(d.serve(on_ready=ready.set, notify_systemd=notify_systemd))
    try:
        await asyncio.wait_for(ready.wait(), 10)
        await body()
    finally:
        d.stop()
        await asyncio.wait_for(server, 10)


async def wait_in_thread(fn: Callable[[], Any]) -> Any:
    return await asyncio.get_running_loop().run_in_executor(None, fn)


def test_a_blocked_event_loop_sends_no_pings(tmp_path: Path, fake_systemd: FakeSystemd) -> None:
    blocked = 0.5

    async def scenario() -> None:
        async with Ductile(
            write_config(tmp_path), store=InMemoryStore(), spawner=ScriptedSpawner(),
            environ=notify_env(fake_systemd), listen=False,
        ) as d:  # fmt: skip

            async def body() -> None:
                await wait_in_thread(lambda: fake_systemd.wait_count("pings", is_ping, 3))
                time.sleep(blocked)  # the whole event loop stands still  # noqa: ASYNC251
                mark = len(fake_systemd.snapshot())
                await wait_in_thread(lambda: fake_systemd.wait_count("pings", is_ping, 3, after=mark))

            await serving(d, body)

    asyncio.run(scenario())
    pings = [d for d in fake_systemd.snapshot() if is_ping(d)]
    longest = max(gaps(pings))
    assert longest >= blocked * 0.9, f"pings went on while the loop was blocked: {gaps(pings)}"
    assert sorted(gaps(pings))[len(pings) // 2] < blocked / 2


class Died(BaseException):
    """Not an Exception: the scheduler loop does not catch it, so the loop task ends."""


class LogWatch(logging.Handler):
    """Sets an event when a ductile log message contains ``text``."""

    def __init__(self, text: str) -> None:
        super().__init__(logging.DEBUG)
        self.text = text
        self.seen = threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if self.text in record.getMessage():
            self.seen.set()

    def __enter__(self) -> LogWatch:
        logging.getLogger("ductile").addHandler(self)
        return self

    def __exit__(self, *exc: object) -> None:
        logging.getLogger("ductile").removeHandler(self)


def test_a_dead_scheduler_loop_stops_the_pings(
    tmp_path: Path, fake_systemd: FakeSystemd, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="ductile")
    kill_switch = threading.Event()
    noticed = LogWatch("withholding systemd watchdog pings: the scheduler loop has ended")

    async def scenario() -> None:
        async with Ductile(
            write_config(tmp_path), store=InMemoryStore(), spawner=ScriptedSpawner(),
            environ=notify_env(fake_systemd), listen=False,
        ) as d:  # fmt: skip
            real_tick = d.engine.tick

            async def tick() -> Any:
                if kill_switch.is_set():
                    raise Died
                return await real_tick()

            d.engine.tick = tick  # type: ignore[method-assign]

            async def body() -> None:
                await wait_in_thread(lambda: fake_systemd.wait_count("pings", is_ping, 2))
                kill_switch.set()  # the scheduler ticks within tick_interval (1 s)
                assert await wait_in_thread(lambda: noticed.seen.wait(5)), "the dead loop was not noticed"
                mark = len(fake_systemd.snapshot())
                await asyncio.sleep(8 * FAST_PING)
                late = [x for x in fake_systemd.snapshot()[mark:] if is_ping(x)]
                assert late == [], f"{len(late)} pings after the scheduler loop died"

            await serving(d, body)

    with noticed:
        asyncio.run(scenario())


class StuckStore(InMemoryStore):
    """queue_depth hangs while ``stuck`` is set (a wedged database thread)."""

    def __init__(self) -> None:
        super().__init__()
        self.stuck = False
        self.released = asyncio.Event()

    async def queue_depth(self) -> int:
        if self.stuck:
            await self.released.wait()
        return await super().queue_depth()


def test_a_store_that_does_not_answer_stops_the_pings_until_it_does(
    tmp_path: Path, fake_systemd: FakeSystemd, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="ductile")
    store = StuckStore()

    async def scenario() -> None:
        async with Ductile(
            write_config(tmp_path), store=store, spawner=ScriptedSpawner(),
            environ=notify_env(fake_systemd), listen=False,
        ) as d:  # fmt: skip

            async def body() -> None:
                await wait_in_thread(lambda: fake_systemd.wait_count("pings", is_ping, 2))
                store.stuck = True
                mark = len(fake_systemd.snapshot())
                await asyncio.sleep(10 * FAST_PING)
                # at most the one ping of a round that read before the store got stuck
                late = [x for x in fake_systemd.snapshot()[mark:] if is_ping(x)]
                assert len(late) <= 1, f"{len(late)} pings while the store did not answer"
                assert any("the store did not answer a read" in r.message for r in caplog.records)
                store.stuck = False
                store.released.set()
                mark = len(fake_systemd.snapshot())
                await wait_in_thread(lambda: fake_systemd.wait_count("pings", is_ping, 2, after=mark))
                assert any("pings resume" in r.message for r in caplog.records)

            await serving(d, body)

    asyncio.run(scenario())


@pytest.mark.parametrize("how", ["no NOTIFY_SOCKET in environ", "notify_systemd=False"])
def test_embedding_sends_nothing_unless_asked(
    tmp_path: Path, fake_systemd: FakeSystemd, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    # The process environment points at the socket; only the environ given to Ductile counts.
    monkeypatch.setenv("NOTIFY_SOCKET", fake_systemd.env_value)
    environ = notify_env(None) if how.startswith("no ") else notify_env(fake_systemd)

    async def scenario() -> None:
        async with Ductile(
            write_config(tmp_path), store=InMemoryStore(), spawner=ScriptedSpawner(),
            environ=environ, listen=False,
        ) as d:  # fmt: skip

            async def body() -> None:
                await d.reload()

            await serving(d, body, notify_systemd=how.startswith("no "))

    asyncio.run(scenario())
    # READY=1 would have been sent before on_ready and STOPPING=1 inside stop(): both are
    # in the socket's queue by now if they were sent at all. Give the reader a moment.
    with contextlib.suppress(AssertionError):
        fake_systemd.wait_for("anything", lambda _: True, timeout=0.3)
    assert fake_systemd.snapshot() == []


def test_the_cli_daemon_sends_nothing_without_notify_socket(tmp_path: Path) -> None:
    """Outside systemd the real daemon runs as before (no socket, no error, no warning)."""
    if not SCRIPT.exists():
        pytest.skip(f"the console script is not installed next to {sys.executable}")
    config = write_config(tmp_path)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DUCTILE_", "WATCHDOG_", "NOTIFY_"))}
    env["WATCHDOG_USEC"] = "100000"  # without NOTIFY_SOCKET a watchdog means nothing
    proc = subprocess.Popen(
        [str(SCRIPT), "start", "--config", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
        text=True,
    )
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 30
        for line in proc.stdout:
            if "ductile is running" in line or time.monotonic() > deadline:
                break
        proc.send_signal(signal.SIGTERM)
        rest, _ = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0
    assert "systemd" not in rest, rest


# =========================================================================== the unit file


def unit() -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None, delimiters=("=",))
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # keys are case-sensitive
    parser.read_string(UNIT_FILE.read_text())
    return parser


def test_the_example_unit_has_the_essential_settings() -> None:
    service = unit()["Service"]
    # Type=notify-reload needs systemd 253; Debian 12 has 252 (issue 12): notify + ExecReload
    # works on both, and the reload checks the config before it signals.
    assert service["Type"] == "notify"
    assert service["ExecReload"].split()[1:] == ["reload", "--config", "/etc/ductile/ductile.yaml"]
    assert service["ExecReload"].split()[0] == service["ExecStart"].split()[0]
    assert service["WatchdogSec"] == "30"
    # The whole control group is killed (SIGKILL at the latest), so plugins that escaped their
    # process group with setsid() cannot outlive the service. See the unit file for mixed.
    assert service["KillMode"] in ("mixed", "control-group")
    assert service["Restart"] == "on-failure"
    assert service["NoNewPrivileges"] == "yes"
    assert service["ProtectSystem"] == "strict"
    assert service["StateDirectory"] == "ductile"
    assert service["ConfigurationDirectory"] == "ductile"
    assert service["RestrictAddressFamilies"].split() == ["AF_UNIX", "AF_INET", "AF_INET6"]
    exec_start = service["ExecStart"].split()
    assert exec_start[0].startswith("/"), "ExecStart needs an absolute path"
    assert exec_start[0].endswith("/bin/ductile")
    assert exec_start[1:] == ["start", "--config", "/etc/ductile/ductile.yaml"]
    assert unit()["Install"]["WantedBy"] == "multi-user.target"


def test_the_example_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    # verify insists that ExecStart's program exists: point it at a stand-in.
    stand_in = tmp_path / "ductile"
    stand_in.write_text("#!/bin/sh\nexit 0\n")
    stand_in.chmod(0o755)
    text = UNIT_FILE.read_text().replace("/opt/ductile/venv/bin/ductile", str(stand_in))
    copy = tmp_path / "ductile.service"
    copy.write_text(text)
    done = subprocess.run(
        [analyze, "verify", "--man=no", str(copy)], capture_output=True, text=True, timeout=60, check=False
    )
    output = (done.stdout + done.stderr).splitlines()
    # Every systemd from Debian 12's 252 on must take the unit as it is: no line about it at all.
    problems = [line for line in output if str(copy) in line]
    assert done.returncode == 0, "\n".join(output)
    assert problems == [], "\n".join(output)
