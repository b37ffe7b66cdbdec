"""The sd_notify sender: silent without NOTIFY_SOCKET, never raising, never blocking."""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ductile.adapters import systemd
from ductile.adapters.systemd import STATUS_MAX, Notifier, one_line, socket_address, watchdog_interval

PID = 4242


class Receiver:
    def __init__(self, bind_to: str | bytes) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(bind_to)
        self.sock.settimeout(2.0)

    def next(self) -> str:
        return self.sock.recv(65536).decode("utf-8")

    def pending(self) -> list[str]:
        """Whatever is queued now, without waiting."""
        found = []
        self.sock.setblocking(False)
        try:
            while True:
                found.append(self.sock.recv(65536).decode("utf-8"))
        except BlockingIOError:
            return found
        finally:
            self.sock.settimeout(2.0)


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[tuple[Receiver, str]]:
    path = tmp_path / "notify"
    r = Receiver(str(path))
    yield r, str(path)
    r.sock.close()


# =========================================================================== no socket


def test_without_notify_socket_nothing_is_opened_or_sent(monkeypatch: pytest.MonkeyPatch) -> None:
    opened: list[object] = []
    monkeypatch.setattr(systemd.socket, "socket", lambda *a, **k: opened.append(a))
    n = Notifier({"WATCHDOG_USEC": "30000000"}, pid=PID)
    assert not n.enabled
    assert n.watchdog_interval() is None  # a watchdog with nowhere to ping is no watchdog
    assert [n.ready(), n.status("x"), n.watchdog(), n.reloading(), n.stopping()] == [False] * 5
    assert opened == []


@pytest.mark.parametrize("value", ["vsock:2:1234", "relative/notify", "@", "notify"])
def test_an_unsupported_notify_socket_is_logged_once_and_ignored(
    value: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="ductile")
    n = Notifier({"NOTIFY_SOCKET": value}, pid=PID)
    assert not n.enabled
    assert not n.ready()
    assert not n.watchdog()
    [record] = caplog.records
    assert value in record.getMessage()
    assert "not notifying systemd" in record.getMessage()


# =========================================================================== sending


def test_every_message_reaches_a_path_socket(receiver: tuple[Receiver, str]) -> None:
    r, path = receiver
    n = Notifier({"NOTIFY_SOCKET": path}, pid=PID, monotonic=lambda: 123_456_789)
    assert n.enabled
    assert n.ready()
    assert r.next() == "READY=1"
    assert n.status("3 queued,\n2 plugins\tloaded")
    assert r.next() == "STATUS=3 queued, 2 plugins loaded"
    assert n.watchdog()
    assert r.next() == "WATCHDOG=1"
    assert n.reloading()
    assert r.next() == "RELOADING=1\nMONOTONIC_USEC=123456789"  # one datagram, as systemd requires
    assert n.stopping()
    assert r.next() == "STOPPING=1"
    assert r.pending() == []


def test_an_abstract_socket_is_reached_through_the_at_sign() -> None:
    name = f"ductile-unit-{uuid.uuid4().hex}"
    r = Receiver(b"\0" + name.encode())
    try:
        n = Notifier({"NOTIFY_SOCKET": "@" + name}, pid=PID)
        assert n.ready()
        assert r.next() == "READY=1"
    finally:
        r.sock.close()


def test_the_default_monotonic_stamp_is_clock_monotonic_in_microseconds(
    receiver: tuple[Receiver, str],
) -> None:
    r, path = receiver
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert Notifier({"NOTIFY_SOCKET": path}, pid=PID).reloading()
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    reloading, stamp = r.next().split("\n")
    assert reloading == "RELOADING=1"
    assert before <= int(stamp.removeprefix("MONOTONIC_USEC=")) <= after


def test_a_failed_send_is_swallowed_and_logged_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="ductile")
    missing = str(tmp_path / "no-such-socket")
    n = Notifier({"NOTIFY_SOCKET": missing}, pid=PID)
    assert n.enabled
    assert [n.ready(), n.watchdog(), n.status("s"), n.reloading(), n.stopping()] == [False] * 5
    [record] = caplog.records
    assert missing in record.getMessage()
    assert "carrying on" in record.getMessage()


