"""What ``ductile selfcheck`` asks of the database, and ``ductile backup``'s online copy.

Both only read the database (a read connection: they can run while the
daemon writes) and never create it.

* :func:`inspect` returns one :class:`Finding` per check: the file itself
  (what :func:`~.opening.preflight` would refuse), ``PRAGMA integrity_check``
  in full, the schema version, the write-ahead log (left over after a crash,
  grown large because checkpoints are starved, without its database) and
  the free space (what a full disk would need, :func:`~.faults.measure_space`).
* :func:`backup` copies the database with SQLite's online backup API into a
  new file: written under a temporary name next to the target, made a
  standalone file (``journal_mode=DELETE``), checked (``integrity_check``),
  then linked into place, never over an existing file.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import sqlite3
from pathlib import Path
from typing import Final

import attrs

from ductile.adapters.sqlite.errors import StoreError
from ductile.adapters.sqlite.faults import fault_kind, measure_space, mib
from ductile.adapters.sqlite.opening import FILE_MODE, preflight
from ductile.adapters.sqlite.schema import SCHEMA_VERSION, user_version

OK: Final = "ok"
WARN: Final = "warn"
FAIL: Final = "fail"
#: A write-ahead log this big means checkpoints cannot keep up (a long-lived reader?).
BIG_LOG: Final = 64 * 1024 * 1024
#: Problems ``integrity_check`` lists at most.
MAX_PROBLEMS: Final = 10


@attrs.frozen
class Finding:
    check: str
    #: ``ok``, ``warn`` (worth a look; nothing is broken) or ``fail``.
    status: str
    detail: str


def _read_only(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, timeout=5.0)
    conn.execute("PRAGMA query_only = ON")
    return conn


def inspect(path: Path, *, daemon_running: bool) -> list[Finding]:
    """Every check of the database at ``path`` (see the module's docs)."""
    try:
        exists = preflight(path)
    except StoreError as e:
        return [Finding("database", FAIL, str(e))]
    if not exists:
        return [Finding("database", OK, f"no database yet at {path} (ductile has not run here)")]
    findings = [Finding("database", OK, f"{path}, {mib(path.stat().st_size)}")]
    log = _log(path, daemon_running=daemon_running)  # before a connection applies a leftover log
    try:
        conn = _read_only(path)
    except sqlite3.Error as e:
        return [*findings, Finding("integrity", FAIL, f"{path} cannot be opened: {e}")]
    try:
        findings.append(_integrity(conn))
        findings.append(_schema(conn))
    finally:
        conn.close()
    findings.append(log)
    findings.append(_space(path))
    return findings


def _integrity(conn: sqlite3.Connection) -> Finding:
    try:
        rows = [str(r[0]) for r in conn.execute(f"PRAGMA integrity_check({MAX_PROBLEMS})").fetchall()]
    except sqlite3.DatabaseError as e:
        rows = [str(e)]
    if rows == ["ok"]:
        return Finding("integrity", OK, "PRAGMA integrity_check: ok")
    shown = "; ".join(row.replace("\n", "; ") for row in rows)
    return Finding(
        "integrity",
        FAIL,
        f"the database is damaged: {shown}. Restore it from a backup (docs/operations.md, Backups)",
    )


def _schema(conn: sqlite3.Connection) -> Finding:
    try:
        version = user_version(conn)
    except sqlite3.DatabaseError as e:
        return Finding("schema", FAIL, f"cannot read the schema version: {e}")
    if version == SCHEMA_VERSION:
        return Finding("schema", OK, f"version {version}, the one this ductile writes")
    if version < SCHEMA_VERSION:
        return Finding(
            "schema", WARN, f"version {version}: the daemon migrates it to {SCHEMA_VERSION} at its next start"
        )
    return Finding(
        "schema",
        FAIL,
        f"version {version}, newer than the {SCHEMA_VERSION} this ductile understands: upgrade ductile",
    )


def _log(path: Path, *, daemon_running: bool) -> Finding:
    wal = Path(f"{path}-wal")
    try:
        size = wal.stat().st_size
    except FileNotFoundError:
        return Finding("write-ahead log", OK, "none (everything is in the database file)")
    if size > BIG_LOG:
        return Finding(
            "write-ahead log",
            WARN,
            f"{wal} holds {mib(size)}: checkpoints cannot keep up (a process keeping a read "
            "transaction open, such as a sqlite3 shell?)",
        )
    if not daemon_running and size > 0:
        return Finding(
            "write-ahead log",
            WARN,
            f"{wal} ({mib(size)}) is left from a daemon that did not stop cleanly; it holds committed "
            "transactions and is applied at the next start: keep it with the database (never delete it)",
        )
    return Finding("write-ahead log", OK, f"{mib(size)}")


def _space(path: Path) -> Finding:
    space = measure_space(path)
    if space is None:
        return Finding("free space", WARN, f"cannot tell the free space in {path.parent}")
    if space.free < space.needed:
        return Finding(
            "free space",
            FAIL,
            f"{mib(space.free)} free in {space.directory}; the database needs at least "
            f"{mib(space.needed)} to move its write-ahead log in and carry on",
        )
    detail = f"{mib(space.free)} free in {space.directory}"
    return Finding("free space", OK, detail)


def refusal(path: Path, *, lock_wait: float = 1.0) -> str | None:
    """Why a write to the database would fail now, as seen from another process (``ductile
    status``): less free space than it needs to carry on, or its write lock held by someone for
    longer than ``lock_wait`` seconds (the daemon holds it for milliseconds). None: writes work."""
    space = measure_space(path)
    if space is not None and space.free < space.needed:
        return (
            f"the disk is full: {mib(space.free)} free in {space.directory}, the database needs at least "
            f"{mib(space.needed)} to carry on"
        )
    try:
        conn = sqlite3.connect(path, isolation_level=None, timeout=lock_wait)
    except sqlite3.Error as e:
        return f"{path} cannot be opened: {e}"
    try:
        conn.execute(f"PRAGMA busy_timeout = {int(lock_wait * 1000)}")
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("ROLLBACK")
    except sqlite3.Error as e:
        if fault_kind(e) == "busy":
            return (
                f"its write lock has been held by another process for more than {lock_wait:g} s (a sqlite3 "
                "shell inside a transaction? a VACUUM?): nothing can be written meanwhile"
            )
        return f"{path}: {e}"
    finally:
        conn.close()
    return None


# --------------------------------------------------------------------------- backup


@attrs.frozen
class Backup:
    path: Path
    size: int
    schema_version: int
    jobs: int


def backup(source: Path, target: Path) -> Backup:
    """Copy the database at ``source`` to the new file ``target`` (see the module's docs).
    Raises :class:`StoreError` with one line: ``target`` exists, the copy failed..."""
    if os.path.lexists(target):
        raise StoreError(
            f"{target} already exists: ductile backup never overwrites a file; choose a new name"
        )
    if not target.parent.is_dir():
        raise StoreError(f"cannot write {target}: {target.parent} is not a directory")
    if not preflight(source):
        raise StoreError(f"no database at {source} (ductile has not run here): nothing to back up")
    temp = target.with_name(f".{target.name}.partial-{os.getpid()}-{secrets.token_hex(4)}")
    try:
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, FILE_MODE)
        os.fchmod(fd, FILE_MODE)
        os.close(fd)
        result = _copy(source, temp)
        fd = os.open(temp, os.O_RDONLY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.link(temp, target)  # never over a file that appeared meanwhile
    except FileExistsError as e:
        raise StoreError(f"{target} already exists: ductile backup never overwrites a file") from e
    except OSError as e:
        raise StoreError(f"cannot write the backup {target}: {e.strerror or e}") from e
    finally:
        for leftover in (temp, Path(f"{temp}-journal")):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(leftover)
    return attrs.evolve(result, path=target, size=target.stat().st_size)


def _copy(source: Path, temp: Path) -> Backup:
    src = _read_only(source)
    try:
        dst = sqlite3.connect(temp, isolation_level=None)
        try:
            src.backup(dst)  # one step: one consistent snapshot, while the daemon writes on
            dst.execute("PRAGMA journal_mode = DELETE")  # a standalone file, no -wal to carry along
            rows = [str(r[0]) for r in dst.execute(f"PRAGMA integrity_check({MAX_PROBLEMS})")]
            if rows != ["ok"]:
                raise StoreError(f"the copy of {source} is damaged ({'; '.join(rows)}); nothing was kept")
            jobs = int(dst.execute("SELECT count(*) FROM jobs").fetchone()[0])
            return Backup(path=temp, size=0, schema_version=user_version(dst), jobs=jobs)
        finally:
            dst.close()
    except sqlite3.Error as e:
        raise StoreError(f"backing up {source} failed: {e}") from e
    finally:
        src.close()
