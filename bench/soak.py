"""Kill -9 soak of the real daemon, long version: many SIGKILLs at random moments under webhook load.

    .venv/bin/python bench/soak.py [--kills 100] [--jobs 1000] [--seed 1] [--window 2.0]

Starts ``ductile start`` on a throwaway site, posts signed webhooks (distinct
dedupe keys; a delivery without a 202 is redelivered later with the same key),
SIGKILLs the daemon ``--kills`` times (some during start-up, the rest within
``--window`` seconds of it running), restarts it each time, drains, stops it
with SIGTERM, then checks and prints: lost acknowledged jobs, duplicate
executions against kills, stray plugin processes, ``PRAGMA integrity_check``,
jobs left running, the worst time from a restart to its first dispatch. The
harness is ``tests/soak/harness.py`` (the short version runs in the test suite).
Exit status 1 when any check fails.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.soak.harness import SoakSettings, run_soak, verdict  # noqa: E402
from tests.support.site import SCRIPT, Site  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=100, help="SIGKILLs to deliver (default 100)")
    parser.add_argument("--jobs", type=int, default=1000, help="webhook deliveries to send (default 1000)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the random kill moments (default 1)")
    parser.add_argument(
        "--window", type=float, default=2.0, help="kill within this many seconds of the daemon running"
    )
    parser.add_argument("--keep", action="store_true", help="keep the site directory for inspection")
    args = parser.parse_args(argv)
    if not SCRIPT.exists():
        print(f"the console script is not installed next to {sys.executable}", file=sys.stderr)
        return 2

    root = Path(tempfile.mkdtemp(prefix="ductile-soak-"))
    site = Site(root)
    settings = SoakSettings(kills=args.kills, jobs=args.jobs, seed=args.seed, window=args.window)
    print(f"soak: {args.kills} kills, {args.jobs} deliveries, seed {args.seed}, site {root}", flush=True)
    try:
        report = run_soak(site, settings, progress=lambda text: print(f"  {text}", flush=True))
    finally:
        site.teardown()
    width = max(len(k) for k in report.figures())
    for key, value in report.figures().items():
        print(f"{key:<{width}}  {value}")
    if report.dead:
        print(f"dead jobs: {report.dead}")
    problems = verdict(report)
    for problem in problems:
        print(f"FAIL: {problem}")
    print("PASS" if not problems else f"{len(problems)} check(s) failed")
    if not args.keep and not problems:
        shutil.rmtree(root, ignore_errors=True)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
