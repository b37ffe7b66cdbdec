"""Small real filesystems for the tests of faults from outside: a tmpfs of a few MiB, filled on demand.

:func:`tmpfs` mounts one (root only: the tests that need it are skipped with
a loud reason otherwise) with mode 0700, so a state directory on it passes
ductile's ownership rules. :func:`fill` takes every free byte with a filler
file; :func:`give_back` frees a given number of bytes from it.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

CHUNK = 64 * 1024
PAGE = 4096

NOT_ROOT = (
    "NOT TESTED: this test mounts a tmpfs to fill a real disk and must run as root "
    "(the suite does, in CI); as another user the full-disk behaviour goes unchecked"
)


def need_root() -> None:
    if os.geteuid() != 0:
        pytest.skip(NOT_ROOT)


@contextlib.contextmanager
def tmpfs(where: Path, size: int) -> Iterator[Path]:
    """A tmpfs of ``size`` bytes mounted at ``where`` (created), mode 0700; unmounted after."""
    need_root()
    where.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(where)],
        check=True,
        capture_output=True,
    )
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False, capture_output=True)


def free_bytes(path: Path) -> int:
    vfs = os.statvfs(path)
    return vfs.f_bavail * vfs.f_frsize


def fill(directory: Path, name: str = "filler") -> Path:
    """Write a file in ``directory`` until the filesystem refuses (ENOSPC): nothing is left free."""
    path = directory / name
    with open(path, "ab", buffering=0) as f:
        for size in (CHUNK, PAGE, 512):
            block = b"\0" * size
            while True:
                try:
                    f.write(block)
                except OSError:
                    break
    assert free_bytes(directory) < PAGE, f"{directory} still has {free_bytes(directory)} bytes free"
    return path


def give_back(filler: Path, size: int) -> None:
    """Free ``size`` bytes (rounded up to whole pages) from the filler file."""
    size = -(-size // PAGE) * PAGE
    os.truncate(filler, max(0, filler.stat().st_size - size))
