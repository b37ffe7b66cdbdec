"""The coalescing transport: a connection's writes of one loop iteration leave as one write, in order
(issue 18: a response's head and body in one socket write)."""

from __future__ import annotations

import asyncio
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from ductile.adapters.http.coalesce import HOLD_AT_MOST, CoalescingTransport


class Socket:
    """What the socket's transport was asked to do, in order."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.closing = False

    def write(self, data: bytes) -> None:
        assert not self.closing, "written after close"
        self.calls.append(("write", data))

    def close(self) -> None:
        self.closing = True
        self.calls.append(("close", None))

    def abort(self) -> None:
        self.closing = True
        self.calls.append(("abort", None))

    def is_closing(self) -> bool:
        return self.closing

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 9) if name == "peername" else default


async def turn() -> None:
    """Let the loop run what was scheduled with call_soon."""
    await asyncio.sleep(0)


def coalescing() -> tuple[CoalescingTransport, Socket]:
    sock = Socket()
    return CoalescingTransport(sock, asyncio.get_running_loop()), sock  # type: ignore[arg-type]


def test_a_head_and_a_body_written_together_leave_as_one_write_once_the_loop_turns() -> None:
    async def main() -> None:
        transport, sock = coalescing()
        transport.write(b"HTTP/1.1 202 Accepted\r\ncontent-length: 2\r\n\r\n")
        transport.write(b"{}")
        assert sock.calls == [], "nothing is sent inside the iteration that wrote it"
        await turn()
        assert sock.calls == [("write", b"HTTP/1.1 202 Accepted\r\ncontent-length: 2\r\n\r\n{}")]
        await turn()
        assert len(sock.calls) == 1

    asyncio.run(main())


def test_writes_of_different_iterations_are_sent_separately_in_order() -> None:
    async def main() -> None:
        transport, sock = coalescing()
        transport.write(b"first")
        await turn()
        transport.writelines([b"sec", bytearray(b"ond")])
        transport.write(b"")
        await turn()
        assert sock.calls == [("write", b"first"), ("write", b"second")]

    asyncio.run(main())


def test_a_large_write_goes_to_the_socket_at_once_so_its_flow_control_sees_it() -> None:
    async def main() -> None:
        transport, sock = coalescing()
        transport.write(b"head")
        transport.write(b"x" * (HOLD_AT_MOST - 4))
        assert sock.calls == [("write", b"head" + b"x" * (HOLD_AT_MOST - 4))], "sent within the iteration"
        transport.write(b"tail")
        await turn()
        assert sock.calls[-1] == ("write", b"tail")
        assert len(sock.calls) == 2, "the flush scheduled for the first writes sends nothing twice"

    asyncio.run(main())


def test_close_sends_what_is_pending_first_and_nothing_is_written_after() -> None:
    async def main() -> None:
        transport, sock = coalescing()
        transport.write(b"HTTP/1.1 400 Bad Request\r\n\r\n")
        transport.close()
        assert sock.calls == [("write", b"HTTP/1.1 400 Bad Request\r\n\r\n"), ("close", None)]
        transport.write(b"late")
        await turn()
        assert sock.calls[-1] == ("close", None), "a write after close is dropped, as asyncio drops it"

    asyncio.run(main())


def test_abort_drops_what_is_pending() -> None:
    async def main() -> None:
        transport, sock = coalescing()
        transport.write(b"never")
        transport.abort()
        await turn()
        assert sock.calls == [("abort", None)]

    asyncio.run(main())


def test_everything_else_is_the_socket_transports() -> None:
    async def main() -> None:
        transport, sock = coalescing()
        assert transport.get_extra_info("peername") == ("127.0.0.1", 9)
        assert transport.is_closing() is False
        sock.closing = True
        assert transport.is_closing() is True

    asyncio.run(main())


@given(st.lists(st.lists(st.binary(max_size=20), max_size=5), max_size=6))
def test_the_bytes_sent_are_the_bytes_written_in_order_one_write_per_busy_iteration(
    iterations: list[list[bytes]],
) -> None:
    async def main() -> None:
        transport, sock = coalescing()
        for chunks in iterations:
            for chunk in chunks:
                transport.write(chunk)
            await turn()
        writes = [data for kind, data in sock.calls if kind == "write"]
        assert b"".join(writes) == b"".join(b"".join(chunks) for chunks in iterations)
        assert len(writes) == sum(1 for chunks in iterations if any(chunks))
        assert all(writes), "an empty write is never sent"

    asyncio.run(main())
