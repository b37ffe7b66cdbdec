"""One plugin folder on disk: the trust checks at load and again before each spawn (D7, D16).

The manifest's *content* is judged by :mod:`ductile.domain.plugin`; this
module judges the *files* of one folder under one plugin root. The rules
(ADR 0012):

- A plugin folder may be a symlink only if it resolves inside its root (and
  not to the root itself). Entries whose name starts with ``.`` are hidden.
- The entrypoint is ``<root>/<folder>/<entrypoint>``, relative and without
  ``..``; resolved with symlinks it must stay inside the root (not
  necessarily inside the plugin's own folder: a plugin may point at shared
  code in, say, ``<root>/.shared``). It must be a regular, executable file.
- Nothing on the way may be world-writable: the root itself (then every
  plugin in it is refused with that one reason), the plugin's folder, every
  directory between the root and the entrypoint, the entrypoint and
  ``manifest.yaml``. Group-writable is allowed: the group is trusted like the
  owner. The ancestors of the root are not checked.
- The same files must belong to the user running ductile or to root (ADR
  0041): another user who owns them could change what runs, with the
  daemon's rights.
- A plugin that runs as another user (``service.plugin_user``,
  ``plugins.<name>.user``) must be runnable by that user and not writable by
  it (:func:`ductile.adapters.runas.problem`, checked by the catalog).
- ``manifest.yaml`` is read only when it is a regular file inside the root of
  at most :data:`MANIFEST_MAX_BYTES`, with the config's YAML reader
  (:mod:`ductile.adapters.config.yaml_tree`, ADR 0011): no tag builds an
  object, ``no``/``on`` stay text, ``version: 1.10`` stays ``"1.10"``, a
  duplicate key is refused with its line. A refused manifest names the file,
  the key path and its line.

:func:`verify` repeats the path checks right before each spawn, because the
files may have changed since load.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator

from ductile.adapters.config.messages import format_path
from ductile.adapters.config.yaml_tree import Tree, decode, read_tree
from ductile.adapters.runas import user_name
from ductile.domain.errors import ConfigError, ManifestError
from ductile.domain.plugin import Manifest, Plugin, parse_manifest

MANIFEST_NAME = "manifest.yaml"
MANIFEST_MAX_BYTES = 64 * 1024


class RefusedError(Exception):
    """Internal: one check failed; the message is the refusal reason."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# -- the checks ---------------------------------------------------------------------------------


def load(base: str, root: str, folder: str) -> Plugin:
    """The plugin in ``<base>/<folder>`` (``root``: ``base`` resolved), every file check passed;
    :class:`RefusedError` with the reason otherwise. Its name is its manifest's."""
    link = os.path.join(base, folder)
    directory = _plugin_directory(root, link)
    manifest = _read_manifest(root, link, folder)
    executable = _entrypoint(root, link, manifest.entrypoint)
    return Plugin(manifest=manifest, directory=directory, executable=executable, root=base, link=link)


def verify(plugin: Plugin, plugins_dir: str) -> str | None:
    """The trust check before a spawn: None when ``plugin`` may run, else the refusal reason.

    Checks what may have changed since load: the plugin's root and folder
    still resolve to the same places and are not world-writable, the declared
    entrypoint still resolves to the loaded executable, which is still a
    regular, executable, not world-writable file. The manifest is not read
    again (a reload does that). ``plugins_dir`` is the root to use when the
    plugin does not name its own. Only ``stat`` calls and one ``access``: 17
    syscalls, ~70 µs, for a root three levels deep.
    """
    base = os.path.abspath(plugin.root or plugins_dir)
    root = os.path.realpath(base)
    problem = root_problem(base, root)
    if problem is not None:
        return problem
    link = plugin.link or os.path.join(base, plugin.base)
    try:
        directory = _plugin_directory(root, link)
        if directory != plugin.directory:
            return (
                f"plugin directory {link} now resolves to {directory}, not {plugin.directory} "
                "as when it was loaded; reload to accept the change"
            )
        executable = _entrypoint(root, link, plugin.manifest.entrypoint)
    except RefusedError as refusal:
        return refusal.reason
    if executable != plugin.executable:
        return (
            f"entrypoint {os.path.join(link, plugin.manifest.entrypoint)} now resolves to {executable}, "
            f"not {plugin.executable} as when it was loaded; reload to accept the change"
        )
    return None


