"""Opening the database file: made whole or not at all, looked at before it is trusted.

* :func:`create` makes a missing database under a temporary name next to it
  (mode 0600 whatever the umask), migrates it, and only then links it into
  place (never over a file that appeared meanwhile). So ductile never leaves
  an empty or half-made file at the database's path, and an **empty file
  found there was put there by something else**: :func:`preflight` refuses
  it instead of starting afresh on it as if it were new.
* :func:`preflight` refuses, before SQLite opens anything: a database (or its
  ``-wal``/``-shm``) that is a symbolic link or not a regular file (SQLite
  would follow the link: a link planted in a state directory must never make
  ductile write elsewhere), an empty database, and a database that is gone
  while its write-ahead log is still there (SQLite would replay the log into
  a new empty file).
* :func:`check_integrity` runs ``PRAGMA quick_check`` (the daemon, at start):
  a damaged page is reported, with what to do, before any job is dispatched.

The SQLite ``-wal`` and ``-shm`` files are created by SQLite with the mode of
the database file, so 0600 too.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import sqlite3
import stat
from collections.abc import Sequence
from pathlib import Path
from typing import Final

from ductile.adapters.sqlite.errors import StoreCorruptError, StoreError, StoreIOError
from ductile.adapters.sqlite.schema import Migration, migrate

#: Mode of every file of the database (SQLite gives ``-wal`` and ``-shm`` the database's).
FILE_MODE: Final = 0o600
SIDE_FILES: Final = ("-wal", "-shm")
_RESTORE = "restore it from a backup (docs/operations.md, Backups)"


def connect(path: Path, busy_timeout: float) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, timeout=busy_timeout)
    try:
        conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
    except BaseException:
        conn.close()
        raise
    return conn


def use_wal(conn: sqlite3.Connection, where: str) -> None:
    mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
    if str(mode).lower() != "wal":
        raise StoreError(f"{where}: could not switch the database to WAL mode (it is {mode!r})")


def _kind_of(mode: int) -> str:
    if stat.S_ISLNK(mode):
        return "a symbolic link"
    if stat.S_ISDIR(mode):
        return "a directory"
    return "not a regular file"


def preflight(path: Path) -> bool:
    """Refuse what must not be opened (see the module's docs); True when the database exists."""
    side = {suffix: _lstat(Path(f"{path}{suffix}")) for suffix in SIDE_FILES}
    for suffix, st in side.items():
        if st is not None and not stat.S_ISREG(st.st_mode):
            target = f" (to {os.readlink(f'{path}{suffix}')})" if stat.S_ISLNK(st.st_mode) else ""
            raise StoreError(
                f"{path}{suffix} is {_kind_of(st.st_mode)}{target}: ductile refuses to open the database "
                "through it (it could make ductile write elsewhere); remove it. Nothing was changed"
            )
    st = _lstat(path)
    if st is None:
        wal = side["-wal"]
        if wal is not None and wal.st_size > 0:
            raise StoreCorruptError(
                f"{path} is missing but its write-ahead log {path}-wal ({wal.st_size} bytes) is still "
                "there: the database was deleted or moved. Put it back, or "
                f"{_RESTORE}; to start afresh with no jobs, delete {path}-wal and {path}-shm too. "
                "Nothing was changed"
            )
        return False
    if not stat.S_ISREG(st.st_mode):
        target = f" (to {os.readlink(path)})" if stat.S_ISLNK(st.st_mode) else ""
        raise StoreError(
            f"{path} is {_kind_of(st.st_mode)}{target}: the database must be a regular file in the state "
            "directory (a link could make ductile write elsewhere). Nothing was changed"
        )
    if st.st_size == 0:
        raise StoreCorruptError(
            f"{path} is empty (0 bytes): ductile never leaves an empty database, so it was truncated or "
            f"replaced. {_RESTORE[0].upper()}{_RESTORE[1:]}, or, to start afresh with no jobs, state or "
            "schedules, delete it. Nothing was changed"
        )
    return True


def _lstat(path: Path) -> os.stat_result | None:
    try:
        return os.lstat(path)
    except FileNotFoundError:
        return None
    except OSError as e:
        raise StoreIOError(f"{path}: cannot look at it: {e.strerror}") from e


def create(path: Path, migrations: Sequence[Migration], busy_timeout: float) -> None:
    """Make the database at ``path`` whole, or leave nothing (see the module's docs). A file that
    appeared at ``path`` meanwhile (another process made it) is kept and used."""
    _sweep(path)
    temp = path.with_name(f".{path.name}.new-{os.getpid()}-{secrets.token_hex(4)}")
    try:
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, FILE_MODE)
    except OSError as e:
        raise StoreIOError(f"cannot create the database {path}: {e.strerror}") from e
    try:
        os.fchmod(fd, FILE_MODE)  # whatever the umask
        os.close(fd)
        conn = connect(temp, busy_timeout)
        try:
            use_wal(conn, str(path))
            migrate(conn, str(path), migrations)
        finally:
            conn.close()  # the last connection: the log is moved in and deleted
        _fsync(temp, os.O_RDONLY)
        with contextlib.suppress(FileExistsError):
            os.link(temp, path)
        _fsync(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    except OSError as e:
        raise StoreIOError(f"cannot create the database {path}: {e.strerror}") from e
    finally:
        for leftover in (temp, *(Path(f"{temp}{suffix}") for suffix in SIDE_FILES)):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(leftover)


def _sweep(path: Path) -> None:
    """Remove what a process killed while making a database left behind (its pid is gone)."""
    prefix = f".{path.name}.new-"
    try:
        names = os.listdir(path.parent)
    except OSError:
        return
    for name in names:
        if not name.startswith(prefix):
            continue
        pid = name[len(prefix) :].split("-", 1)[0]
        if not pid.isdigit() or _alive(int(pid)):
            continue
        with contextlib.suppress(OSError):
            os.unlink(path.parent / name)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _fsync(path: Path, flags: int) -> None:
    fd = os.open(path, flags | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def check_integrity(conn: sqlite3.Connection, where: str) -> None:
    """``PRAGMA quick_check``: :class:`StoreCorruptError` naming the damage and what to do."""
    try:
        rows = conn.execute("PRAGMA quick_check(5)").fetchall()
    except sqlite3.DatabaseError as e:
        found = str(e)
    else:
        if [tuple(r) for r in rows] == [("ok",)]:
            return
        found = "; ".join(str(r[0]).replace("\n", "; ") for r in rows)
    raise StoreCorruptError(
        f"{where} is damaged (SQLite's quick_check: {found}). Stop here: {_RESTORE}; "
        "`ductile selfcheck` shows the details. Nothing was changed"
    )
