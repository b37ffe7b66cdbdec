"""HttpServer: uvicorn serving an ASGI app inside the caller's event loop.

It binds its own socket first (so a busy port is a :class:`ListenError`,
never uvicorn's ``sys.exit``), never installs signal handlers (the daemon owns
SIGTERM/SIGINT/SIGHUP), and stops gracefully and idempotently. Its protocol
(either parser) reports to a :class:`~ductile.adapters.http.connections.ConnectionGuard`:
a request head must arrive within ``head_timeout`` (slowloris and idle
connections are closed), and past ``max_connections`` (the daemon caps it so
that descriptors stay free for the work, :mod:`ductile.adapters.fdlimit`) the
longest-waiting connection makes room for a new one.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import socket
from collections.abc import Generator

import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from ductile.adapters.http.asgi import ASGIApp
from ductile.adapters.http.connections import HEAD_TIMEOUT, ConnectionGuard, guarded
from ductile.adapters.http.headers import MAX_HEAD_SIZE
from ductile.adapters.http.parsers import (
    ConcreteParser,
    HttpParser,
    bounded_httptools_protocol,
    resolve_parser,
)
from ductile.domain.errors import DuctileError
from ductile.log import Log

log = Log("http", logger=logging.getLogger("ductile.http"))

#: The default cap on open connections (a personal server's webhooks need few).
MAX_CONNECTIONS = 256


class ListenError(DuctileError):
    """The HTTP listener could not bind its address."""


class _EmbeddedServer(uvicorn.Server):
    """uvicorn without signal handling, reporting when it accepts connections."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.accepting = asyncio.Event()

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        # The daemon owns the process's signals; uvicorn's handlers would
        # swallow SIGTERM and re-raise it after its own shutdown.
        yield

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        self.accepting.set()


