"""systemd's readiness protocol (``sd_notify(3)``), written by hand: no libsystemd.

A service started by systemd with ``Type=notify`` / ``Type=notify-reload``
finds the path of systemd's notification socket in ``$NOTIFY_SOCKET`` and
sends it datagrams of newline-separated ``KEY=VALUE`` assignments:
``READY=1``, ``STATUS=...``, ``WATCHDOG=1``, ``RELOADING=1`` (with
``MONOTONIC_USEC=``), ``STOPPING=1``.

:class:`Notifier` is that sender, with three promises:

* **a no-op without** ``NOTIFY_SOCKET`` (the usual case outside systemd, and
  for an embedding application): nothing is opened, nothing is sent;
* **never raises into the daemon**: a failed send (systemd gone, a full socket
  buffer, a path too long) is logged once, at WARNING, and then the notifier
  carries on quietly — being unable to talk to the supervisor must not stop
  the work;
* **never blocks the event loop**: the socket is non-blocking; a datagram that
  cannot be queued at once is dropped (and counted as a failed send).

``NOTIFY_SOCKET`` is an absolute filesystem path, or ``@name`` for a socket in
the abstract namespace (the ``@`` stands for a leading NUL byte). Other forms
(``vsock:`` of systemd ≥ 254, relative paths) are not supported: they are
logged once and the notifier stays silent.

The environment is a parameter, so tests (and an embedder that wants to keep
ductile quiet) decide what the notifier sees. Plugins never inherit
``NOTIFY_SOCKET``: their environment is an allow-list (see
``ductile.app.spawn.plugin_env``), so no plugin can pose as the service.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable, Mapping

from ductile.log import Log

log = Log("systemd", logger=logging.getLogger("ductile.systemd"))

#: Most bytes of ``STATUS=`` text sent; systemd shows one line in ``systemctl status``.
STATUS_MAX = 512


def monotonic_usec() -> int:
    """CLOCK_MONOTONIC in microseconds: the clock systemd compares ``MONOTONIC_USEC`` with."""
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000


def socket_address(value: str) -> bytes | None:
    """The ``sendto`` address of a ``NOTIFY_SOCKET`` value, or None when unsupported.

    ``/run/systemd/notify`` -> its bytes; ``@name`` -> ``b"\\0name"`` (abstract
    namespace); anything else (empty, relative, ``vsock:...``) -> None.
    """
    if value.startswith("@") and len(value) > 1:
        return b"\0" + os.fsencode(value[1:])
    if value.startswith("/"):
        return os.fsencode(value)
    return None


def watchdog_interval(environ: Mapping[str, str], pid: int) -> float | None:
    """Seconds between ``WATCHDOG=1`` pings: half of ``$WATCHDOG_USEC``.

    None when there is no watchdog for this process: ``WATCHDOG_USEC`` unset,
    not a positive integer, or ``WATCHDOG_PID`` set to another process's pid
    (or to something that is not a pid). Half the timeout is what
    ``sd_watchdog_enabled(3)`` recommends: one ping may be late without the
    service being killed.
    """
    usec_text = environ.get("WATCHDOG_USEC", "").strip()
    if not (usec_text.isascii() and usec_text.isdigit()):
        return None
    usec = int(usec_text)
    if usec <= 0:
        return None
    pid_text = environ.get("WATCHDOG_PID")
    if pid_text is not None:
        pid_text = pid_text.strip()
        if not (pid_text.isascii() and pid_text.isdigit()) or int(pid_text) != pid:
            return None
    return usec / 2 / 1_000_000


def one_line(text: str) -> str:
    """``STATUS=`` text: newlines would start new assignments, so they become spaces."""
    flat = " ".join(text.split())
    encoded = flat.encode("utf-8", "replace")
    if len(encoded) <= STATUS_MAX:
        return flat
    return encoded[: STATUS_MAX - 3].decode("utf-8", "ignore") + "..."


class Notifier:
    """Sends ``sd_notify`` datagrams to ``$NOTIFY_SOCKET``; silent when it is unset."""

    def __init__(
        self,
        environ: Mapping[str, str],
        *,
        pid: int | None = None,
        monotonic: Callable[[], int] = monotonic_usec,
    ) -> None:
        self._pid = os.getpid() if pid is None else pid
        self._monotonic = monotonic
        self._watchdog = watchdog_interval(environ, self._pid)
        self._failed_once = False
        raw = environ.get("NOTIFY_SOCKET", "")
        self._where = raw
        self._address = socket_address(raw) if raw else None
        if raw and self._address is None:
            log.warning(
                f"NOTIFY_SOCKET={raw!r} is not a path or an @abstract socket name; "
                "not notifying systemd (only those two forms are supported)"
            )

    @property
    def enabled(self) -> bool:
        """True when there is a socket to talk to."""
        return self._address is not None

    def watchdog_interval(self) -> float | None:
        """Seconds between watchdog pings (half of ``WATCHDOG_USEC``), or None: no watchdog.

        Always None when notifications are off: a ping with nowhere to go is no ping.
        """
        return self._watchdog if self.enabled else None

    # ------------------------------------------------------------------ messages
    def ready(self) -> bool:
        """Start-up (or a reload) is complete."""
        return self.send("READY=1")

    def status(self, text: str) -> bool:
        """A one-line summary, shown by ``systemctl status``."""
        return self.send(f"STATUS={one_line(text)}")

    def watchdog(self) -> bool:
        """Proof of life, due every :meth:`watchdog_interval` seconds."""
        return self.send("WATCHDOG=1")

    def reloading(self) -> bool:
        """A reload began. ``MONOTONIC_USEC`` goes in the same datagram: ``Type=notify-reload``
        uses it to match this message with the reload it asked for."""
        return self.send("RELOADING=1", f"MONOTONIC_USEC={self._monotonic()}")

    def stopping(self) -> bool:
        """Shutdown began."""
        return self.send("STOPPING=1")

    def send(self, *assignments: str) -> bool:
        """Send ``assignments`` as one datagram; True when it was handed to the kernel.

        Never raises: a failure is logged (the first one only) and reported as False.
        """
        if self._address is None:
            return False
        data = "\n".join(assignments).encode("utf-8", "replace")
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                sock.setblocking(False)
                sock.sendto(data, self._address)
        except Exception as e:  # OSError mostly; nothing may escape into the daemon
            if not self._failed_once:
                self._failed_once = True
                log.warning(
                    f"cannot notify systemd through NOTIFY_SOCKET={self._where!r}: {e}; "
                    "carrying on (further failures are not logged)"
                )
            return False
        return True
