"""The ``store`` verb's actions and arguments (``store copy``), for :mod:`.parser`."""

from __future__ import annotations

import argparse

_STORE_COPY_HELP = """\
Copy a SQLite store (a state directory's ductile.db) into an empty PostgreSQL
database, to move to store: {url: postgresql://...}. Every daemon must be stopped:
the source's lock must be free and no job may be running. Jobs keep their ids,
history and order; plugin states, breakers and the schedule index come along;
init runs again on each host at its first start on the new store.

Exit status: 0 copied; 1 a daemon runs on the source, a job is running, the
target is not empty or cannot be reached (nothing is written); 2 a usage error.
"""


def store_actions(
    verbs: argparse._SubParsersAction[argparse.ArgumentParser], plain: argparse.ArgumentParser
) -> None:
    """The ``store`` verb; it takes an action: ``copy`` (the only one so far)."""
    store = verbs.add_parser("store", help="store tools", description="Store tools.", parents=[plain])
    actions = store.add_subparsers(dest="store_verb", metavar="<action>")
    actions.required = True
    copy = actions.add_parser(
        "copy",
        help="copy a SQLite store into an empty PostgreSQL database",
        description=_STORE_COPY_HELP,
        parents=[plain],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    copy.add_argument(
        "--from",
        dest="source",
        required=True,
        metavar="SOURCE",
        help="sqlite:PATH (a ductile.db or its state dir)",
    )
    copy.add_argument(
        "--to", dest="target", required=True, metavar="URL", help="postgresql://... (an empty database)"
    )
