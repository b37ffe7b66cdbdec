"""Fixtures shared by every test directory (the shared code itself lives in ``tests/support``)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.postgres import Cluster, Unavailable, running_cluster, unavailable
from tests.support.site import SCRIPT, Site, site_fixture


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    """A throwaway site in ``tmp_path`` for the real daemon, torn down whatever the test did: every
    daemon stopped, no plugin process left behind. Skipped without the ``ductile`` console script."""
    if not SCRIPT.exists():
        pytest.skip(f"the console script is not installed next to {sys.executable}")
    yield from site_fixture(tmp_path)


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[Cluster]:
    """One throwaway PostgreSQL cluster for the whole session (tests/support/postgres.py): skipped
    with the reason when none can run here, a failure instead under DUCTILE_REQUIRE_POSTGRES=1."""
    try:
        with running_cluster() as cluster:
            yield cluster
    except Unavailable as e:
        unavailable(str(e))


@pytest.fixture
def pg_url(pg_cluster: Cluster) -> Iterator[str]:
    """A fresh database with ductile's schema, cloned from the template; dropped afterwards."""
    name = pg_cluster.new_database()
    try:
        yield pg_cluster.url(name)
    finally:
        pg_cluster.drop_database(name)
