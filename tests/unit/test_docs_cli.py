"""docs/cli.md against the argument parser and the verbs' output, both ways.

Conventions of the doc (the tests parse them):

- every verb has a section headed ``### `ductile <verb>` `` (``config check``
  for the nested one), and no other section is headed like that;
- the table in a verb's section lists its flags and arguments, one per row,
  the first cell holding the option strings in backticks (`` `--limit` ``),
  a required argument as `` `<metavar>` `` or an optional one as
  `` `[<metavar>]` ``; the options every verb takes (``--config``,
  ``--debug``, ``-h/--help``) are listed once, under "Options every verb
  takes", and nowhere else is required;
- a Default cell that is one value in backticks is the parser's default;
  every choice of an option appears in backticks in its Value cell;
- the exit codes table (``<!-- exit-codes -->``) lists exactly the codes
  ``ductile.app.cli.context`` defines (``EXIT_*``);
- the JSON table (``<!-- json-keys -->``) has a row `` `ductile <verb>` ``
  for exactly the verbs that take ``--json``, with the top-level keys the
  verb prints, and rows for the shared ``job``, ``transition`` and
  ``run record`` objects.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import re
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from ductile.app.cli import context, main
from ductile.app.cli.context import Context
from ductile.app.cli.jsondoc import job_json, run_json, transition_json
from ductile.app.cli.parser import DEFAULT_WAIT_SECONDS, build_parser
from ductile.domain.activity import Activity, Kind
from ductile.domain.job import Actor, Job, JobStatus, SubmittedBy, Transition
from ductile.domain.protocol import LogLine
from ductile.domain.settle import RunRecord
from ductile.fakes.memory_store import InMemoryStore

DOC = Path(__file__).resolve().parents[2] / "docs" / "cli.md"
GLOBAL_SECTION = "## Options every verb takes"
_HEADING = re.compile(r"### `ductile ([a-z]+(?: [a-z]+)*)`")
_CODE = re.compile(r"`([^`]+)`")
NOW = datetime(2026, 11, 23, 7, 0, tzinfo=UTC)


# =========================================================================== the doc


@cache
def doc_lines() -> tuple[str, ...]:
    return tuple(DOC.read_text(encoding="utf-8").splitlines())


def _cells(line: str, number: int) -> list[str]:
    cells = [c.strip() for c in line.strip().strip("|").split("|")]
    assert all(cells), f"docs/cli.md line {number}: an empty cell (or a '|' inside one): {line}"
    return cells


def _table_rows(lines: list[tuple[int, str]]) -> list[tuple[int, list[str]]]:
    """The body rows of the tables in ``lines`` (header and separator rows skipped)."""
    rows = []
    for number, line in lines:
        if line.startswith("| `"):
            rows.append((number, _cells(line, number)))
    return rows


def _section(start: int) -> list[tuple[int, str]]:
    """The lines after the heading at index ``start`` up to the next heading of level 2 or 3."""
    out = []
    for index in range(start + 1, len(doc_lines())):
        line = doc_lines()[index]
        if line.startswith(("## ", "### ")):
            break
        out.append((index + 1, line))
    return out


@cache
def doc_verbs() -> dict[str, list[tuple[int, list[str]]]]:
    """Verb -> its table rows."""
    verbs: dict[str, list[tuple[int, list[str]]]] = {}
    for index, line in enumerate(doc_lines()):
        match = _HEADING.fullmatch(line)
        if match:
            verb = match.group(1)
            assert verb not in verbs, f"docs/cli.md line {index + 1}: a second section for '{verb}'"
            verbs[verb] = _table_rows(_section(index))
    return verbs


@cache
def doc_global_rows() -> list[tuple[int, list[str]]]:
    return _table_rows(_section(doc_lines().index(GLOBAL_SECTION)))


def _marked_rows(marker: str) -> list[tuple[int, list[str]]]:
    start = doc_lines().index(f"<!-- {marker} -->")
    end = doc_lines().index(f"<!-- /{marker} -->")
    return _table_rows([(i + 1, doc_lines()[i]) for i in range(start + 1, end)])


def _names(cell: str) -> list[str]:
    return _CODE.findall(cell)


def _only_code(cell: str) -> str | None:
    match = _CODE.fullmatch(cell.strip())
    return match.group(1) if match else None


# =========================================================================== the parser


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


@cache
def parser_verbs() -> dict[str, argparse.ArgumentParser]:
    """Every verb, nested ones as 'config check', with its parser (leaves only)."""
    verbs: dict[str, argparse.ArgumentParser] = {}
    for name, sub in _subparsers(build_parser()).items():
        nested = _subparsers(sub)
        if nested:
            verbs.update({f"{name} {inner}": p for inner, p in nested.items()})
        else:
            verbs[name] = sub
    return verbs


def _arguments(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    """The names a doc row uses for each of the parser's actions: '--limit', '<plugin>', '[<plugin>]'."""
    out: dict[str, argparse.Action] = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            continue
        if action.option_strings:
            for option in action.option_strings:
                out[option] = action
        else:
            name = f"<{action.metavar or action.dest}>"
            out[f"[{name}]" if action.nargs == "?" else name] = action
    return out