def _where(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _reason(exc: OSError) -> str:
    return (exc.strerror or str(exc) or type(exc).__name__).lower()


async def _listen(host: str, port: int, backlog: int) -> socket.socket:
    where = _where(host, port)
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        family, kind, proto, _, address = infos[0]
        sock = socket.socket(family, kind, proto)
    except OSError as exc:
        raise ListenError(f"cannot listen on {where}: {_reason(exc)}") from exc
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(backlog)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        raise ListenError(f"cannot listen on {where}: {_reason(exc)}") from exc
    return sock


def _report_unexpected_end(server: _EmbeddedServer, task: asyncio.Task[None]) -> None:
    if task.cancelled():
        return
    exc = task.exception()
    if exc is not None or not server.should_exit:
        log.log(logging.ERROR, "the HTTP listener stopped unexpectedly", exc_info=exc)


class HttpServer:
    """uvicorn serving ``app`` on ``host:port`` inside the running event loop.

    ``port`` 0 picks a free port (read it back from :attr:`port`).
    ``max_connections`` caps open connections: past it, the connection
    waiting longest for a request is closed to make room, and only when every
    connection has a request in the app is a new one answered 503.
    ``head_timeout`` is the deadline, in seconds, for a request head.
    ``graceful_timeout`` bounds how long :meth:`stop` waits for requests
    in flight before cancelling them. ``parser`` picks uvicorn's HTTP/1.1
    parser: "auto" (the default, the daemon's) is httptools when it can be
    imported, else h11; naming httptools when it cannot be imported is a
    ValueError here, not a failure at :meth:`start`.
    """

    def __init__(
        self,
        app: ASGIApp,
        host: str,
        port: int,
        *,
        max_connections: int = MAX_CONNECTIONS,
        head_timeout: float = HEAD_TIMEOUT,
        graceful_timeout: int = 5,
        backlog: int = 128,
        parser: HttpParser = "auto",
        label: str = "webhooks",
    ) -> None:
        self._parser = resolve_parser(parser)
        #: Which listener this is, in its log lines (``webhooks``, ``api``, ``webhooks+api``).
        self.label = label
        self._app = app
        self._host = host
        self._requested_port = port
        self._bound_port: int | None = None
        self._max_connections = max_connections
        self._head_timeout = head_timeout
        self.guard: ConnectionGuard | None = None
        self._graceful_timeout = graceful_timeout
        self._backlog = backlog
        self._server: _EmbeddedServer | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping: asyncio.Future[None] | None = None

    @property
    def port(self) -> int:
        """The bound port once started (the requested one before)."""
        return self._bound_port if self._bound_port is not None else self._requested_port

    @property
    def bound_port(self) -> int | None:
        """The port connections are accepted on; None before :meth:`start` has bound it."""
        return self._bound_port

    @property
    def address(self) -> str:
        return _where(self._host, self.port)

    @property
    def parser(self) -> ConcreteParser:
        """The HTTP/1.1 parser uvicorn uses ("auto" resolved at construction)."""
        return self._parser

    async def start(self) -> None:
        """Bind, start serving in a task, return once connections are accepted."""
        if self._task is not None:
            raise RuntimeError("HttpServer.start() called while running")
        guard = ConnectionGuard(limit=self._max_connections, head_timeout=self._head_timeout)
        base = bounded_httptools_protocol() if self._parser == "httptools" else H11Protocol
        config = uvicorn.Config(
            self._app,
            http=guarded(base, guard),
            h11_max_incomplete_event_size=MAX_HEAD_SIZE,
            ws="none",
            lifespan="off",
            log_config=None,  # the daemon configures logging, uvicorn must not
            access_log=False,
            server_header=False,
            date_header=True,
            proxy_headers=False,
            limit_concurrency=None,  # the guard's limit, which never locks new clients out
            timeout_graceful_shutdown=self._graceful_timeout,
            backlog=self._backlog,
        )
        config.load()
        sock = await _listen(self._host, self._requested_port, self._backlog)
        port: int = sock.getsockname()[1]
        where = _where(self._host, port)
        server = _EmbeddedServer(config)
        task = asyncio.create_task(self._serve(server, sock, where), name=f"ductile-http {where}")
        accepting = asyncio.ensure_future(server.accepting.wait())
        try:
            await asyncio.wait({task, accepting}, return_when=asyncio.FIRST_COMPLETED)
        except BaseException:
            server.should_exit = True
            task.cancel()
            sock.close()
            raise
        finally:
            accepting.cancel()
        if not server.accepting.is_set():
            sock.close()
            cause = None if task.cancelled() else task.exception()
            raise ListenError(f"cannot listen on {where}: the server did not start ({cause})") from cause
        self._server, self._task, self._bound_port = server, task, port
        self.guard = guard
        task.add_done_callback(functools.partial(_report_unexpected_end, server))
        log.info(
            "listening", address=where, parser=self._parser, listener=self.label, max_connections=guard.limit
        )

    @staticmethod
    async def _serve(server: _EmbeddedServer, sock: socket.socket, where: str) -> None:
        try:
            await server.serve(sockets=[sock])
        except SystemExit as exc:  # uvicorn's reaction to a startup failure
            raise ListenError(f"cannot listen on {where}: uvicorn exited ({exc.code})") from None
        finally:
            sock.close()

    async def stop(self) -> None:
        """Stop accepting, let requests in flight finish (bounded), close.

        Idempotent; concurrent callers all wait for the same shutdown.
        """
        if self._task is None:
            return
        if self._stopping is None:
            self._stopping = asyncio.ensure_future(self._shutdown())
        await asyncio.shield(self._stopping)

    async def _shutdown(self) -> None:
        server, task = self._server, self._task
        assert server is not None
        assert task is not None
        server.should_exit = True
        try:
            await task
        except Exception:
            log.exception("the HTTP listener failed while stopping")
        finally:
            if self.guard is not None:
                self.guard.stop()
            self._server = None
            self._task = None
            self._stopping = None
            log.info("stopped listening")
