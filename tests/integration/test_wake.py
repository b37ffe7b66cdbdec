"""The cross-process wake-up (``ductile.adapters.wake``, ADR 0024) on real FIFOs.

A write from another process wakes the listener on its event loop; with no
listener, a missing state directory, a planted file or symlink, :func:`wake`
answers False and never raises nor blocks.
"""

from __future__ import annotations

import asyncio
import os
import stat
import subprocess
import sys
from pathlib import Path

from ductile.adapters.wake import WakeListener, wake, wake_path


def test_another_process_wakes_the_listener(tmp_path: Path) -> None:
    async def main() -> None:
        woken = asyncio.Event()
        listener = WakeListener(str(tmp_path), woken.set)
        assert listener.start()
        assert stat.S_IMODE(os.stat(wake_path(str(tmp_path))).st_mode) == 0o600
        code = (
            f"from ductile.adapters.wake import wake; raise SystemExit(0 if wake({str(tmp_path)!r}) else 1)"
        )
        done = await asyncio.to_thread(subprocess.run, [sys.executable, "-c", code], check=False)
        assert done.returncode == 0
        await asyncio.wait_for(woken.wait(), 10)
        woken.clear()
        for _ in range(100_000 // 4096 + 10):  # more than the pipe holds: the writer never blocks
            assert wake(str(tmp_path))
        await asyncio.wait_for(woken.wait(), 10)
        listener.close()
        listener.close()  # idempotent
        assert not wake(str(tmp_path))  # nobody listens: ENXIO

    asyncio.run(main())


def test_wake_without_a_listener_or_a_folder_is_false(tmp_path: Path) -> None:
    assert not wake(str(tmp_path))
    assert not wake(str(tmp_path / "missing"))


def test_a_planted_file_or_symlink_is_replaced_and_never_followed(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    target.write_text("keep me")
    path = Path(wake_path(str(tmp_path)))
    path.symlink_to(target)
    assert not wake(str(tmp_path))  # O_NOFOLLOW: the writer never writes through a symlink
    assert target.read_text() == "keep me"

    async def main() -> None:
        listener = WakeListener(str(tmp_path), lambda: None)
        assert listener.start()
        assert stat.S_ISFIFO(os.lstat(path).st_mode)
        listener.close()

    asyncio.run(main())
    assert target.read_text() == "keep me"
    path.unlink()
    path.write_text("a regular file")
    assert not wake(str(tmp_path))
