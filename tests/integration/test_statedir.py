"""The state directory's rules (issue 19, items 4 and 14; ADR 0040), on real files and real owners.

Made private whatever the umask; refused when another user owns it or could
write to it, when it is a link planted by another user, when one of
ductile's files in it is a link or belongs to someone else; a missing,
misplaced or read-only state directory gets one line naming the path and the
cause. The tests that hand files to ``nobody`` need root (skipped loudly
otherwise).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from ductile.adapters.pidlock import LOCK_NAME, InstanceLock
from ductile.adapters.sqlite import SqliteStore
from ductile.adapters.statedir import DB_FILES, DB_NAME, StateDirError, prepare
from tests.support.disks import need_root, tmpfs
from tests.support.site import Site

NOBODY = pwd.getpwnam("nobody").pw_uid


@contextlib.contextmanager
def umask(mask: int) -> Iterator[None]:
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def sticky_tmp(tmp_path: Path) -> Path:
    """A directory like /tmp: world-writable and sticky."""
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)
    return shared


# --------------------------------------------------------------------------- made private


def test_the_state_dir_and_every_file_of_the_daemon_are_private_whatever_the_umask(tmp_path: Path) -> None:
    state = tmp_path / "state"
    with umask(0):
        lock = InstanceLock(str(state), files=DB_FILES)
        lock.acquire()
        try:

            async def open_and_write() -> set[str]:
                store = await SqliteStore.open(state / DB_NAME)
                try:
                    await store.queue_depth()
                    return {p.name for p in state.iterdir()}
                finally:
                    await store.close()

            names = asyncio.run(open_and_write())
        finally:
            lock.release()
    assert mode(state) == 0o700
    assert {LOCK_NAME, DB_NAME, f"{DB_NAME}-wal", f"{DB_NAME}-shm"} <= names
    for name in (LOCK_NAME, DB_NAME):
        assert mode(state / name) == 0o600, name


def test_a_file_readable_by_others_is_made_private(tmp_path: Path) -> None:
    (tmp_path / DB_NAME).write_bytes(b"")
    (tmp_path / DB_NAME).chmod(0o644)
    prepare(str(tmp_path), DB_FILES)
    assert mode(tmp_path / DB_NAME) == 0o600


# --------------------------------------------------------------------------- ours alone


def test_a_state_dir_planted_by_another_user_in_a_sticky_world_writable_dir_is_refused(
    tmp_path: Path,
) -> None:
    need_root()
    planted = sticky_tmp(tmp_path) / "ductile"
    planted.mkdir(mode=0o755)
    os.chown(planted, NOBODY, -1)
    with pytest.raises(StateDirError, match=r"is owned by uid 65534 \(nobody\), not by the user running"):
        InstanceLock(str(planted), files=DB_FILES).acquire()
    assert list(planted.iterdir()) == []  # nothing was created in it


def test_a_state_dir_link_planted_by_another_user_is_refused_one_of_ours_is_followed(tmp_path: Path) -> None:
    need_root()
    real = tmp_path / "real"
    real.mkdir(mode=0o700)
    link = sticky_tmp(tmp_path) / "ductile"
    link.symlink_to(real)
    os.chown(link, NOBODY, NOBODY, follow_symlinks=False)
    with pytest.raises(StateDirError, match=r"is a symbolic link owned by uid 65534 \(nobody\)"):
        InstanceLock(str(link)).acquire()
    assert list(real.iterdir()) == []
    os.chown(link, 0, 0, follow_symlinks=False)  # the operator's own link: fine
    with InstanceLock(str(link)):
        assert (real / LOCK_NAME).is_file()


@pytest.mark.parametrize("bits", [0o770, 0o707, 0o777, 0o1777])
def test_a_state_dir_writable_by_others_is_refused(tmp_path: Path, bits: int) -> None:
    state = tmp_path / "state"
    state.mkdir()
    state.chmod(bits)
    with pytest.raises(StateDirError, match=rf"writable by others \(mode {bits:04o}\).*chmod 700"):
        prepare(str(state), DB_FILES)


def test_a_planted_database_link_is_refused_and_its_target_never_created(tmp_path: Path) -> None:
    secret = tmp_path / "root-only"
    secret.mkdir(mode=0o700)
    target = secret / "made-by-ductile"
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    (state / DB_NAME).symlink_to(target)
    with pytest.raises(StateDirError, match=rf"{state / DB_NAME} is a symbolic link \(to {target}\)"):
        InstanceLock(str(state), files=DB_FILES).acquire()
    # And the store itself never opens through a link, even without the state dir's check.
    with pytest.raises(Exception, match="symbolic link"):
        asyncio.run(SqliteStore.open(state / DB_NAME))
    assert not target.exists()


@pytest.mark.parametrize("name", [LOCK_NAME, DB_NAME, f"{DB_NAME}-wal"])
def test_a_file_of_another_user_in_the_state_dir_is_refused(tmp_path: Path, name: str) -> None:
    need_root()
    (tmp_path / name).write_bytes(b"x")
    (tmp_path / name).chmod(0o600)
    os.chown(tmp_path / name, NOBODY, -1)
    with pytest.raises(StateDirError, match=rf"{name} is owned by uid 65534 \(nobody\).*chown"):
        prepare(str(tmp_path), (LOCK_NAME, *DB_FILES))


def test_a_file_writable_by_others_is_refused(tmp_path: Path) -> None:
    (tmp_path / DB_NAME).write_bytes(b"x")
    (tmp_path / DB_NAME).chmod(0o666)
    with pytest.raises(StateDirError, match=r"writable by others \(mode 0666\)"):
        prepare(str(tmp_path), DB_FILES)


# --------------------------------------------------------------------------- usable, or one clear line


def test_a_state_dir_that_cannot_be_created_says_where_and_why(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(StateDirError, match=rf"state dir {tmp_path}/file/state: .*Not a directory"):
        prepare(str(tmp_path / "file" / "state"))


def test_a_read_only_state_dir_says_so(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "ro", 1024 * 1024) as disk:
        subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)
        with pytest.raises(StateDirError, match=rf"state dir {disk} is on a read-only filesystem"):
            prepare(str(disk))
        with pytest.raises(
            StateDirError, match=rf"cannot create state dir {disk}/state: Read-only file system"
        ):
            prepare(str(disk / "state"))


def _cli_state_dir_cases(site: Site, tmp_path: Path) -> dict[str, tuple[Path, str]]:
    """Each case: the state dir to configure, and the cause the one-line error must name."""
    (tmp_path / "a-file").write_text("x")
    return {
        "missing parent is a file": (tmp_path / "a-file" / "state", "Not a directory"),
        "read-only": (tmp_path / "ro" / "state", "Read-only file system"),
    }


@pytest.mark.parametrize("verb", [["start"], ["run", "p"]])
def test_the_command_line_says_what_is_wrong_with_the_state_dir_in_one_line(
    site: Site, tmp_path: Path, verb: list[str]
) -> None:
    site.plugin("p", '#!/bin/sh\necho \'{"status": "ok"}\'\n')
    with tmpfs(tmp_path / "ro", 1024 * 1024):
        subprocess.run(["mount", "-o", "remount,ro", str(tmp_path / "ro")], check=True)
        for case, (state_dir, cause) in _cli_state_dir_cases(site, tmp_path).items():
            site.write_config({"p": {}}, service={"state_dir": str(state_dir)})
            done = site.cli(*verb)
            assert done.returncode == 1, (case, done.stdout, done.stderr)
            lines = done.stderr.strip().splitlines()
            assert len(lines) == 1, (case, done.stderr)
            assert str(state_dir) in lines[0], (case, lines[0])
            assert cause in lines[0], (case, lines[0])
            assert "internal error" not in lines[0]
            assert "Traceback" not in done.stderr
