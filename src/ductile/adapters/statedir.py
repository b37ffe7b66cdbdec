"""The state directory: made private, and refused when someone else could have planted or changed it.

It holds the database (every job, plugin state with its tokens) and the
instance lock. The rules (ADR 0040), checked by the daemon before it takes the
lock and by every command that opens the database:

* **Made private.** A missing state directory is created with mode 0700
  whatever the umask (its parents as the umask says); the files ductile
  creates in it are 0600 (the database's ``-wal`` and ``-shm`` take the
  database's mode). An existing file readable by others (made by an older
  ductile) is tightened to 0600.
* **Ours alone.** The directory must be owned by the user running ductile
  and writable by no one else (not group- or world-writable): anyone who
  can write there can replace the database or plant a link. A
  ``state_dir`` that is a symbolic link is followed only when the link
  itself belongs to that user or to root (a link planted in ``/tmp`` by
  another user is refused). Each of ductile's files in it must be a regular
  file (never a symbolic link: ductile would write through it), owned by
  that user, writable by no one else.
* **Usable.** A state directory that cannot be created, is not a directory,
  is on a read-only filesystem or is not writable gets one line naming the
  path and the cause, never a traceback.

Once the directory passes, nobody but its owner can add or swap an entry in
it, so checking the entries by name (``lstat``) is not racy for anyone else.
The ancestors of the state directory are not checked (``/var/lib`` belongs to
root, ``/tmp`` is sticky and world-writable: that is normal).
"""

from __future__ import annotations

import errno
import os
import pwd
import stat
from collections.abc import Iterable
from pathlib import Path

from ductile.adapters.runas import user_name
from ductile.domain.errors import DuctileError

DIR_MODE = 0o700
FILE_MODE = 0o600
#: The files of a state directory ductile checks (the database's names come from its caller).
LOCK_FILE = "ductile.lock"
#: The database in the state directory, and its files (checked with the lock, ADR 0040).
DB_NAME = "ductile.db"
DB_FILES = (DB_NAME, f"{DB_NAME}-wal", f"{DB_NAME}-shm")


def database_path(state_dir: str) -> Path:
    """Where the daemon keeps its database in ``state_dir``."""
    return Path(state_dir) / DB_NAME


class StateDirError(DuctileError):
    """The state directory cannot be used, or must not be trusted; the message says why and what to do."""


def _why(exc: OSError) -> str:
    name = errno.errorcode.get(exc.errno or 0)
    return f"{exc.strerror or exc}" + (f" ({name})" if name else "")


def prepare(state_dir: str, files: Iterable[str] = (), *, create: bool = True) -> bool:
    """Check (and, with ``create``, make) the state directory and ``files`` in it; see the module.

    Returns False when the directory does not exist and ``create`` is False (nothing to
    read there yet). Raises :class:`StateDirError`.
    """
    path = os.path.abspath(state_dir)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        if not create:
            return False
        _make(path)
        st = os.lstat(path)
    except OSError as exc:
        raise StateDirError(f"state dir {path}: cannot look at it: {_why(exc)}") from exc
    if stat.S_ISLNK(st.st_mode):
        _trust_link(path, st)
        try:
            st = os.stat(path)
        except OSError as exc:
            raise StateDirError(
                f"state dir {path} is a symbolic link to {os.readlink(path)}, which cannot be used: "
                f"{_why(exc)}"
            ) from exc
    if not stat.S_ISDIR(st.st_mode):
        raise StateDirError(f"state dir {path} is not a directory; point service.state_dir at a directory")
    _trust_directory(path, st)
    _usable(path)
    for name in files:
        _trust_file(os.path.join(path, name))
    return True


def _make(path: str) -> None:
    parent = os.path.dirname(path)
    try:
        os.makedirs(parent, exist_ok=True)
        os.mkdir(path, DIR_MODE)
        os.chmod(path, DIR_MODE)  # whatever the umask
    except FileExistsError:  # made meanwhile (by whom? the checks that follow will say)
        return
    except OSError as exc:
        raise StateDirError(f"cannot create state dir {path}: {_why(exc)}") from exc


def _trust_link(path: str, st: os.stat_result) -> None:
    me = os.geteuid()
    if st.st_uid not in (me, 0):
        raise StateDirError(
            f"state dir {path} is a symbolic link owned by {user_name(st.st_uid)}, not by the user running "
            f"ductile ({user_name(me)}) or root: whoever owns it could point ductile's database anywhere. "
            "Remove it, or set service.state_dir to the real directory"
        )


def _trust_directory(path: str, st: os.stat_result) -> None:
    me = os.geteuid()
    if st.st_uid != me:
        raise StateDirError(
            f"state dir {path} is owned by {user_name(st.st_uid)}, not by the user running ductile "
            f"({user_name(me)}): run ductile as that user (e.g. sudo -u {_name(st.st_uid)} ductile ...), "
            f"or, if the directory is really yours, chown it to {_name(me)}"
        )
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise StateDirError(
            f"state dir {path} is writable by others (mode {stat.S_IMODE(st.st_mode):04o}): anyone who can "
            f"write there can replace the database or plant a link. Run chmod 700 {path}"
        )


def _name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def _usable(path: str) -> None:
    try:
        vfs = os.statvfs(path)
    except OSError as exc:
        raise StateDirError(f"state dir {path}: cannot look at its filesystem: {_why(exc)}") from exc
    if vfs.f_flag & os.ST_RDONLY:
        raise StateDirError(
            f"state dir {path} is on a read-only filesystem: ductile must write its database there "
            "(remount it read-write, or point service.state_dir elsewhere; under systemd, see "
            "ReadWritePaths=)"
        )
    if not os.access(path, os.W_OK | os.X_OK):
        raise StateDirError(f"state dir {path} is not writable by {user_name(os.geteuid())}")


def _trust_file(path: str) -> None:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise StateDirError(f"{path}: cannot look at it: {_why(exc)}") from exc
    if stat.S_ISLNK(st.st_mode):
        raise StateDirError(
            f"{path} is a symbolic link (to {os.readlink(path)}): ductile opens its files only as regular "
            "files in the state directory, never through a link (it could make ductile write elsewhere). "
            "Remove the link"
        )
    if not stat.S_ISREG(st.st_mode):
        raise StateDirError(f"{path} is not a regular file; remove it")
    me = os.geteuid()
    if st.st_uid != me:
        raise StateDirError(
            f"{path} is owned by {user_name(st.st_uid)}, not by the user running ductile ({user_name(me)}): "
            f"it was probably made by running ductile as another user. Run chown {_name(me)} {path}"
        )
    mode = stat.S_IMODE(st.st_mode)
    if mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise StateDirError(f"{path} is writable by others (mode {mode:04o}); run chmod 600 {path}")
    if mode & 0o077:
        try:  # by name, never through a descriptor: closing one would drop SQLite's locks
            os.chmod(path, FILE_MODE)
        except OSError as exc:
            raise StateDirError(f"{path}: cannot make it private (chmod 600): {_why(exc)}") from exc
