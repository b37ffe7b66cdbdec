"""One run of a plugin process: its pipes, its exit, its deadline (D4, D5).

How one run goes, and why (see PITFALLS.md, "Processes"):

- The process was started by :class:`~ductile.adapters.spawner.SubprocessSpawner`
  as a plain :class:`subprocess.Popen`, and this module drives its pipes from
  the event loop (non-blocking fds and ``loop.add_reader``) and reaps the
  child itself. asyncio's subprocess machinery is avoided on purpose: its
  child watcher races us for the reap (CPython gh-119710) and its stream
  readers lose bytes when a read is cancelled. Every read lands in a buffer
  this module owns, so nothing is lost whichever way the run ends.
- The plugin's exit is watched separately from EOF, through a pidfd
  (``os.pidfd_open``; polling ``waitid`` where there is none): a plugin that
  exits while a grandchild (``sleep 30 &``) still holds stdout does not stall
  the job. On the leader's exit, while it is still an unreaped zombie (so its
  pid, which is the group id, cannot have been reused), the rest of the group
  is SIGKILLed; then the leader is reaped and the pipes are drained for at
  most ``drain_timeout`` (1 s).
- The request is written to stdin from its own task, then stdin is closed. A
  plugin that never reads (the write would block forever) or that closes its
  stdin early (EPIPE/ECONNRESET) is not an error of the core.
- At the deadline (``request.timeout`` seconds): SIGTERM to the group,
  ``request.grace`` seconds, SIGKILL to the group. The outcome says
  ``timed_out`` whatever the plugin printed, before or after.
- stdout is kept up to ``stdout_cap``; one byte more and the group is killed
  and reading stops (``stdout_overflow``). stderr is taken into account up to
  ``stderr_cap`` bytes, the rest drained and discarded; only the last
  ``stderr_keep`` bytes of what was taken are kept (``stderr_tail``). Memory
  stays bounded whatever a plugin prints.
- The leader is always reaped, whatever happens (cancellation of ``run``, an
  ``on_start`` that raises): no zombies.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import signal
import subprocess
import time
from collections.abc import Callable

from ductile.adapters.spawner.proc import killpg, read_proc_stat
from ductile.domain.outcome import SpawnOutcome
from ductile.ports.spawner import OnStart, ProcessHandle, SpawnRequest

#: Exit polling period where pidfds are not available.
POLL_INTERVAL = 0.02


class ProcessRun:
    """The state of one run: its process, pipes, buffers and what we did to it."""

    def __init__(
        self,
        proc: subprocess.Popen[bytes],
        request: SpawnRequest,
        started: float,
        *,
        drain_timeout: float,
        chunk_size: int,
    ) -> None:
        assert proc.stdin is not None
        assert proc.stdout is not None
        assert proc.stderr is not None
        self.proc = proc
        self.request = request
        self.started = started
        self.drain_timeout = drain_timeout
        self.chunk_size = max(1, chunk_size)
        self.loop = asyncio.get_running_loop()
        self.pid = proc.pid
        #: start_new_session=True: the child leads its own group.
        self.pgid = proc.pid

        self.stdin_fd: int | None = proc.stdin.fileno()
        self.stdout_fd: int | None = proc.stdout.fileno()
        self.stderr_fd: int | None = proc.stderr.fileno()
        #: A BytesIO, not a bytearray: ``getvalue()`` hands over its buffer without a copy, so a
        #: full 10 MiB stdout costs 10 MiB of memory, not 20 (bench/bench_memory.py).
        self.stdout = io.BytesIO()
        self.stdout_len = 0
        self.stdout_overflow = False
        self.stderr_seen = 0
        self.stderr_tail = bytearray()
        self.timed_out = False
        #: Signals sent to the leader's group while the leader lived.
        self.sent: set[int] = set()

        self.exited: asyncio.Future[None] = self.loop.create_future()
        self.overflowed: asyncio.Future[None] = self.loop.create_future()
        self.stdout_done: asyncio.Future[None] = self.loop.create_future()
        self.stderr_done: asyncio.Future[None] = self.loop.create_future()
        self.reaped = False
        self.returncode: int | None = None
        self.pidfd: int | None = None
        self.poll_handle: asyncio.TimerHandle | None = None
        self.stdin_task: asyncio.Task[None] | None = None

    # -- the run ------------------------------------------------------------

    async def run(self, on_start: OnStart | None) -> SpawnOutcome:
        request = self.request
        try:
            self._watch_exit()
            self._watch_pipes()
            self.stdin_task = self.loop.create_task(self._feed_stdin(request.stdin))
            deadline = self.started + request.timeout
            if on_start is not None:
                await on_start(self._handle())

            await _first(self.exited, self.overflowed, timeout=deadline - time.monotonic())
            if not self.exited.done() and not self.overflowed.done():
                # The deadline. An exit the event loop has not reported yet still
                # counts as in time: a finished run is never turned into a timeout.
                self._check_exit()
            if not self.exited.done():
                if self.overflowed.done():
                    self._signal(signal.SIGKILL)
                else:
                    self.timed_out = True
                    self._signal(signal.SIGTERM)
                    await _first(self.exited, self.overflowed, timeout=request.grace)
                    if not self.exited.done():
                        self._signal(signal.SIGKILL)
                # SIGKILL cannot be ignored: the leader dies now (a process in
                # uninterruptible sleep dies when it wakes up).
                await self.exited
            # The leader exited and the rest of its group was killed: what is
            # left in the pipes comes quickly, unless an escapee holds them.
            await _first(_both(self.stdout_done, self.stderr_done), timeout=self.drain_timeout)
            await self._stop_stdin()
            return self._outcome()
        finally:
            self._cleanup()

    def _handle(self) -> ProcessHandle:
        try:
            stat = read_proc_stat(self.pid)  # the leader is not reaped yet: readable even as a zombie
        except ValueError:
            stat = None
        return ProcessHandle(pid=self.pid, pgid=self.pgid, start_time=stat.start_time if stat else 0)

    def _outcome(self) -> SpawnOutcome:
        code = self.returncode
        exit_code: int | None = None
        sig: int | None = None
        if code is not None and code >= 0:
            exit_code = code
        elif code is not None and -code not in self.sent:
            sig = -code
        keep = self.request.stderr_keep
        tail = bytes(self.stderr_tail[-keep:]) if keep > 0 else b""
        stdout = self.stdout.getvalue()
        self.stdout = io.BytesIO()
        return SpawnOutcome(
            exit_code=exit_code,
            signal=sig,
            stdout=stdout,
            stderr_tail=tail,
            timed_out=self.timed_out,
            stdout_overflow=self.stdout_overflow,
            duration=time.monotonic() - self.started,
        )

    def _signal(self, sig: int) -> None:
        """Signal the whole group, only while the leader is unreaped (its pid is the group id)."""
        if self.reaped:
            return
        self.sent.add(sig)
        killpg(self.pgid, sig)

    # -- exit ---------------------------------------------------------------

    def _watch_exit(self) -> None:
        try:
            self.pidfd = os.pidfd_open(self.pid)
        except (AttributeError, OSError):  # old kernel, no pidfd support, no fds left
            self.pidfd = None
        if self.pidfd is not None:
            self.loop.add_reader(self.pidfd, self._on_exit)
        else:
            self.poll_handle = self.loop.call_later(POLL_INTERVAL, self._poll_exit)

    def _poll_exit(self) -> None:
        self.poll_handle = None
        if not self._check_exit():
            self.poll_handle = self.loop.call_later(POLL_INTERVAL, self._poll_exit)

    def _check_exit(self) -> bool:
        """Has the leader exited? If so, handle its exit now."""
        if self.exited.done():
            return True
        try:
            # WNOWAIT: look, do not reap yet (the group must be killed first).
            running = os.waitid(os.P_PID, self.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None
        except ChildProcessError:  # reaped by someone else: it is over
            running = False
        if not running:
            self._on_exit()
        return not running

    def _on_exit(self) -> None:
        """The leader exited; it is a zombie: kill the rest of its group, then reap it."""
        if self.exited.done():
            return
        if self.pidfd is not None:
            self.loop.remove_reader(self.pidfd)
        # The unreaped leader keeps its pid, so the group id cannot have been
        # reused. Not recorded in self.sent: this signal is not for the leader.
        killpg(self.pgid, signal.SIGKILL)
        self._reap()
        self.exited.set_result(None)

    def _reap(self) -> None:
        """Wait for the leader, which has exited or been SIGKILLed: returns at once."""
        if self.reaped:
            return
        status: int | None
        try:
            _, status = os.waitpid(self.pid, 0)
        except ChildProcessError:
            # Someone else reaped it (a waitpid(-1) child watcher): status unknown.
            status = None
        self.reaped = True
        if status is not None:
            self.returncode = os.waitstatus_to_exitcode(status)
        # Keep Popen consistent: it must not wait for (or warn about) a process we reaped.
        self.proc.returncode = self.returncode if self.returncode is not None else 0

    # -- pipes --------------------------------------------------------------

    def _watch_pipes(self) -> None:
        for fd, on_data in ((self.stdout_fd, self._on_stdout), (self.stderr_fd, self._on_stderr)):
            assert fd is not None
            os.set_blocking(fd, False)
            self.loop.add_reader(fd, self._on_readable, fd, on_data)
        assert self.stdin_fd is not None
        os.set_blocking(self.stdin_fd, False)

    def _on_readable(self, fd: int, on_data: Callable[[bytes], None]) -> None:
        """One chunk per wake-up, into buffers we own: nothing is lost whenever we stop."""
        try:
            data = os.read(fd, self.chunk_size)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""  # treat a broken pipe like its end
        if not data:
            self._close_reader(fd)
            return
        on_data(data)

    def _on_stdout(self, data: bytes) -> None:
        room = self.request.stdout_cap - self.stdout_len
        if len(data) <= room:
            self.stdout.write(data)
            self.stdout_len += len(data)
            return
        self.stdout.write(data[: max(room, 0)])
        self.stdout_len += max(room, 0)
        self.stdout_overflow = True
        # Stop it, then stop reading: closing our end makes later writes fail.
        self._signal(signal.SIGKILL)
        self.sent.add(signal.SIGPIPE)
        if self.stdout_fd is not None:
            self._close_reader(self.stdout_fd)
        if not self.overflowed.done():
            self.overflowed.set_result(None)

    def _on_stderr(self, data: bytes) -> None:
        room = self.request.stderr_cap - self.stderr_seen
        self.stderr_seen += len(data)
        if room <= 0:
            return  # beyond the cap: drained and discarded
        self.stderr_tail.extend(data[:room])
        keep = self.request.stderr_keep
        if len(self.stderr_tail) > 2 * keep + self.chunk_size:  # trim now and then, not on every read
            del self.stderr_tail[: len(self.stderr_tail) - keep]

    def _close_reader(self, fd: int) -> None:
        self.loop.remove_reader(fd)
        if fd == self.stdout_fd:
            self.stdout_fd = None
            _close_quietly(self.proc.stdout)
            _resolve(self.stdout_done)
        elif fd == self.stderr_fd:
            self.stderr_fd = None
            _close_quietly(self.proc.stderr)
            _resolve(self.stderr_done)

    async def _feed_stdin(self, data: bytes) -> None:
        """Write the request, then close stdin; a plugin that does not read is not our error."""
        view = memoryview(data)
        try:
            while view and self.stdin_fd is not None:
                try:
                    written = os.write(self.stdin_fd, view[: self.chunk_size])
                except (BlockingIOError, InterruptedError):
                    await self._writable()
                    continue
                except OSError:  # EPIPE, ECONNRESET: the plugin closed its stdin or exited
                    return
                view = view[written:]
        finally:
            self._close_stdin()

    async def _writable(self) -> None:
        fd = self.stdin_fd
        assert fd is not None
        ready: asyncio.Future[None] = self.loop.create_future()
        self.loop.add_writer(fd, _resolve, ready)
        try:
            await ready
        finally:
            if self.stdin_fd == fd:
                self.loop.remove_writer(fd)

    def _close_stdin(self) -> None:
        if self.stdin_fd is not None:
            self.loop.remove_writer(self.stdin_fd)
            self.stdin_fd = None
            _close_quietly(self.proc.stdin)

    async def _stop_stdin(self) -> None:
        task = self.stdin_task
        if task is None:
            return
        if not task.done():
            task.cancel()  # only an escapee still holding stdin gets us here
            await asyncio.wait([task])
        if not task.cancelled():
            task.result()  # the feeder expects the plugin's misbehaviour: anything else is our bug

    def _cleanup(self) -> None:
        """Whatever happened (cancellation, on_start raising): kill, reap, release."""
        if not self.reaped:
            self._signal(signal.SIGKILL)
            self._reap()
        if self.pidfd is not None:
            self.loop.remove_reader(self.pidfd)
            os.close(self.pidfd)
            self.pidfd = None
        if self.poll_handle is not None:
            self.poll_handle.cancel()
            self.poll_handle = None
        for fd in (self.stdout_fd, self.stderr_fd):
            if fd is not None:
                self._close_reader(fd)
        self._close_stdin()
        if self.stdin_task is not None and not self.stdin_task.done():
            self.stdin_task.cancel()


# --------------------------------------------------------------------------
# Small asyncio helpers


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _close_quietly(stream: object) -> None:
    close = getattr(stream, "close", None)
    if close is not None:
        with contextlib.suppress(OSError):
            close()


async def _first(*futures: asyncio.Future[None], timeout: float) -> None:
    """Until one of ``futures`` is done or ``timeout`` seconds have passed (none is cancelled)."""
    if any(f.done() for f in futures):
        return
    await asyncio.wait(futures, timeout=max(timeout, 0.0), return_when=asyncio.FIRST_COMPLETED)


def _both(a: asyncio.Future[None], b: asyncio.Future[None]) -> asyncio.Future[None]:
    """A future done when both are (never cancelling them)."""
    both: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def check(_: object) -> None:
        if a.done() and b.done():
            _resolve(both)

    a.add_done_callback(check)
    b.add_done_callback(check)
    check(None)
    return both
