"""builtin:file_watch and builtin:folder_watch through the real spawner (docs/builtins.md).

Each poll gets the state the previous one saved, as the dispatcher would
give it. The files are real files in a temporary folder; one hostile case
is a symlink inside the watched folder pointing outside it.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import pytest

from ductile.domain.classify import Verdict
from ductile.domain.job import JobEvent
from tests.support.builtin import run


@pytest.fixture
def root(tmp_path: Path) -> Path:
    folder = tmp_path / "plugins"
    folder.mkdir(mode=0o755)
    return folder


class Poller:
    """Polls one built-in again and again, carrying its state along as ductile does."""

    def __init__(self, name: str, config: dict[str, Any], root: Path) -> None:
        self.name, self.config, self.root = name, config, root
        self.state: dict[str, Any] = {}

    def poll(self) -> Verdict:
        verdict = run(self.name, self.config, "poll", tmp=self.root, state=self.state)
        assert verdict.succeeded, verdict.error
        assert verdict.response is not None
        self.state.update(verdict.response.state_updates)
        return verdict

    def events(self) -> list[tuple[str, dict[str, Any]]]:
        response = self.poll().response
        assert response is not None
        return [(e.type, dict(e.payload)) for e in response.events]


def _sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


# ----------------------------------------------------------------------------- file_watch


def test_file_watch_emits_a_change_with_old_and_new_digests(root: Path, tmp_path: Path) -> None:
    watched = tmp_path / "hosts"
    watched.write_bytes(b"one")
    poller = Poller("file_watch", {"paths": [str(watched)]}, root)
    assert poller.events() == []  # the first look records, it does not report
    assert poller.events() == []
    watched.write_bytes(b"two")
    [(kind, payload)] = poller.events()
    assert kind == "file.changed"
    assert (payload["path"], payload["old_digest"], payload["new_digest"]) == (
        str(watched),
        _sha(b"one"),
        _sha(b"two"),
    )
    assert poller.events() == []


def test_file_watch_reports_a_missing_file_without_failing(root: Path, tmp_path: Path) -> None:
    present, absent = tmp_path / "a", tmp_path / "never"
    present.write_bytes(b"a")
    poller = Poller("file_watch", {"paths": [str(present), str(absent)]}, root)
    first = poller.poll()
    assert first.response is not None
    assert f"missing: {absent}" in (first.response.result or "")
    present.unlink()
    [(_, gone)] = poller.events()
    assert (gone["old_digest"], gone["new_digest"], gone["exists"]) == (_sha(b"a"), None, False)
    present.write_bytes(b"back")
    [(_, back)] = poller.events()
    assert (back["old_digest"], back["new_digest"], back["exists"]) == (None, _sha(b"back"), True)


def test_file_watch_mtime_mode_sees_a_touch(root: Path, tmp_path: Path) -> None:
    watched = tmp_path / "log"
    watched.write_bytes(b"same")
    poller = Poller("file_watch", {"paths": [str(watched)], "mode": "mtime"}, root)
    assert poller.events() == []
    os.utime(watched, ns=(1_000_000_000, 1_000_000_000))
    [(_, payload)] = poller.events()
    assert payload["new_digest"] == "mtime:1000000000:size:4"
    assert payload["old_digest"].startswith("mtime:")


def test_file_watch_refuses_a_bad_config(root: Path) -> None:
    relative = run("file_watch", {"paths": ["etc/hosts"]}, "poll", tmp=root)
    assert not relative.retryable
    assert "paths must be absolute" in (relative.error or "")
    mode = run("file_watch", {"paths": ["/etc/hosts"], "mode": "md5"}, "poll", tmp=root)
    assert "mode must be one of sha256, mtime" in (mode.error or "")


# ----------------------------------------------------------------------------- folder_watch


def test_folder_watch_emits_one_event_per_created_changed_and_removed_file(
    root: Path, tmp_path: Path
) -> None:
    inbox = tmp_path / "inbox"
    (inbox / "sub").mkdir(parents=True)
    (inbox / "keep.csv").write_bytes(b"k")
    (inbox / "edit.csv").write_bytes(b"1")
    (inbox / "gone.csv").write_bytes(b"g")
    (inbox / "skip.txt").write_bytes(b"t")
    config = {"path": str(inbox), "pattern": "*.csv", "recursive": True, "mode": "sha256"}
    poller = Poller("folder_watch", config, root)
    assert poller.events() == []
    (inbox / "edit.csv").write_bytes(b"2")
    (inbox / "gone.csv").unlink()
    (inbox / "sub" / "new.csv").write_bytes(b"n")
    (inbox / "other.txt").write_bytes(b"o")
    got = {
        payload["relative"]: (kind, payload["old_digest"], payload["new_digest"])
        for kind, payload in poller.events()
    }
    assert got == {
        "edit.csv": ("file.changed", _sha(b"1"), _sha(b"2")),
        "gone.csv": ("file.removed", _sha(b"g"), None),
        "sub/new.csv": ("file.created", None, _sha(b"n")),
    }
    assert poller.events() == []


def test_folder_watch_without_recursive_stays_at_the_top(root: Path, tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    (inbox / "sub").mkdir(parents=True)
    poller = Poller("folder_watch", {"path": str(inbox)}, root)
    poller.poll()
    (inbox / "sub" / "deep").write_bytes(b"d")
    (inbox / "top").write_bytes(b"t")
    assert [(k, p["relative"]) for k, p in poller.events()] == [("file.created", "top")]


def test_folder_watch_does_not_follow_a_symlink_out_of_the_folder(root: Path, tmp_path: Path) -> None:
    inbox, elsewhere = tmp_path / "inbox", tmp_path / "elsewhere"
    inbox.mkdir()
    (elsewhere / "dir").mkdir(parents=True)
    secret = elsewhere / "secret"
    secret.write_bytes(b"s")
    (elsewhere / "dir" / "deep").write_bytes(b"d")
    poller = Poller("folder_watch", {"path": str(inbox), "recursive": True}, root)
    poller.poll()
    (inbox / "link").symlink_to(secret)
    (inbox / "linkdir").symlink_to(elsewhere / "dir", target_is_directory=True)
    (inbox / "real").write_bytes(b"r")
    (inbox / "inner").symlink_to(inbox / "real")
    verdict = poller.poll()
    assert verdict.response is not None
    seen = {e.payload["relative"] for e in verdict.response.events}
    assert seen == {"real", "inner"}  # a link to a file inside the folder is fine
    assert not any("secret" in str(e.payload) or "deep" in str(e.payload) for e in verdict.response.events)
    assert "link" not in poller.state["files"]
    assert any("link" in line.message and "outside" in line.message for line in verdict.response.logs)
    secret.write_bytes(b"changed")
    assert poller.events() == []


def test_folder_watch_watches_at_most_max_files(root: Path, tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    for i in range(5):
        (inbox / f"f{i}").write_bytes(b"x")
    poller = Poller("folder_watch", {"path": str(inbox), "max_files": 3}, root)
    verdict = poller.poll()
    assert verdict.response is not None
    assert sorted(poller.state["files"]) == ["f0", "f1", "f2"]
    assert "more than max_files (3)" in (verdict.response.result or "")


def test_folder_watch_on_a_missing_folder_fails_with_its_name(root: Path, tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    verdict = run("folder_watch", {"path": str(missing)}, "poll", tmp=root)
    assert verdict.event is JobEvent.FAIL
    assert f"{missing} is not a folder" in (verdict.error or "")
    relative = run("folder_watch", {"path": "inbox"}, "poll", tmp=root)
    assert not relative.retryable
    assert "absolute" in (relative.error or "")
