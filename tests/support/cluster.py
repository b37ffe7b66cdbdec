"""Two sites on one PostgreSQL database, for the two-daemon tests and the fail-over bench.

``hostA`` and ``hostB`` (separate state directories, so separate instances)
run the same config against one database: a lease and a heartbeat short
enough for tests, and a recording plugin whose runs append
``<job> <attempt> start|end <time> <pid> <site>`` lines to one shared log
(one ``write`` each on an ``O_APPEND`` file). Its first attempt of a job
sleeps ``first`` seconds (the payload-free way to make a run long), later
attempts 0.2 s.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg

from tests.support.plugins import shell_plugin
from tests.support.site import Site

TIMEOUTS = {"poll": "3s", "handle": "3s", "health": "3s", "init": "3s"}
#: From a claim to the moment a peer may re-run it: lease expiry, deadline (10 s) + margin (2 s).
FAILOVER_BOUND = 40.0


def recorder(log: Path, site: str, first: float) -> str:
    return shell_plugin(
        f"""
read -r request
echo "$DUCTILE_JOB_ID $DUCTILE_ATTEMPT start $(date +%s.%N) $$ {site}" >> '{log}'
if [ "$DUCTILE_ATTEMPT" = 1 ]; then sleep {first}; else sleep 0.2; fi
echo "$DUCTILE_JOB_ID $DUCTILE_ATTEMPT end $(date +%s.%N) $$ {site}" >> '{log}'
printf '%s\\n' '{{"status": "ok"}}'
"""
    )


class Pair:
    """hostA and hostB: two sites, one database."""

    def __init__(self, root: Path, url: str) -> None:
        self.url = url
        self.log = root / "runs.log"
        self.a = Site(_folder(root / "hostA"))
        self.b = Site(_folder(root / "hostB"))

    def configure(
        self,
        *,
        first: float,
        workers: int = 1,
        a_workers: int | None = None,
        parallelism: int = 1,
        lease: str = "3s",
        heartbeat: str = "1s",
        timeouts: dict[str, str] | None = None,
    ) -> None:
        for site, name in ((self.a, "A"), (self.b, "B")):
            site.plugin("rec", recorder(self.log, name, first))
            settings: dict[str, Any] = {
                "timeouts": timeouts or TIMEOUTS,
                "parallelism": parallelism,
                "retry": {"backoff_base": "1s"},
            }
            site.write_config(
                {"rec": settings},
                service={"max_workers": a_workers if name == "A" and a_workers else workers},
                store={"url": self.url, "lease": lease, "heartbeat": heartbeat},
            )

    def runs(self) -> list[list[str]]:
        return [line.split() for line in self.log.read_text().splitlines()] if self.log.exists() else []

    def started(self, job_id: str, attempt: int) -> list[str] | None:
        return next((r for r in self.runs() if r[:3] == [job_id, str(attempt), "start"]), None)

    def query(self, statement: str, params: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
        with psycopg.connect(self.url, autocommit=True) as conn:
            return conn.execute(statement, params).fetchall()  # type: ignore[arg-type]

    def status(self, job_id: str) -> tuple[object, ...] | None:
        rows = self.query("SELECT status, attempt, node FROM jobs WHERE id = %s", (job_id,))
        return rows[0] if rows else None

    def teardown(self) -> None:
        problems: list[str] = []
        for site in (self.a, self.b):
            try:
                site.teardown()
            except AssertionError as e:
                problems.append(str(e))
        assert not problems, "\n".join(problems)


def _folder(path: Path) -> Path:
    path.mkdir(mode=0o755)
    path.chmod(0o755)
    return path