def test_a_failure_of_any_kind_never_escapes(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*_: object, **__: object) -> socket.socket:
        raise RuntimeError("no sockets today")

    monkeypatch.setattr(systemd.socket, "socket", broken)
    assert not Notifier({"NOTIFY_SOCKET": "/run/x"}, pid=PID).watchdog()


def test_a_full_socket_buffer_drops_the_message_instead_of_blocking(receiver: tuple[Receiver, str]) -> None:
    r, path = receiver
    n = Notifier({"NOTIFY_SOCKET": path}, pid=PID)
    started = time.monotonic()
    results = []
    for _ in range(5000):  # nobody reads: the receiver's queue fills up after a few datagrams
        results.append(n.status("x" * 400))
        if not results[-1]:
            break
    assert results[-1] is False, "5000 datagrams fitted into an unread socket?"
    assert time.monotonic() - started < 5
    assert r.pending(), "the first messages were delivered"


# =========================================================================== watchdog interval


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"WATCHDOG_USEC": "30000000"}, 15.0),
        ({"WATCHDOG_USEC": "500000"}, 0.25),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(PID)}, 15.0),
        ({"WATCHDOG_USEC": " 1000 "}, 0.0005),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(PID + 1)}, None),  # someone else's
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "not-a-pid"}, None),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": ""}, None),
        ({}, None),
        ({"WATCHDOG_USEC": ""}, None),
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "-5"}, None),
        ({"WATCHDOG_USEC": "30s"}, None),
        ({"WATCHDOG_USEC": "1e6"}, None),
        ({"WATCHDOG_USEC": "٣٠"}, None),  # Arabic-Indic digits are digits to str.isdigit
    ],
)
def test_watchdog_interval(env: dict[str, str], expected: float | None) -> None:
    assert watchdog_interval(env, PID) == expected


def test_the_notifier_uses_its_own_pid_by_default() -> None:
    env = {"NOTIFY_SOCKET": "/run/x", "WATCHDOG_USEC": "2000000", "WATCHDOG_PID": str(os.getpid())}
    assert Notifier(env).watchdog_interval() == 1.0
    env["WATCHDOG_PID"] = str(os.getpid() + 1)
    assert Notifier(env).watchdog_interval() is None


@given(st.integers(min_value=1, max_value=2**63))
def test_the_interval_is_half_the_timeout(usec: int) -> None:
    interval = watchdog_interval({"WATCHDOG_USEC": str(usec)}, PID)
    assert interval == usec / 2 / 1_000_000


@given(st.dictionaries(st.sampled_from(["WATCHDOG_USEC", "WATCHDOG_PID", "OTHER"]), st.text()))
def test_any_environment_gives_none_or_a_positive_interval(env: dict[str, str]) -> None:
    interval = watchdog_interval(env, PID)
    assert interval is None or interval > 0


# =========================================================================== pure helpers


@given(st.text())
def test_status_text_is_one_bounded_line(text: str) -> None:
    line = one_line(text)
    assert "\n" not in line
    assert "\r" not in line
    assert len(line.encode("utf-8")) <= STATUS_MAX
    if len(text.encode("utf-8", "replace")) <= STATUS_MAX and text == " ".join(text.split()):
        assert line == text  # plain short text passes unchanged


@given(st.text())
def test_socket_address(value: str) -> None:
    address = socket_address(value)
    if value.startswith("/"):
        assert address == os.fsencode(value)
    elif value.startswith("@") and len(value) > 1:
        assert address == b"\0" + os.fsencode(value[1:])
    else:
        assert address is None


@given(
    socket_value=st.one_of(
        st.text().filter(lambda t: not t.startswith(("/", "@"))),
        st.text(min_size=1).map(lambda t: f"/nonexistent-ductile-test/{t}"),
        st.text(min_size=1).map(lambda t: f"@ductile-test-nobody-{t}"),
    ),
    status=st.text(),
    usec=st.text(),
)
def test_the_notifier_never_raises(socket_value: str, status: str, usec: str) -> None:
    logging.getLogger("ductile.systemd").disabled = True
    try:
        n = Notifier({"NOTIFY_SOCKET": socket_value, "WATCHDOG_USEC": usec}, pid=PID)
        for sent in (n.ready(), n.status(status), n.watchdog(), n.reloading(), n.stopping()):
            assert sent in (True, False)
        n.watchdog_interval()
    finally:
        logging.getLogger("ductile.systemd").disabled = False
