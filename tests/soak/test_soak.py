"""Kill -9 soak, short version: the real daemon SIGKILLed at random moments under webhook load.

The long version (>= 100 kills, >= 1,000 jobs) is ``bench/soak.py``; the harness
and what it checks are described in :mod:`tests.soak.harness`.
"""

from __future__ import annotations

import sqlite3
from contextlib import closing

import attrs
import pytest

from tests.soak.harness import SoakSettings, analyse, run_soak, verdict
from tests.support.site import Site

SHORT = SoakSettings(kills=8, jobs=80, seed=20260302, window=1.5)


@pytest.mark.timeout(180)
def test_sigkill_at_random_moments_loses_no_acknowledged_job(site: Site) -> None:
    report = run_soak(site, SHORT)
    figures = report.figures()
    print("\nsoak (short):", "; ".join(f"{k}: {v}" for k, v in figures.items()))

    assert verdict(report) == [], figures
    assert report.kills == SHORT.kills
    assert len(report.acknowledged) == SHORT.jobs
    assert report.lost == []
    assert report.duplicate_executions <= report.kills
    assert report.succeeded + len(report.dead) == report.jobs_in_db
    assert report.executions >= report.jobs_in_db  # every job really ran

    # The analysis has teeth: an acknowledged job removed from the database is lost,
    # and executions added beyond one per kill are flagged.
    victim = sorted(set(report.acknowledged.values()))[0]
    with closing(sqlite3.connect(site.db_path)) as conn, conn:
        conn.execute("DELETE FROM transitions WHERE job_id = ?", (victim,))
        conn.execute("DELETE FROM runs WHERE job_id = ?", (victim,))
        conn.execute("DELETE FROM jobs WHERE id = ?", (victim,))
    log = site.out / "executions.log"
    some_job = sorted(set(report.acknowledged.values()))[1]
    with log.open("a") as f:
        for _ in range(report.kills + 1):
            f.write(f"{some_job} 1 start 1\n")
    tampered = attrs.evolve(report, lost=[], problems=[], strays=[])
    analyse(site, log, tampered)
    problems = verdict(tampered)
    assert any("acknowledged jobs lost" in p and victim in p for p in problems), problems
    assert any("duplicate executions >" in p for p in problems), problems
