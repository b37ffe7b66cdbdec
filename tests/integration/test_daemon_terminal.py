"""``ductile start`` on a terminal prints lines for a person; ``--log-format json`` keeps JSON."""

from __future__ import annotations

import json
import os
import pty
import select
import signal
import subprocess
import time

import pytest

from tests.support.plugins import recorder
from tests.support.site import SCRIPT, START_TIMEOUT, STOP_TIMEOUT, Site


def _start_on_a_terminal(site: Site, *extra: str) -> tuple[subprocess.Popen[bytes], int]:
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [str(SCRIPT), "start", "--config", str(site.config_path), *extra],
        stdin=subprocess.DEVNULL,
        stdout=slave,
        stderr=slave,
        env=site.env(),
        cwd="/",
    )
    os.close(slave)
    return proc, master


def _read_until(master: int, needle: str, timeout: float) -> str:
    seen = b""
    deadline = time.monotonic() + timeout
    while needle.encode() not in seen:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"no {needle!r} within {timeout:g}s; the terminal showed:\n{seen.decode()}")
        ready, _, _ = select.select([master], [], [], left)
        if ready:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # the daemon exited: the terminal is gone
                chunk = b""
            if not chunk:
                raise AssertionError(f"the daemon's terminal closed; it showed:\n{seen.decode()}")
            seen += chunk
    return seen.decode("utf-8", "replace")


def _stop(proc: subprocess.Popen[bytes], master: int) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(STOP_TIMEOUT)
    os.close(master)


@pytest.mark.parametrize("flag", [(), ("--log-format", "text")], ids=["auto", "text"])
def test_on_a_terminal_the_daemon_prints_lines_for_a_person(site: Site, flag: tuple[str, ...]) -> None:
    site.plugin("hello", recorder(site, "hello", before="echo 'said hello' >&2"), commands=["poll"])
    site.write_config({"hello": {"schedule": {"every": "1h", "catch_up": "run_once"}}})
    proc, master = _start_on_a_terminal(site, *flag)
    try:
        shown = _read_until(master, "said hello", START_TIMEOUT)
        running = next(line for line in shown.splitlines() if "ductile is running" in line)
        assert " INFO  daemon  ductile is running" in running
        with pytest.raises(ValueError):
            json.loads(running)
        stderr_line = next(line for line in shown.splitlines() if "said hello" in line)
        assert " INFO  plugin hello  said hello" in stderr_line, "a successful run's stderr is at info"
    finally:
        _stop(proc, master)


def test_log_format_json_keeps_json_lines_on_a_terminal(site: Site) -> None:
    site.write_config()
    proc, master = _start_on_a_terminal(site, "--log-format", "json")
    try:
        shown = _read_until(master, "ductile is running", START_TIMEOUT)
        line = next(line for line in shown.splitlines() if "ductile is running" in line)
        assert json.loads(line)["component"] == "daemon"
    finally:
        _stop(proc, master)
