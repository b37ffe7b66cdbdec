"""Fixtures shared by every test directory (the shared code itself lives in ``tests/support``)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.site import SCRIPT, Site, site_fixture


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    """A throwaway site in ``tmp_path`` for the real daemon, torn down whatever the test did: every
    daemon stopped, no plugin process left behind. Skipped without the ``ductile`` console script."""
    if not SCRIPT.exists():
        pytest.skip(f"the console script is not installed next to {sys.executable}")
    yield from site_fixture(tmp_path)