def root_problem(base: str, root: str) -> str | None:
    try:
        st = os.stat(root)
    except FileNotFoundError:
        return f"plugins_dir {base} does not exist"
    except OSError as exc:
        return f"plugins_dir {base} cannot be read: {exc.strerror}"
    if not stat.S_ISDIR(st.st_mode):
        return f"plugins_dir {base} is not a directory"
    if st.st_mode & stat.S_IWOTH:
        return (
            f"plugins_dir {base} is world-writable ({_mode(st.st_mode)}): anyone could plant or replace "
            f"a plugin, so none is loaded; run chmod o-w {root}"
        )
    return None


def scan(root: str) -> tuple[set[str], str | None]:
    """Names of the candidate plugin directories, or the reason the listing failed."""
    names: set[str] = set()
    try:
        with os.scandir(root) as listing:
            for entry in listing:
                if entry.name.startswith("."):
                    continue
                try:
                    if entry.is_dir():  # follows symlinks: a link to a directory is a candidate
                        names.add(entry.name)
                except OSError:
                    continue
    except OSError as exc:
        return set(), f"plugins_dir {root} cannot be listed: {exc.strerror}"
    return names, None


def absence(base: str, name: str, problem: str | None) -> str:
    path = os.path.join(base, name)
    if not name or "/" in name or "\x00" in name or name in (".", ".."):
        return f"{name!r} is not a valid plugin name (it must be a directory name under plugins_dir {base})"
    if name.startswith("."):
        return f"no plugin directory {path}: names starting with '.' are hidden and never loaded"
    if problem is not None:
        return f"no plugin directory {path} ({problem})"
    if os.path.lexists(path):
        return f"no plugin directory {path} (it exists but is not a directory)"
    return f"no plugin directory {path}"


def _plugin_directory(root: str, link: str) -> str:
    """The plugin directory, resolved: strictly inside ``root``, a directory, not world-writable."""
    directory = os.path.realpath(link)
    if directory == root:
        raise RefusedError(f"plugin directory {link} resolves to plugins_dir itself")
    if not inside(directory, root):
        raise RefusedError(f"plugin directory {link} is a symlink to {directory}, outside plugins_dir {root}")
    st = _stat(directory, f"plugin directory {link}")
    if not stat.S_ISDIR(st.st_mode):
        raise RefusedError(f"plugin directory {link} is not a directory")
    _check_owner(directory, st, "plugin directory")
    if st.st_mode & stat.S_IWOTH:
        raise RefusedError(
            f"plugin directory {directory} is world-writable ({_mode(st.st_mode)}): anyone could replace "
            f"its files; run chmod o-w {directory}"
        )
    _check_directories(root, os.path.dirname(directory))
    return directory


