"""The Inbox contract: FakeInbox on a FakeClock, AsyncioInbox on real (small) timeouts.

``notify`` wakes a waiter or, if none waits, the next one to wait: a
notification is never lost. ``wait(timeout)`` returns True when notified and
False once ``timeout`` seconds of its clock have passed without one.
"""

from __future__ import annotations

import asyncio
import contextlib

from tests.support.cases import TimeCase

# Tolerance for the event loop's clock resolution, in seconds (real clock only).
SLACK = 0.002


def test_wait_times_out_without_a_notification(time_case: TimeCase) -> None:
    async def main() -> None:
        time_case.restart()
        assert await time_case.drive(time_case.inbox.wait(time_case.short)) is False
        assert time_case.elapsed() >= time_case.short - SLACK, f"returned after {time_case.elapsed()} s"

    asyncio.run(main())


def test_a_notification_before_the_wait_is_kept(time_case: TimeCase) -> None:
    async def main() -> None:
        time_case.inbox.notify()
        time_case.restart()
        assert await time_case.drive(time_case.inbox.wait(time_case.long)) is True
        assert time_case.elapsed() < time_case.short, f"{time_case.name}: waited {time_case.elapsed()} s"

    asyncio.run(main())


def test_a_notification_during_the_wait_wakes_the_waiter_before_its_timeout(time_case: TimeCase) -> None:
    async def main() -> None:
        time_case.restart()
        waiter = asyncio.ensure_future(time_case.inbox.wait(time_case.long))
        await time_case.let_run()
        assert not waiter.done(), "wait returned before anything happened"
        time_case.inbox.notify()
        assert await time_case.drive(waiter) is True
        assert time_case.elapsed() < time_case.long / 2, f"woke only after {time_case.elapsed()} s"

    asyncio.run(main())


def test_a_notification_is_consumed_once(time_case: TimeCase) -> None:
    async def main() -> None:
        inbox = time_case.inbox
        inbox.notify()
        assert await time_case.drive(inbox.wait(time_case.long)) is True
        assert await time_case.drive(inbox.wait(time_case.short)) is False

    asyncio.run(main())


def test_notifications_while_nobody_waits_coalesce_into_one_wakeup(time_case: TimeCase) -> None:
    """A wake-up, not a counter: whoever wakes must look for all the work there is."""

    async def main() -> None:
        inbox = time_case.inbox
        for _ in range(3):
            inbox.notify()
        assert await time_case.drive(inbox.wait(time_case.long)) is True
        assert await time_case.drive(inbox.wait(time_case.short)) is False

    asyncio.run(main())


def test_a_timed_out_wait_does_not_swallow_a_later_notification(time_case: TimeCase) -> None:
    async def main() -> None:
        inbox = time_case.inbox
        assert await time_case.drive(inbox.wait(time_case.short)) is False
        inbox.notify()
        assert await time_case.drive(inbox.wait(time_case.long)) is True

    asyncio.run(main())


def test_wait_zero_returns_at_once(time_case: TimeCase) -> None:
    async def main() -> None:
        inbox = time_case.inbox
        # not driven: a wait(0) that needed time to pass would block here
        assert await asyncio.wait_for(inbox.wait(0), timeout=1.0) is False
        inbox.notify()
        assert await asyncio.wait_for(inbox.wait(0), timeout=1.0) is True

    asyncio.run(main())


def test_one_notification_wakes_exactly_one_of_two_waiters(time_case: TimeCase) -> None:
    async def main() -> None:
        inbox = time_case.inbox
        waiters = [asyncio.ensure_future(inbox.wait(time_case.short * 4)) for _ in range(2)]
        await time_case.let_run()
        inbox.notify()
        results = await time_case.drive(asyncio.gather(*waiters))
        assert sorted(results) == [False, True], results

    asyncio.run(main())


def test_a_waiter_left_alone_after_another_timed_out_is_still_woken(time_case: TimeCase) -> None:
    async def main() -> None:
        inbox = time_case.inbox
        brief = asyncio.ensure_future(inbox.wait(time_case.short))
        patient = asyncio.ensure_future(inbox.wait(time_case.long))
        assert await time_case.drive(brief) is False
        time_case.restart()
        inbox.notify()
        assert await time_case.drive(patient) is True
        assert time_case.elapsed() < time_case.long / 2, f"woke only after {time_case.elapsed()} s"

    asyncio.run(main())


def test_a_notification_is_not_lost_with_a_cancelled_waiter(time_case: TimeCase) -> None:
    async def main() -> None:
        inbox = time_case.inbox
        waiter = asyncio.ensure_future(inbox.wait(time_case.long))
        await time_case.let_run()
        inbox.notify()
        waiter.cancel()  # before it could return what it was woken with
        got: bool | None = None
        with contextlib.suppress(asyncio.CancelledError):
            # A cancel arriving after the wake-up may be swallowed (asyncio.wait_for in
            # 3.11 does so): then the waiter itself returns the notification.
            got = await waiter
        following = await time_case.drive(inbox.wait(time_case.short))
        assert [got, following].count(True) == 1, (
            f"the notification must reach exactly one party: cancelled waiter {got}, next wait {following}"
        )

    asyncio.run(main())
