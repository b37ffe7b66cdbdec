"""Who a plugin runs as (``service.plugin_user``, ``plugins.<name>.user``), and what that user may do.

A plugin started by the daemon's own user can read what that user can read:
``/proc/<daemon pid>/environ`` (the secrets the daemon got from its
environment) and the config file. When ductile runs as root it can start
each plugin as an unprivileged user instead (ADR 0041): the spawner switches
uid, gid and supplementary groups in the child before ``exec``, and sets
``HOME``, ``USER`` and ``LOGNAME`` to that user's.

* :func:`resolve` turns a user name or numeric uid into a :class:`RunAs`
  (uid, primary gid, supplementary groups, home) with the system's user
  database, or says why it cannot.
* :func:`problem` is the trust check that goes with it (at load and before
  every spawn): only root may start a process as another user; the user
  must be able to reach and run the entrypoint (search permission on every
  directory from ``/``, read permission too for a ``#!`` script) and to
  read its plugin folder; and must *not* be able to write the entrypoint or
  the plugin folder (a plugin must not rewrite what it runs as).

Permissions are judged from the mode bits (owner, group, others), as the
kernel does without ACLs.
"""

from __future__ import annotations

import os
import pwd
import stat

import attrs

from ductile.domain.errors import DuctileError

R, W, X = 4, 2, 1


def user_name(uid: int) -> str:
    """``uid 999 (ductile)``."""
    try:
        return f"uid {uid} ({pwd.getpwuid(uid).pw_name})"
    except KeyError:
        return f"uid {uid}"


class RunAsError(DuctileError):
    """The configured user cannot be used (no such user)."""


@attrs.frozen(kw_only=True)
class RunAs:
    name: str
    uid: int
    gid: int
    groups: tuple[int, ...]
    home: str


def resolve(user: str) -> RunAs:
    """The user ``user`` (a name, or a uid written as digits)."""
    try:
        entry = pwd.getpwuid(int(user)) if user.isdigit() else pwd.getpwnam(user)
    except (KeyError, OverflowError):
        raise RunAsError(f"there is no user '{user}' on this machine") from None
    try:
        groups = tuple(sorted(set(os.getgrouplist(entry.pw_name, entry.pw_gid))))
    except OSError:  # pragma: no cover - the group database cannot be read
        groups = (entry.pw_gid,)
    return RunAs(name=entry.pw_name, uid=entry.pw_uid, gid=entry.pw_gid, groups=groups, home=entry.pw_dir)


def allowed(st: os.stat_result, who: RunAs, want: int) -> bool:
    """May ``who`` do ``want`` (``R``, ``W``, ``X``, or'ed) to a file of this ``stat``, by its mode bits?"""
    if who.uid == 0:
        return not (want & X) or bool(st.st_mode & 0o111) or stat.S_ISDIR(st.st_mode)
    mode = st.st_mode
    if st.st_uid == who.uid:
        bits = (mode >> 6) & 7
    elif st.st_gid in who.groups:
        bits = (mode >> 3) & 7
    else:
        bits = mode & 7
    return bits & want == want


def _describe(path: str, st: os.stat_result) -> str:
    return f"{path} (mode {stat.S_IMODE(st.st_mode):04o}, owner uid {st.st_uid}, group {st.st_gid})"


def problem(who: RunAs, *, setting: str, directory: str, executable: str) -> str | None:
    """Why ``who`` (named by ``setting``) cannot run ``executable`` in ``directory``; None when it can."""
    me = os.geteuid()
    if me not in (who.uid, 0):
        return (
            f"it must run as user {who.name} ({setting}), but ductile runs as uid {me}, not root: only "
            "root can start a process as another user"
        )
    try:
        return _reach(who, setting, executable) or _files(who, setting, directory, executable)
    except OSError as exc:
        return f"cannot check what user {who.name} ({setting}) may do: {exc.strerror} ({exc.filename})"


def _reach(who: RunAs, setting: str, executable: str) -> str | None:
    for path in _ancestors(executable):
        st = os.stat(path)
        if not allowed(st, who, X):
            return (
                f"user {who.name} ({setting}) cannot reach its entrypoint: no search permission on "
                f"{_describe(path, st)}; give that user x on every directory on the way"
            )
    return None


def _files(who: RunAs, setting: str, directory: str, executable: str) -> str | None:
    user = f"user {who.name} ({setting})"
    st = os.stat(executable)
    if not allowed(st, who, R | X if _is_script(executable) else X):
        return f"{user} cannot run {_describe(executable, st)}"
    if who.uid != 0 and allowed(st, who, W):
        return f"{user} could rewrite what it runs: {_describe(executable, st)}"
    st = os.stat(directory)
    if not allowed(st, who, R | X):
        return f"{user} cannot read its plugin folder {_describe(directory, st)}"
    if who.uid != 0 and allowed(st, who, W):
        return f"{user} could change its own plugin folder {_describe(directory, st)}"
    return None


def _ancestors(path: str) -> list[str]:
    """Every directory from ``/`` down to ``path``'s folder."""
    out = []
    here = os.path.dirname(path)
    while True:
        out.append(here)
        parent = os.path.dirname(here)
        if parent == here:
            break
        here = parent
    return list(reversed(out))


def _is_script(path: str) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(2) == b"#!"
    except OSError:
        return True