def _read_manifest(root: str, link: str, name: str) -> Manifest:
    path = os.path.join(link, MANIFEST_NAME)
    real = os.path.realpath(path)
    if not inside(real, root):
        raise RefusedError(f"{path} is a symlink to {real}, outside plugins_dir {root}")
    try:
        # NONBLOCK: a FIFO planted as the manifest must not hang discovery.
        fd = os.open(real, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOFOLLOW)
    except FileNotFoundError:
        raise RefusedError(f"{path} is missing (every plugin needs a manifest)") from None
    except OSError as exc:
        raise RefusedError(f"{path} cannot be read: {exc.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise RefusedError(f"{path} is not a regular file")
        if st.st_mode & stat.S_IWOTH:
            raise RefusedError(f"{path} is world-writable ({_mode(st.st_mode)}); run chmod o-w {real}")
        _check_owner(real, st, "manifest")
        data = _read_capped(fd, path, st.st_size)
    finally:
        os.close(fd)
    try:
        tree = read_tree(decode(data), document="manifest")
    except ConfigError as exc:
        where = ", ".join(
            ([f"line {exc.line}"] if exc.line is not None else []) + ([f"at {exc.path}"] if exc.path else [])
        )
        where = f" ({where})" if where else ""
        raise RefusedError(f"{path} is not valid YAML{where}: {exc.detail}") from None
    try:
        return parse_manifest(_manifest_values(tree), directory_name=name)
    except ManifestError as exc:
        raise RefusedError(f"{path}: {_where(exc, tree)}{exc.detail}") from None


def _where(exc: ManifestError, tree: Tree) -> str:
    """``commands[0].typ (line 9): `` for a refusal at a key path; '' for the whole manifest."""
    if not exc.path:
        return ""
    line = None
    for end in range(len(exc.path), 0, -1):
        position = tree.lines.get(exc.path[:end])
        if position is not None:
            line = position[0]
            break
    return f"{format_path(exc.path)}{f' (line {line})' if line is not None else ''}: "


def _manifest_values(tree: Tree) -> object:
    """The manifest's values; a ``version`` written as a number keeps its text (``1.10``, not 1.1)."""
    written = tree.written.get(("version",))
    if isinstance(tree.value, dict) and written is not None:
        return {**tree.value, "version": written}
    return tree.value


def _read_capped(fd: int, path: str, size: int) -> bytes:
    too_big = f"{path} is larger than the {MANIFEST_MAX_BYTES // 1024} KiB a manifest may be"
    if size > MANIFEST_MAX_BYTES:
        raise RefusedError(too_big)
    chunks: list[bytes] = []
    total = 0
    while True:
        try:
            chunk = os.read(fd, MANIFEST_MAX_BYTES + 1 - total)
        except OSError as exc:
            raise RefusedError(f"{path} cannot be read: {exc.strerror}") from None
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
        total += len(chunk)
        if total > MANIFEST_MAX_BYTES:  # the file grew while we read it
            raise RefusedError(too_big)


def _entrypoint(root: str, link: str, entrypoint: str) -> str:
    """The executable, resolved; every path check on the way to it."""
    declared = os.path.join(link, entrypoint)
    parts = [p for p in entrypoint.split("/") if p not in ("", ".")]
    if not parts or ".." in parts or os.path.isabs(entrypoint):
        # parse_manifest refuses these already; never trust a single guard with paths.
        raise RefusedError(f"entrypoint '{entrypoint}' must be a relative path without '..'")
    # Directories named on the declared path, resolved (bin/ may be a symlink).
    for depth in range(1, len(parts)):
        prefix = os.path.join(link, *parts[:depth])
        real = os.path.realpath(prefix)
        if not inside(real, root):
            raise RefusedError(
                f"entrypoint {declared}: {prefix} resolves to {real}, outside plugins_dir {root}"
            )
        if os.path.isdir(real):
            _check_directories(root, real)
    executable = os.path.realpath(declared)
    if not inside(executable, root) or executable == root:
        raise RefusedError(f"entrypoint {declared} resolves to {executable}, outside plugins_dir {root}")
    st = _stat(executable, f"entrypoint {declared}")
    if not stat.S_ISREG(st.st_mode):
        raise RefusedError(f"entrypoint {declared} is not a regular file")
    if st.st_mode & stat.S_IWOTH:
        raise RefusedError(
            f"entrypoint {executable} is world-writable ({_mode(st.st_mode)}): anyone could change "
            f"what runs; run chmod o-w {executable}"
        )
    _check_owner(executable, st, "entrypoint")
    if not st.st_mode & 0o111:
        raise RefusedError(
            f"entrypoint {declared} is not executable ({_mode(st.st_mode)}); run chmod +x {executable}"
        )
    if not os.access(executable, os.X_OK):
        raise RefusedError(
            f"entrypoint {declared} is not executable by this user ({_mode(st.st_mode)}, owner uid "
            f"{st.st_uid}), or its filesystem is mounted noexec"
        )
    _check_directories(root, os.path.dirname(executable))
    return executable


def _check_directories(root: str, directory: str) -> None:
    """No directory from ``directory`` up to (not including) ``root`` is world-writable."""
    for path in _between(root, directory):
        st = _stat(path, f"directory {path}")
        if st.st_mode & stat.S_IWOTH:
            raise RefusedError(
                f"directory {path} is world-writable ({_mode(st.st_mode)}): anyone could replace the "
                f"plugin's files; run chmod o-w {path}"
            )
        _check_owner(path, st, "directory")


def _check_owner(path: str, st: os.stat_result, what: str) -> None:
    """Owned by the user running ductile or by root: another owner could change what runs."""
    me = os.geteuid()
    if st.st_uid not in (me, 0):
        raise RefusedError(
            f"{what} {path} is owned by {user_name(st.st_uid)}, not by the user running ductile "
            f"({user_name(me)}) or root: its owner could change what runs with ductile's rights; "
            f"chown it to one of them"
        )


def _between(root: str, directory: str) -> Iterator[str]:
    path = directory
    while path != root and inside(path, root):
        yield path
        parent = os.path.dirname(path)
        if parent == path:
            return
        path = parent


def _stat(path: str, what: str) -> os.stat_result:
    try:
        return os.stat(path)
    except FileNotFoundError:
        raise RefusedError(f"{what} does not exist") from None
    except OSError as exc:
        raise RefusedError(f"{what} cannot be read: {exc.strerror}") from None


def inside(path: str, root: str) -> bool:
    """``path`` is ``root`` or below it (both absolute and normalized); ``/a/bc`` is not inside ``/a/b``."""
    if path == root:
        return True
    prefix = root if root.endswith("/") else root + "/"
    return path.startswith(prefix)


def _mode(mode: int) -> str:
    return f"mode {stat.S_IMODE(mode):04o}"
