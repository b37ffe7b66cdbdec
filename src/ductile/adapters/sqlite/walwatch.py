"""The store's own files under a running daemon: a deleted ``-wal`` or ``-shm`` is noticed and mended.

SQLite keeps the write-ahead log (``<db>-wal``) and its shared-memory index
(``<db>-shm``) open for as long as a connection lives. A careless ``rm
ductile.db-wal`` unlinks the name only: this process goes on writing into
the unlinked file, which holds every committed transaction not yet
checkpointed, while any other process (``ductile run``, ``sqlite3``) opening
the database creates a new, empty log at the name and fails with "disk I/O
error" — and once this process ends without a checkpoint, those transactions
are gone.

:class:`FileWatch` remembers the identity (device, inode) of both files when
the writer opens its connection and tells, from the writer's upkeep (about
once a second), when a name no longer leads to the file this process has
open. The store then (:meth:`SqliteStore._mend_files`) checkpoints the open
log into the database at once — nothing committed is lost — and reopens its
connections, so every process uses the files at the names again.
"""

from __future__ import annotations

import os
from pathlib import Path

import attrs

from ductile.adapters.sqlite.opening import SIDE_FILES


@attrs.frozen
class FileId:
    device: int
    inode: int


def file_id(path: Path) -> FileId | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return FileId(st.st_dev, st.st_ino)


class FileWatch:
    """The identities of a database's ``-wal`` and ``-shm`` files, as this process opened them."""

    def __init__(self, database: Path) -> None:
        self._paths = {suffix: Path(f"{database}{suffix}") for suffix in SIDE_FILES}
        self._known: dict[str, FileId | None] = {}

    def remember(self) -> None:
        """Record the files now at the names (call once the connections have them open)."""
        self._known = {suffix: file_id(path) for suffix, path in self._paths.items()}

    def replaced(self) -> list[str]:
        """The names (``-wal``, ``-shm``) that no longer lead to the file this process has open:
        deleted, or another file put in their place."""
        gone = []
        for suffix, known in self._known.items():
            if known is not None and file_id(self._paths[suffix]) != known:
                gone.append(suffix)
        return gone