@cache
def global_options() -> frozenset[str]:
    return frozenset(_arguments(build_parser()))


# =========================================================================== verbs and flags


def test_every_verb_has_a_section_and_every_section_is_a_verb() -> None:
    missing = sorted(set(parser_verbs()) - set(doc_verbs()))
    extra = sorted(set(doc_verbs()) - set(parser_verbs()))
    assert not missing, (
        f"verbs of the parser without a '### `ductile <verb>`' section in docs/cli.md: {missing}"
    )
    assert not extra, f"sections of docs/cli.md for verbs the parser does not have: {extra}"


def test_the_global_options_are_documented_once_and_taken_by_every_verb() -> None:
    documented = {name for _, cells in doc_global_rows() for name in _names(cells[0])}
    assert documented == set(global_options()), (
        f"'{GLOBAL_SECTION}' lists {sorted(documented)}, the parser has {sorted(global_options())}"
    )
    for name, group in _subparsers(build_parser()).items():
        if _subparsers(group):  # 'config': a group of verbs, with no flags of its own
            own = set(_arguments(group)) - global_options()
            assert not own, f"'ductile {name}' takes {sorted(own)}, which docs/cli.md has no place for"
    for verb, parser in parser_verbs().items():
        lacking = global_options() - set(_arguments(parser))
        assert not lacking, (
            f"'ductile {verb}' does not take {sorted(lacking)}, which the doc says every verb takes"
        )


@pytest.mark.parametrize("verb", sorted(parser_verbs()))
def test_a_verbs_table_lists_exactly_its_flags_and_arguments(verb: str) -> None:
    parser_names = set(_arguments(parser_verbs()[verb])) - global_options()
    documented: list[str] = []
    for _, cells in doc_verbs().get(verb, []):
        documented += _names(cells[0])
    documented_set = set(documented) - global_options()
    assert len(documented) == len(set(documented)), f"'ductile {verb}': a flag is listed twice: {documented}"
    missing = sorted(parser_names - documented_set)
    extra = sorted(documented_set - parser_names)
    assert not missing, f"'ductile {verb}' takes {missing}, which its section in docs/cli.md does not list"
    assert not extra, f"docs/cli.md lists {extra} for 'ductile {verb}', which the parser does not take"


def _documented_actions() -> list[tuple[str, int, list[str], argparse.Action]]:
    out = []
    for verb, rows in doc_verbs().items():
        arguments = _arguments(parser_verbs().get(verb) or build_parser())
        for number, cells in rows:
            for name in _names(cells[0]):
                if name in arguments:
                    out.append((f"{verb} {name}", number, cells, arguments[name]))
    return out


@pytest.mark.parametrize(
    ("label", "line", "cells", "action"), _documented_actions(), ids=[a[0] for a in _documented_actions()]
)
def test_documented_defaults_and_choices_are_the_parsers(
    label: str, line: int, cells: list[str], action: argparse.Action
) -> None:
    assert len(cells) == 4, f"docs/cli.md line {line}: expected Flag | Value | Default | Meaning"
    default = action.default
    if default not in (None, False, argparse.SUPPRESS):
        assert _only_code(cells[2]) == str(default), (
            f"docs/cli.md line {line}: the default of {label} is {default!r}, the doc says {cells[2]!r}"
        )
    for choice in action.choices or ():
        assert f"`{choice}`" in cells[1], f"docs/cli.md line {line}: {label} also takes `{choice}`"


def test_the_documented_wait_timeout_is_the_codes() -> None:
    # --timeout has no parser default (None means "not given"); its default is a constant.
    rows = {name: cells for _, cells in doc_verbs()["run"] for name in _names(cells[0])}
    assert _only_code(rows["--timeout"][2]) == f"{DEFAULT_WAIT_SECONDS:g}"


def test_the_exit_codes_are_the_codes_the_cli_defines() -> None:
    documented = {int(_only_code(cells[0]) or "-1") for _, cells in _marked_rows("exit-codes")}
    defined = {
        value for name, value in vars(context).items() if name.startswith("EXIT_") and isinstance(value, int)
    }
    assert documented == defined


# =========================================================================== JSON keys


def _json_rows() -> dict[str, set[str]]:
    return {_only_code(cells[0]) or cells[0]: set(_names(cells[1])) for _, cells in _marked_rows("json-keys")}


def test_every_verb_with_json_has_a_row_and_no_other() -> None:
    with_json = {f"ductile {v}" for v, p in parser_verbs().items() if "--json" in _arguments(p)}
    documented = {name for name in _json_rows() if name.startswith("ductile ")}
    assert with_json == documented


SH_OK = '#!/bin/sh\ncat >/dev/null\necho \'{"status": "ok"}\'\n'


