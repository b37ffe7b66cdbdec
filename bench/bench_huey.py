"""ductile against a peer, huey (SqliteHuey), at the same durability, on the same workload.

    python bench/bench_huey.py [--rounds 3] [--enqueues 640] [--jobs-sh 200] [--jobs-py 60] [--kills 5]

Both sides use SQLite in WAL mode with ``synchronous=FULL`` (huey: ``fsync=True``),
files on the same disk. The variants alternate within each round; medians.

1. enqueue: 32 concurrent enqueuers, ``--enqueues`` in all. ductile: 32 asyncio
   tasks awaiting ``SqliteStore.enqueue`` (an acknowledged enqueue is durable).
   huey: 32 threads calling a task (``huey.enqueue``: one durable INSERT each;
   huey shares one connection under a lock).
2. drain: N queued jobs, each spawning the same plugin with the same stdin as
   ``bench_dispatch.py`` (sh and Python). ductile: the real daemon. huey:
   ``huey_consumer -w 1 -k thread`` (one worker: serial, like ductile), the task
   runs ``subprocess.run`` and returns the parsed answer (huey stores it).
   Per job = time between the first and the last completion / (N - 1) (ductile:
   ``completed_at``; huey: its ``complete`` signal, written to a file).
3. SIGKILL mid-task: one job whose plugin marks that it started, then sleeps
   1 s; the consumer/daemon is SIGKILLed while the plugin runs, restarted, and
   we wait (bounded) for the job to finish. huey's SqliteStorage deletes a task
   at dequeue, so a killed consumer loses it; ductile re-queues the orphan.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from _common import (
    Daemon,
    child_env,
    goal_row,
    heading,
    loadavg,
    machine,
    median,
    python_plugin,
    query,
    scratch,
    sh_plugin,
    spread,
    table,
    wait_until,
    write_site,
)
from bench_dispatch import ductile_drain, request_for

from ductile.adapters.sqlite import SqliteStore
from ductile.domain.job import Actor, Job

TTL = timedelta(hours=24)
CONCURRENCY = 32

HUEY_APP = '''
"""The huey side of bench_huey.py (generated)."""
import json, os, subprocess, time
from huey import SqliteHuey
from huey.signals import SIGNAL_COMPLETE

huey = SqliteHuey("bench", filename=os.environ["HUEY_DB"], fsync=True)
MARKS = os.environ.get("HUEY_MARKS")


@huey.task()
def run_plugin(executable, stdin, env, cwd):
    done = subprocess.run([executable], input=stdin, capture_output=True, cwd=cwd, env=env, check=False)
    return json.loads(done.stdout)


@huey.signal(SIGNAL_COMPLETE)
def completed(signal, task, *args):
    if MARKS:
        with open(MARKS, "a") as f:
            f.write(f"{time.time()}\\n")
'''


def slow_plugin(marker: Path) -> str:
    """Marks that it started, then takes 1 s (the environment is an allow-list: the path is baked in)."""
    answer = '{"status": "ok"}'
    return f"#!/bin/sh\nread -r request\necho started >> '{marker}'\nsleep 1\nprintf '%s\\n' '{answer}'\n"


def huey_module(root: Path, db: Path, marks: Path | None = None) -> object:
    """Import (fresh) the huey app on ``db``."""
    (root / "huey_app.py").write_text(HUEY_APP)
    os.environ["HUEY_DB"] = str(db)
    os.environ.pop("HUEY_MARKS", None)
    if marks is not None:
        os.environ["HUEY_MARKS"] = str(marks)
    sys.path.insert(0, str(root))
    try:
        sys.modules.pop("huey_app", None)
        import huey_app  # type: ignore[import-not-found]

        return huey_app
    finally:
        sys.path.remove(str(root))


def remove_db(path: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


# --------------------------------------------------------------------------- enqueue


def huey_enqueue_rate(root: Path, n: int, concurrency: int = CONCURRENCY) -> float:
    """Durable enqueues per second, ``concurrency`` threads calling a huey task."""
    db = root / "huey-enqueue.db"
    remove_db(db)
    app = huey_module(root, db)
    task = app.run_plugin  # type: ignore[attr-defined]
    stdin, env = request_for("sh")
    per = n // concurrency
    barrier = threading.Barrier(concurrency + 1)

    def worker() -> None:
        barrier.wait()
        for _ in range(per):
            task("/bin/true", stdin, env, "/")

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    for t in threads:
        t.start()
    barrier.wait()
    started = time.perf_counter()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - started
    size = app.huey.pending_count()  # type: ignore[attr-defined]
    app.huey.storage.close()  # type: ignore[attr-defined]
    if size != per * concurrency:
        raise RuntimeError(f"huey holds {size} tasks, expected {per * concurrency}")
    return per * concurrency / elapsed


def ductile_enqueue_rate(root: Path, n: int, concurrency: int = CONCURRENCY) -> float:
    """Durable enqueues per second, ``concurrency`` asyncio tasks awaiting SqliteStore.enqueue."""
    db = root / "ductile-enqueue.db"
    remove_db(db)
    stdin, _ = request_for("sh")
    per = n // concurrency

    async def main() -> float:
        store = await SqliteStore.open(db)
        try:
            now = datetime.now(UTC)
            payload = {"request_bytes": len(stdin)}

            async def worker() -> None:
                for _ in range(per):
                    job = Job(
                        id=str(uuid.uuid4()), plugin="sh", command="poll", payload=payload, created_at=now
                    )
                    await store.enqueue(job, actor=Actor.API, now=now, dedupe_ttl=TTL)

            started = time.perf_counter()
            await asyncio.gather(*(worker() for _ in range(concurrency)))
            elapsed = time.perf_counter() - started
            if await store.queue_depth() != per * concurrency:
                raise RuntimeError("ductile lost enqueues")
            return per * concurrency / elapsed
        finally:
            await store.close()

    return asyncio.run(main())


# --------------------------------------------------------------------------- drain


class Consumer:
    def __init__(self, root: Path, db: Path, marks: Path | None = None, workers: int = 1) -> None:
        (root / "huey_app.py").write_text(HUEY_APP)
        env = child_env(HUEY_DB=str(db), PYTHONPATH=str(root))
        if marks is not None:
            env["HUEY_MARKS"] = str(marks)
        self.log = open(root / "consumer.log", "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [
                str(Path(sys.executable).with_name("huey_consumer")),
                "huey_app.huey",
                "-w",
                str(workers),
                "-k",
                "thread",
            ],
            cwd=root,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(15)
        self.log.close()

    def kill(self) -> None:
        """SIGKILL the consumer and everything it started (as a crash under systemd would)."""
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(15)
        self.log.close()


def huey_drain(root: Path, executable: Path, n: int) -> float:
    db = root / "huey-drain.db"
    marks = root / "huey-marks"
    remove_db(db)
    marks.unlink(missing_ok=True)
    app = huey_module(root, db)
    stdin, env = request_for(executable.parent.name)
    for _ in range(n):
        app.run_plugin(str(executable), stdin, env, str(executable.parent))  # type: ignore[attr-defined]
    app.huey.storage.close()  # type: ignore[attr-defined]
    consumer = Consumer(root, db, marks)
    try:

        def done() -> bool:
            if consumer.proc.poll() is not None:
                raise RuntimeError(f"the huey consumer exited: {(root / 'consumer.log').read_text()[-2000:]}")
            return marks.exists() and len(marks.read_text().split()) >= n

        wait_until(done, 60 + n * 0.5, f"huey to run {n} tasks", interval=0.1)
    finally:
        consumer.stop()
    stamps = sorted(float(x) for x in marks.read_text().split())
    return (stamps[-1] - stamps[0]) / (n - 1)


# --------------------------------------------------------------------------- SIGKILL mid-task


def huey_kill_trial(root: Path, plugin: Path, marker: Path) -> bool:
    """True when the task killed mid-run completed after the restart (within a bound)."""
    db = root / "huey-kill.db"
    marks = root / "huey-kill-marks"
    remove_db(db)
    marks.unlink(missing_ok=True)
    marker.unlink(missing_ok=True)
    app = huey_module(root, db)
    stdin, env = request_for("slow")
    app.run_plugin(str(plugin), stdin, env, str(plugin.parent))  # type: ignore[attr-defined]
    app.huey.storage.close()  # type: ignore[attr-defined]
    consumer = Consumer(root, db, marks)
    wait_until(marker.exists, 30, "the huey task to start its plugin", interval=0.02)
    consumer.kill()
    consumer = Consumer(root, db, marks)
    try:
        deadline = time.monotonic() + 4.0  # the plugin takes 1 s; a re-run would be done by then
        while time.monotonic() < deadline:
            if marks.exists() and marks.read_text().split():
                return True
            time.sleep(0.05)
        return False
    finally:
        consumer.stop()


def ductile_kill_trial(root: Path, config: Path, marker: Path) -> bool:
    db = root / "state" / "ductile.db"
    marker.unlink(missing_ok=True)
    job_id = str(uuid.uuid4())

    async def enqueue() -> None:
        store = await SqliteStore.open(db)
        try:
            now = datetime.now(UTC)
            job = Job(id=job_id, plugin="slow", command="poll", created_at=now)
            await store.enqueue(job, actor=Actor.CLI, now=now, dedupe_ttl=TTL)
        finally:
            await store.close()

    daemon = Daemon(config).wait_running()
    asyncio.run(enqueue())
    wait_until(marker.exists, 30, "the ductile job to start its plugin", interval=0.02)
    daemon.kill()  # SIGKILL the daemon only: its plugin is an orphan now, as after a crash
    daemon = Daemon(config).wait_running()
    try:
        deadline = time.monotonic() + 6.0
        while time.monotonic() < deadline:
            rows = query(db, "SELECT status FROM jobs WHERE id = ?", (job_id,))
            if rows and rows[0][0] == "succeeded":
                return True
            time.sleep(0.05)
        return False
    finally:
        daemon.stop()


# --------------------------------------------------------------------------- main


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--enqueues", type=int, default=640, help="enqueues per round (32 concurrent)")
    parser.add_argument("--jobs-sh", type=int, default=200)
    parser.add_argument("--jobs-py", type=int, default=60)
    parser.add_argument("--kills", type=int, default=5, help="SIGKILL trials per system")
    args = parser.parse_args()
    import huey

    with scratch("bench-huey-") as root:
        heading("Peer: huey (SqliteHuey, fsync=True) vs ductile (synchronous=FULL)")
        print(machine(root))
        print(f"huey {huey.__version__}; {args.rounds} rounds, medians; the variants alternate\n", flush=True)

        # 1. enqueue
        enq: dict[str, list[float]] = {"ductile": [], "huey": []}
        for r in range(args.rounds):
            for side in ("ductile", "huey") if r % 2 == 0 else ("huey", "ductile"):
                rate = (ductile_enqueue_rate if side == "ductile" else huey_enqueue_rate)(root, args.enqueues)
                enq[side].append(rate)

        # 2. drain
        marker = root / "started"
        config = write_site(root, {"sh": sh_plugin(), "py": python_plugin(), "slow": slow_plugin(marker)})
        db = root / "state" / "ductile.db"
        drain: dict[tuple[str, str], list[float]] = {}
        daemon = Daemon(config).wait_running()
        try:
            for plugin, n in (("sh", args.jobs_sh), ("py", args.jobs_py)):
                exe = root / "plugins" / plugin / "run"
                for r in range(args.rounds):
                    for side in ("ductile", "huey") if r % 2 == 0 else ("huey", "ductile"):
                        if side == "ductile":
                            value = ductile_drain(daemon, db, plugin, n)[0]
                        else:
                            value = huey_drain(root, exe, n)
                        drain.setdefault((plugin, side), []).append(value)
        finally:
            daemon.stop()

        # 3. SIGKILL mid-task
        slow = root / "plugins" / "slow" / "run"
        survived = {"ductile": 0, "huey": 0}
        for _ in range(args.kills):
            survived["huey"] += huey_kill_trial(root, slow, marker)
            survived["ductile"] += ductile_kill_trial(root, config, marker)

        rows = [
            (
                f"enqueue, {CONCURRENCY} concurrent (ops/s)",
                median(enq["ductile"]),
                median(enq["huey"]),
                f"{median(enq['ductile']) / median(enq['huey']):.2f}",
                spread([a / b for a, b in zip(enq["ductile"], enq["huey"], strict=True)]),
            )
        ]
        for plugin, label in (("sh", "/bin/sh plugin"), ("py", "Python plugin")):
            d, h = median(drain[(plugin, "ductile")]), median(drain[(plugin, "huey")])
            rows.append(
                (
                    f"drain, {label} (jobs/s, serial)",
                    1 / d,
                    1 / h,
                    f"{h / d:.2f}",
                    spread(
                        [
                            b / a
                            for a, b in zip(drain[(plugin, "ductile")], drain[(plugin, "huey")], strict=True)
                        ]
                    ),
                )
            )
        print(table(("workload", "ductile", "huey", "ductile/huey", "rounds"), rows))
        ratios = {
            plugin: median(drain[(plugin, "huey")]) / median(drain[(plugin, "ductile")])
            for plugin in ("sh", "py")
        }
        goal_row(
            "3",
            "drain rate ductile/huey, sh and Python (each at the durability it ships)",
            f"{ratios['sh']:.2f} / {ratios['py']:.2f}",
            ">= 1.0 both",
            met=min(ratios.values()) >= 1.0,
        )
        print()
        print(
            table(
                (
                    "SIGKILL of the consumer/daemon while a task's plugin runs",
                    "trials",
                    "completed later",
                    "lost",
                ),
                [
                    (
                        "ductile (orphan's group killed, job re-queued)",
                        args.kills,
                        survived["ductile"],
                        args.kills - survived["ductile"],
                    ),
                    (
                        "huey (task deleted from the queue at dequeue)",
                        args.kills,
                        survived["huey"],
                        args.kills - survived["huey"],
                    ),
                ],
            )
        )
        print(f"\nload average at the end: {loadavg():.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
