"""A throwaway PostgreSQL cluster for the tests: started once per test session, as ``postgres``.

Debian keeps the server tools in ``/usr/lib/postgresql/<version>/bin`` (not on
``PATH``) and ``initdb`` refuses to run as root, so the cluster is made and run
as the ``postgres`` system user (``runuser``), in a temporary directory owned
by it, listening on a unix socket in that directory only: no TCP port, no
port to collide on, nothing on the network. The tests connect as root over
that socket with ``user=postgres`` (``trust`` authentication).

Each test gets a database of its own, cloned from a template that already has
ductile's schema (``CREATE DATABASE ... TEMPLATE``: ~0.1 s), dropped afterwards.

When no server can be found or started, the tests that need one are skipped
with the reason; with ``DUCTILE_REQUIRE_POSTGRES=1`` (set by ``.ci/run``) they
fail loudly instead: in CI, PostgreSQL must run.
"""

from __future__ import annotations

import contextlib
import glob
import itertools
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

#: Set to 1 in CI: a missing or broken PostgreSQL fails the tests instead of skipping them.
REQUIRE = "DUCTILE_REQUIRE_POSTGRES"
TEMPLATE = "ductile_template"
USER = "postgres"
#: Server settings for tests: nothing here tests durability, so no fsync (the soak keeps it on).
FAST = ("-c fsync=off", "-c synchronous_commit=off", "-c full_page_writes=off")


class Unavailable(Exception):
    """No PostgreSQL can run here (the reason says why)."""


def server_bin() -> Path:
    """The directory of ``initdb`` and ``pg_ctl`` (the newest installed version)."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[4]))
    if found:
        return Path(found[-1]).parent
    on_path = shutil.which("initdb")
    if on_path:
        return Path(on_path).parent
    raise Unavailable("no PostgreSQL server here (initdb not found; apt-get install postgresql)")


def _as_postgres(*argv: str, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
    command = list(argv)
    if os.geteuid() == 0:
        command = ["runuser", "-u", USER, "--", *command]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)


class Cluster:
    """One running throwaway cluster: its socket directory, and databases made from the template."""

    def __init__(self, root: Path, bin_dir: Path, *, fsync: bool = False) -> None:
        self.root = root
        self.bin = bin_dir
        self.data = root / "data"
        self.log = root / "server.log"
        self.fsync = fsync
        self._numbers = itertools.count()

    @property
    def host(self) -> str:
        return str(self.root)

    def url(self, database: str) -> str:
        return f"postgresql://{USER}@/{database}?host={self.root}"

    # ----------------------------------------------------------------- life
    def create(self) -> None:
        done = _as_postgres(
            str(self.bin / "initdb"), "-D", str(self.data), "-A", "trust", "-U", USER,
            "-E", "UTF8", "--locale=C", "--no-sync",
        )  # fmt: skip
        if done.returncode != 0:
            raise Unavailable(f"initdb failed ({done.returncode}): {done.stderr.strip()[-800:]}")
        self.start()

    def start(self) -> None:
        options = f"-c listen_addresses='' -k {self.root} -c max_connections=200"
        if not self.fsync:
            options += " " + " ".join(FAST)
        done = _as_postgres(
            str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60",
            "-o", options, "start",
        )  # fmt: skip
        if done.returncode != 0:
            log = self.log.read_text(errors="replace")[-1500:] if self.log.exists() else ""
            raise Unavailable(f"pg_ctl start failed ({done.returncode}): {done.stderr.strip()}\n{log}")

    def stop(self, mode: str = "fast") -> None:
        _as_postgres(str(self.bin / "pg_ctl"), "-D", str(self.data), "-w", "-m", mode, "stop")

    def restart(self) -> None:
        """``pg_ctl restart -m fast``: every connection is cut, the data stays."""
        self.stop()
        self.start()

    # ----------------------------------------------------------------- databases
    def execute(self, sql: str, database: str = "postgres") -> None:
        import psycopg

        with psycopg.connect(host=self.host, user=USER, dbname=database, autocommit=True) as conn:
            conn.execute(sql)  # type: ignore[arg-type]

    def make_template(self) -> None:
        """The template every test database is cloned from: ductile's schema, migrated."""
        from ductile.adapters.postgres.schema import migrate_url

        self.execute(f"CREATE DATABASE {TEMPLATE}")
        migrate_url(self.url(TEMPLATE))

    def new_database(self) -> str:
        name = f"test_{os.getpid()}_{next(self._numbers)}"
        self.execute(f"CREATE DATABASE {name} TEMPLATE {TEMPLATE}")
        return name

    def drop_database(self, name: str) -> None:
        self.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@contextlib.contextmanager
def running_cluster(*, fsync: bool = False) -> Iterator[Cluster]:
    """A fresh cluster for the ``with`` block (the session fixture's body)."""
    try:
        import psycopg  # noqa: F401
    except ImportError:
        raise Unavailable("psycopg is not installed (pip install -e '.[dev,postgres]')") from None
    bin_dir = server_bin()
    # /tmp is traversable by everyone: the postgres user reaches its directory through it.
    root = Path(tempfile.mkdtemp(prefix="ductile-pg-", dir="/tmp"))
    root.chmod(0o755)
    if os.geteuid() == 0:
        shutil.chown(root, USER, USER)
    cluster = Cluster(root, bin_dir, fsync=fsync)
    try:
        started = time.monotonic()
        cluster.create()
        cluster.make_template()
        cluster.setup_seconds = time.monotonic() - started  # type: ignore[attr-defined]
        yield cluster
    finally:
        cluster.stop("immediate")
        shutil.rmtree(root, ignore_errors=True)


def unavailable(reason: str) -> None:
    """Skip with the reason, or fail when PostgreSQL is required (CI)."""
    message = f"PostgreSQL is not available: {reason}"
    if os.environ.get(REQUIRE, "") not in ("", "0"):
        pytest.fail(f"{message} ({REQUIRE} is set: PostgreSQL must run here)", pytrace=False)
    pytest.skip(message)