class Harness:
    """A real config and plugin folder; an in-memory store, a fake daemon, fixed time and ids."""

    def __init__(self, root: Path) -> None:
        self.root = root
        plugins = root / "plugins"
        folder = plugins / "echo"
        folder.mkdir(parents=True)
        for path in (plugins, folder):
            path.chmod(0o755)
        (folder / "manifest.yaml").write_text(
            "name: echo\nversion: 1.0.0\nprotocol: 1\nentrypoint: run.sh\ncommands: [poll, handle]\n"
        )
        (folder / "run.sh").write_text(SH_OK)
        (folder / "run.sh").chmod(0o755)
        self.config = root / "ductile.yaml"
        self.config.write_text(
            "service: {state_dir: ./state}\nplugins_dir: ./plugins\n"
            "plugins: {echo: {schedule: {every: 1h}}}\n"
            "routes: [{from: echo, event_type: e, to: echo}]\n"
            "webhooks: {listen: '127.0.0.1:0', endpoints: [{path: /h, plugin: echo, secret: s}]}\n"
        )
        self.store = InMemoryStore()
        self.ids = 0

    async def open_store(self, path: Path, create: bool) -> InMemoryStore:
        return self.store

    def new_id(self) -> str:
        self.ids += 1
        return f"id-{self.ids}"

    def backup(self, target: Path) -> Any:
        """``backup --json``: it reads a real SQLite database (made here), never the in-memory store."""
        from ductile.adapters.sqlite import SqliteStore

        async def make() -> None:
            store = await SqliteStore.open(self.root / "state" / "ductile.db")
            await store.close()

        (self.root / "state").mkdir(mode=0o700, exist_ok=True)
        asyncio.run(make())
        return self.json("backup", "--to", str(target))

    def reloaded(self, pid: int, sig: int) -> None:
        """The stand-in daemon reloads at once and says so in its activity log."""
        report = {"reloaded": True, "added": [], "removed": [], "changed": [], "cancelled": {},
                  "unhealthy": {}, "restart_needed": []}  # fmt: skip
        with self.store.tx.atomic() as tx:
            tx.append_activity(Activity(kind=Kind.CONFIG_RELOADED, at=NOW, data=report))

    def json(self, *argv: str) -> Any:
        out, err = io.StringIO(), io.StringIO()
        context = Context(
            env={"DUCTILE_CONFIG": str(self.config), "PATH": "/usr/bin:/bin"},
            out=out,
            err=err,
            now=lambda: NOW,
            monotonic=lambda: 0.0,
            open_store=self.open_store,
            daemon_pid=lambda state_dir: 4242,
            send_signal=self.reloaded,
            tz=UTC,
            new_id=self.new_id,
            store_check=lambda path: None,
        )
        code = main([*argv, "--json"], context=context)
        assert code in (0, 1), f"ductile {' '.join(argv)} exited {code}: {err.getvalue()}"
        return json.loads(out.getvalue())


def test_each_verbs_json_document_has_the_documented_keys(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    documents = {"run": h.json("run", "echo")}
    job_id = documents["run"]["job_id"]
    documents |= {
        "job": h.json("job", job_id),
        "cancel": h.json("cancel", job_id),
        "retry": h.json("retry", job_id),
        "jobs": h.json("jobs"),
        "reset": h.json("reset", "echo"),
        "queue": h.json("queue"),
        "logs": h.json("logs"),
        "status": h.json("status", "--no-health"),
        "reload": h.json("reload"),
        "plugins": h.json("plugins"),
        "config check": h.json("config", "check"),
        "schedule": h.json("schedule"),
        "simulate": h.json("simulate", "--days", "0.1"),
        "pause": h.json("pause", "echo"),
        "resume": h.json("resume", "echo"),
        "facts": h.json("facts", "echo"),
        "selfcheck": h.json("selfcheck"),
    }
    documents["backup"] = h.backup(tmp_path / "backup.db")
    rows = _json_rows()
    for verb, doc in documents.items():
        assert set(doc) == rows[f"ductile {verb}"], f"ductile {verb} --json prints {sorted(doc)}"
    assert set(documents["queue"]["jobs"][0]) == rows["job"]
    assert set(documents["job"]["transitions"][0]) == rows["transition"]
    # every verb with --json was run
    assert {f"ductile {verb}" for verb in documents} == {n for n in rows if n.startswith("ductile ")}


def test_the_shared_json_objects_have_the_documented_keys() -> None:
    job = Job(id="j", plugin="p", command="poll", submitted_by=SubmittedBy.CLI, created_at=NOW)
    transition = Transition(
        job_id="j", from_status=None, to_status=JobStatus.QUEUED, reason="r", actor=Actor.CLI, at=NOW
    )
    run = RunRecord(
        job_id="j",
        attempt=1,
        started_at=NOW,
        finished_at=NOW + timedelta(seconds=1),
        duration=1.0,
        exit_code=0,
        signal=None,
        timed_out=False,
        error=None,
        stderr_tail=b"",
        stdout_head=b"{}",
        logs=(LogLine(level="info", message="m"),),
    )
    rows = _json_rows()
    assert set(job_json(job)) == rows["job"]
    assert set(transition_json(transition)) == rows["transition"]
    assert set(run_json(run)) == rows["run record"]
