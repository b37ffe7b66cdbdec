"""The tool verbs' actions and arguments, for :mod:`.parser`: ``config check``, ``store copy``."""

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


_CONFIG_CHECK_HELP = """\
Validate the config file and what it refers to: plugins (loaded, refused with the
reason, disabled), routes, webhook endpoints and schedules.

Exit status: 2 when the config itself is invalid; 1 when a plugin is refused, or a
route, endpoint or schedule names a plugin that is not loaded or does not support
the command; 0 otherwise.
"""


def config_actions(config: argparse.ArgumentParser, with_json: argparse.ArgumentParser) -> None:
    """``config`` takes an action: ``check`` (the only one so far)."""
    actions = config.add_subparsers(dest="config_verb", metavar="<action>")
    actions.required = True
    actions.add_parser(
        "check",
        help="validate the config file and what it refers to",
        description=_CONFIG_CHECK_HELP,
        parents=[with_json],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
