"""Engine.dispatch_one on fakes: the request (D7), the spawn (D5), settling (D2, D3, D4, D8, D9)."""

from __future__ import annotations

import asyncio
import json
import logging
from datetime import timedelta
from typing import Any

import pytest

import ductile.app.dispatch as dispatch_module
from ductile.app.dispatch import UnsettledError
from ductile.app.intake import Webhook
from ductile.app.spawn import HELPER_PATH
from ductile.domain.classify import RunEnd
from ductile.domain.config import Endpoint, PluginConfig, Timeouts
from ductile.domain.job import Actor, JobStatus, SubmittedBy
from ductile.domain.outcome import Outcome, SpawnOutcome
from ductile.domain.plugin import Plugin
from ductile.domain.retry import RetryPolicy
from ductile.domain.routing import event_id_for
from ductile.domain.settle import SettleContext
from ductile.fakes import InMemoryStore
from ductile.fakes.catalog import DictCatalog
from ductile.fakes.spawner import error, ok
from ductile.ports.spawner import ProcessHandle
from ductile.ports.store import Committed, PermanentStoreError, StaleJobError, TransientStoreError
from tests.support.builders import (
    PLUGINS_DIR,
    directory,
    executable,
    make_config,
    manifest,
    route,
    two_plugins,
)
from tests.support.rigs import T0, GatedSpawner, Rig, async_test, records, sequence

#: What a plugin's environment may carry over from the daemon's, and what ductile adds.
ALLOWED_ENV = {"PATH", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR", "USER", "LOGNAME", "PYTHONPATH"}
DUCTILE_ENV = {"DUCTILE_PLUGIN", "DUCTILE_COMMAND", "DUCTILE_JOB_ID", "DUCTILE_ATTEMPT"}


# =========================================================================== the request


@async_test
async def test_a_poll_request_follows_d7_and_the_spawn_uses_the_configured_timeout() -> None:
    settings = {"client_id": "abc", "nested": {"k": [1, 2]}}
    config, catalog = two_plugins(config=settings, timeouts=Timeouts(poll=timedelta(minutes=5)))
    rig = Rig(config, catalog)
    rig.script("alpha", ok())
    await rig.engine.start()
    job_id = (await rig.engine.enqueue("alpha")).job_id

    assert await rig.engine.dispatch_one() is True

    [request] = rig.requests("alpha")
    assert request == {
        "protocol": 1,
        "job_id": job_id,
        "command": "poll",
        "config": settings,
        "state": {},
        "deadline_at": "2026-03-02T09:05:00Z",
    }
    [spawn] = rig.spawns("alpha")
    assert spawn.executable == executable("alpha")
    assert spawn.cwd == directory("alpha")
    assert spawn.timeout == 300.0
    assert spawn.grace == 5.0
    assert (await rig.job(job_id)).status is JobStatus.SUCCEEDED
    assert await rig.engine.dispatch_one() is False


@pytest.mark.parametrize(
    ("command", "timeouts", "seconds"),
    [
        ("handle", Timeouts(), 120.0),
        ("health", Timeouts(), 10.0),
        ("handle", Timeouts(handle=timedelta(seconds=7)), 7.0),
        ("poll", Timeouts(), 60.0),
    ],
)
@async_test
async def test_the_timeout_and_deadline_follow_the_command(
    command: str, timeouts: Timeouts, seconds: float
) -> None:
    catalog = DictCatalog(manifest("alpha", "poll", "handle", "health"))
    rig = Rig(make_config(PluginConfig(name="alpha", timeouts=timeouts)), catalog)
    rig.script("alpha", ok())
    await rig.engine.start()
    rig.clock.advance(timedelta(seconds=30))
    await rig.engine.enqueue("alpha", command=command)
    await rig.engine.dispatch_one()

    [spawn] = rig.spawns("alpha")
    assert spawn.timeout == seconds
    deadline = T0 + timedelta(seconds=30 + seconds)
    assert json.loads(spawn.stdin)["deadline_at"] == deadline.strftime("%Y-%m-%dT%H:%M:%SZ")


@async_test
async def test_a_handle_request_carries_the_job_payload_as_event_and_others_carry_none() -> None:
    config, catalog = two_plugins()
    rig = Rig(config, catalog)
    rig.script("alpha", ok())
    await rig.engine.start()
    body = {"action": "opened", "n": [1, {"x": None}]}
    endpoint = Endpoint(path="/hook/a", plugin="alpha", secret="s3cr3t")
    delivery = Webhook(endpoint=endpoint, payload=body, headers={"x-github-event": "issues"})
    job_id = (await rig.engine.submit(delivery)).job_id
    await rig.engine.enqueue("alpha", command="poll", payload={"ignored": True})
    await rig.drain()

    handle, poll = rig.requests("alpha")
    assert handle["command"] == "handle"
    assert handle["event"] == (await rig.job(job_id)).payload
    assert handle["event"]["payload"] == body  # the shape preserved, nulls and nesting included
    assert handle["event"]["headers"] == {"x-github-event": "issues"}
    assert poll["command"] == "poll"
    assert "event" not in poll


@async_test
async def test_the_plugin_gets_only_allow_listed_variables_and_its_ductile_ones() -> None:
    config, catalog = two_plugins()
    rig = Rig(config, catalog)
    rig.script("alpha", ok())
    await rig.engine.start()
    job_id = (await rig.engine.enqueue("alpha")).job_id
    await rig.engine.dispatch_one()

    [spawn] = rig.spawns("alpha")
    env = dict(spawn.env)
    assert set(env) <= ALLOWED_ENV | DUCTILE_ENV, (
        f"unexpected variables: {set(env) - ALLOWED_ENV - DUCTILE_ENV}"
    )
    assert {k: env[k] for k in ("PATH", "HOME", "LANG", "TZ")} == {
        "PATH": "/opt/bin:/usr/bin",
        "HOME": "/home/op",
        "LANG": "en_US.UTF-8",
        "TZ": "Europe/Berlin",
    }
    assert env["PYTHONPATH"] == HELPER_PATH, "ductile's own helper, never the daemon's PYTHONPATH"
    assert {k: env[k] for k in DUCTILE_ENV} == {
        "DUCTILE_PLUGIN": "alpha",
        "DUCTILE_COMMAND": "poll",
        "DUCTILE_JOB_ID": job_id,
        "DUCTILE_ATTEMPT": "1",
    }
    leaked = [k for k, v in env.items() if "hunter2" in v or "ghp_s3cr3t" in v or k == "DUCTILE_CONFIG"]
    assert leaked == []
    assert b"hunter2" not in spawn.stdin


@async_test
async def test_without_an_environment_the_plugin_gets_a_default_path_and_locale() -> None:
    config, catalog = two_plugins()
    rig = Rig(config, catalog, environ=None)
    rig.script("alpha", ok())
    await rig.engine.start()
    await rig.engine.enqueue("alpha")
    await rig.engine.dispatch_one()
    [spawn] = rig.spawns("alpha")
    assert dict(spawn.env) == {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "PYTHONPATH": HELPER_PATH,
        "DUCTILE_PLUGIN": "alpha",
        "DUCTILE_COMMAND": "poll",
        "DUCTILE_JOB_ID": "job-1",
        "DUCTILE_ATTEMPT": "1",
    }


@async_test
async def test_on_start_records_the_process_handle_while_the_job_runs() -> None:
    config, catalog = two_plugins()
    spawner = GatedSpawner()
    rig = Rig(config, catalog, spawner=spawner)
    rig.script("alpha", ok())
    await rig.engine.start()
    job_id = (await rig.engine.enqueue("alpha")).job_id

    task = asyncio.create_task(rig.engine.dispatch_one())
    await spawner.started.wait()
    [running] = await rig.store.running()
    assert running.job.id == job_id
    assert running.job.status is JobStatus.RUNNING
    assert running.process == ProcessHandle(pid=1001, pgid=1001, start_time=1001)

    spawner.gate.set()
    assert await task is True
    assert await rig.store.running() == []
    assert (await rig.job(job_id)).status is JobStatus.SUCCEEDED


# =========================================================================== success: state and routing


@async_test
async def test_success_merges_state_shallowly_and_the_next_request_sees_it() -> None:
    config, catalog = two_plugins()
    rig = Rig(config, catalog)
    rig.script(
        "alpha",
        sequence(
            ok(state_updates={"cursor": 1, "token": {"a": 1, "b": 2}}),
            ok(state_updates={"token": {"a": 9}}),
            ok(),
        ),
    )
    await rig.engine.start()
    for _ in range(3):
        await rig.engine.enqueue("alpha")
    assert await rig.drain() == 3

    states = [r["state"] for r in rig.requests("alpha")]
    assert states == [{}, {"cursor": 1, "token": {"a": 1, "b": 2}}, {"cursor": 1, "token": {"a": 9}}]
    assert await rig.store.get_state("alpha") == {"cursor": 1, "token": {"a": 9}}
    assert await rig.store.get_state("beta") == {}


@async_test
async def test_events_fan_out_to_every_route_and_the_children_run_later_in_fifo_order(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="ductile")
    catalog = DictCatalog(*(manifest(n, "poll", "handle") for n in ("alpha", "beta", "gamma", "zeta")))
    config = make_config(
        *(PluginConfig(name=n) for n in ("alpha", "beta", "gamma", "zeta")),
        routes=[route("alpha", "new_data", "beta"), route("alpha", "new_data", "gamma")],
    )
    rig = Rig(config, catalog)
    event = {"type": "new_data", "payload": {"v": 1}, "dedupe_key": "reading-7"}
    rig.script(
        "alpha",
        SpawnOutcome(
            exit_code=0,
            stdout=json.dumps({"status": "ok", "events": [event, {"type": "noise"}]}).encode(),
            duration=2.0,
        ),
    )
    for name in ("beta", "gamma", "zeta"):
        rig.script(name, ok())
    await rig.engine.start()
    parent = (await rig.engine.enqueue("alpha")).job_id
    earlier = (await rig.engine.enqueue("zeta")).job_id
    notified = rig.inbox.notifications

    assert await rig.engine.dispatch_one()

    assert rig.inbox.notifications == notified + 1
    [beta] = await rig.jobs("beta")
    [gamma] = await rig.jobs("gamma")
    envelope = {
        "type": "new_data",
        "payload": {"v": 1},
        "source": "alpha",
        "timestamp": "2026-03-02T09:00:02Z",
        "event_id": event_id_for(parent, 0),
        "dedupe_key": "reading-7",
    }
    for child in (beta, gamma):
        assert child.command == "handle"
        assert child.status is JobStatus.QUEUED
        assert child.payload == envelope
        assert child.parent_job_id == parent
        assert child.source_event_id == envelope["event_id"]
        assert child.dedupe_key == "reading-7"
        assert child.submitted_by is SubmittedBy.ROUTE
        assert await rig.history(child.id) == [(None, "queued", Actor.ROUTE.value)]
    routed = records(caplog, component="router", message="routed to")
    assert sorted((r.plugin, r.job_id, r.levelno) for r in routed) == sorted(
        [("beta", beta.id, logging.INFO), ("gamma", gamma.id, logging.INFO)]
    )
    assert all(r.fields["parent_job_id"] == parent for r in routed)
    [unmatched] = records(caplog, job_id=parent, message="matched no route")
    assert unmatched.levelno == logging.DEBUG
    assert "'noise'" in unmatched.getMessage()

    # FIFO: the job queued before the parent ran goes first, then the children in route order.
    assert await rig.drain() == 3
    order = [json.loads(c.stdin)["job_id"] for c in rig.spawner.calls]
    assert order == [parent, earlier, beta.id, gamma.id]
    assert rig.requests("beta")[0]["event"] == envelope
    assert rig.requests("gamma")[0]["event"] == envelope


@async_test
async def test_a_route_to_a_plugin_that_is_not_loaded_is_dropped_with_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="ductile")
    config, catalog = two_plugins()
    config = make_config(
        *config.plugins.values(), routes=[route("alpha", "e", "ghost"), route("alpha", "e", "beta")]
    )
    rig = Rig(config, catalog)
    rig.script("alpha", ok(events=[{"type": "e"}]))
    await rig.engine.start()
    job_id = (await rig.engine.enqueue("alpha")).job_id
    await rig.engine.dispatch_one()

    assert [j.plugin for j in await rig.jobs() if j.command == "handle"] == ["beta"]
    [warning] = records(caplog, job_id=job_id, message="routed to 'ghost'")
    assert warning.levelno == logging.WARNING
    assert warning.getMessage() == "event 'e' routed to 'ghost', which is not loaded: dropped"


@async_test
async def test_plugin_logs_and_stderr_become_log_lines_tagged_with_the_plugin(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="ductile")
    config, catalog = two_plugins()
    rig = Rig(config, catalog)
    body = {"status": "ok", "logs": [{"level": "warn", "message": "rate limited"}, {"message": "fetched 3"}]}
    rig.script(
        "alpha", SpawnOutcome(exit_code=0, stdout=json.dumps(body).encode(), stderr_tail=b"deprecated\n")
    )
    await rig.engine.start()
    job_id = (await rig.engine.enqueue("alpha")).job_id
    await rig.engine.dispatch_one()

    lines = [
        (r.levelno, r.getMessage())
        for r in records(caplog, component="plugin", plugin="alpha", job_id=job_id)
    ]
    assert lines == [
        (logging.INFO, "deprecated"),  # a successful run's stderr is at info (ADR 0021)
        (logging.WARNING, "rate limited"),
        (logging.INFO, "fetched 3"),
    ]
    [done] = records(caplog, component="dispatcher", job_id=job_id, message="succeeded")
    assert (done.levelno, done.plugin, done.getMessage()) == (logging.INFO, "alpha", "poll succeeded")


# =========================================================================== failure, retry, timeout


@async_test
async def test_a_failure_is_retried_with_backoff_and_the_claim_waits_for_next_retry_at(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="ductile")
    config, catalog = two_plugins(retry=RetryPolicy(max_attempts=3, backoff_base=timedelta(seconds=60)))
    rig = Rig(config, catalog)
    rig.script("alpha", error("upstream 503"))
    await rig.engine.start()
    job_id = (await rig.engine.enqueue("alpha")).job_id

    assert await rig.engine.dispatch_one()
    job = await rig.job(job_id)
    # base * 2**0 + draw(0.5) * base
    assert (job.status, job.attempt, job.next_retry_at) == (JobStatus.QUEUED, 2, T0 + timedelta(seconds=90))
    assert job.last_error == "upstream 503"
    assert await rig.history(job_id) == [
        (None, "queued", "api"),
        ("queued", "running", "dispatcher"),
        ("running", "failed", "dispatcher"),
        ("failed", "queued", "retry"),
    ]
    [warning] = records(caplog, component="dispatcher", job_id=job_id, levelno=logging.WARNING)
    assert warning.getMessage() == (
        "poll failed (attempt 1 of 3), retry at 2026-03-02T09:01:30+00:00: upstream 503"
    )

    assert not await rig.engine.dispatch_one()
    rig.clock.advance(timedelta(seconds=89))
    assert not await rig.engine.dispatch_one()
    rig.clock.advance(timedelta(seconds=1))
    assert await rig.engine.dispatch_one()
    assert rig.spawns("alpha")[1].env["DUCTILE_ATTEMPT"] == "2"
    job = await rig.job(job_id)
    # second failure: base * 2 + draw * base
    assert (job.attempt, job.next_retry_at) == (3, rig.clock.now() + timedelta(seconds=150))

    rig.clock.advance(timedelta(seconds=150))
    assert await rig.engine.dispatch_one()
    job = await rig.job(job_id)
    assert (job.status, job.attempt, job.completed_at) == (JobStatus.DEAD, 3, rig.clock.now())
    assert (await rig.store.transitions(job_id))[-1].reason == "attempts exhausted (3/3)"
    assert len(await rig.store.runs(job_id)) == 3
    [dead] = records(caplog, component="dispatcher", job_id=job_id, levelno=logging.ERROR)
    assert dead.getMessage() == "poll dead: upstream 503"


@pytest.mark.parametrize(
    ("outcome", "error_part"),
    [
        (error("bad client_id", exit_code=78), "exit code 78"),
        (SpawnOutcome(exit_code=78), "exit code 78 (EX_CONFIG: not retried)"),
        (error("account closed", retry=False), "account closed"),
    ],
)
@async_test
async def test_exit_78_and_retry_false_make_the_job_dead_at_once(
    outcome: SpawnOutcome, error_part: str
) -> None:
    config, catalog = two_plugins()
    rig = Rig(config, catalog)
    rig.script("alpha", outcome)
    await rig.engine.start()
    job_id = (await rig.engine.enqueue("alpha")).job_id
    await rig.engine.dispatch_one()

    job = await rig.job(job_id)
    assert (job.status, job.attempt, job.max_attempts) == (JobStatus.DEAD, 1, 4)
    assert job.last_error is not None
    assert error_part in job.last_error
    assert (await rig.store.transitions(job_id))[-1].reason == "not retryable"
    assert await rig.engine.idle_wait() == 1.0


@async_test
async def test_a_run_past_its_deadline_times_out_and_follows_the_retry_policy() -> None:
    config, catalog = two_plugins(
        timeouts=Timeouts(poll=timedelta(seconds=10)),
        retry=RetryPolicy(max_attempts=2, backoff_base=timedelta(0)),
    )
    rig = Rig(config, catalog)
    late_ok = SpawnOutcome(exit_code=0, stdout=b'{"status": "ok"}', duration=15.0)
    rig.script("alpha", late_ok)
    await rig.engine.start()
    job_id = (await rig.engine.enqueue("alpha")).job_id

    await rig.engine.dispatch_one()
    assert rig.clock.now() == T0 + timedelta(seconds=10)  # killed at the deadline
    job = await rig.job(job_id)
    assert (job.status, job.attempt, job.last_error) == (JobStatus.QUEUED, 2, "timed out after 10s")
    assert [h[:2] for h in await rig.history(job_id)][-2:] == [
        ("running", "timed_out"),
        ("timed_out", "queued"),
    ]
    [run] = await rig.store.runs(job_id)
    assert run.timed_out

    await rig.engine.dispatch_one()
    job = await rig.job(job_id)
    assert (job.status, job.last_error) == (JobStatus.DEAD, "timed out after 10s")
    assert await rig.store.get_state("alpha") == {}


# =========================================================================== refused at dispatch time


@pytest.mark.parametrize(
    ("case", "plugin", "reason"),
    [
        ("unknown", "ghost", f"plugin 'ghost' is not loaded (no such plugin in {PLUGINS_DIR})"),
        ("disabled", "beta", "plugin 'beta' is disabled"),
        ("refused", "beta", "plugin 'beta' is refused: manifest protocol 2 is not supported"),
        ("verify", "beta", "plugin 'beta' refused before spawn: entrypoint is world-writable"),
        ("unsupported", "beta", "plugin 'beta' does not support 'health' (its manifest lists: handle, poll)"),
    ],
)
@async_test
async def test_a_job_whose_plugin_cannot_run_dies_with_the_reason_without_a_spawn(
    case: str, plugin: str, reason: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="ductile")
    catalog = DictCatalog(manifest("alpha", "poll", "handle"), manifest("beta", "poll", "handle"))
    beta = PluginConfig(name="beta", enabled=case != "disabled", retry=RetryPolicy(max_attempts=5))
    if case == "refused":
        catalog.refusals["beta"] = "manifest protocol 2 is not supported"
    rig = Rig(make_config(PluginConfig(name="alpha"), beta), catalog)
    rig.script("alpha", ok())
    rig.script("beta", ok())
    await rig.engine.start()
    command = "health" if case == "unsupported" else "poll"
    job_id = (await rig.engine.enqueue(plugin, command=command, strict=False)).job_id
    if case == "verify":
        catalog.verify_reasons["beta"] = "entrypoint is world-writable"

    assert await rig.engine.dispatch_one()

    assert rig.spawner.calls == []
    job = await rig.job(job_id)
    assert (job.status, job.attempt, job.last_error) == (JobStatus.DEAD, 1, reason)
    assert job.completed_at == T0
    assert [h[:2] for h in await rig.history(job_id)][-2:] == [("running", "failed"), ("failed", "dead")]
    [line] = records(caplog, component="dispatcher", job_id=job_id, levelno=logging.ERROR)
    assert line.getMessage() == f"{command} dead: {reason}"


@async_test
async def test_verify_is_asked_right_before_each_spawn() -> None:
    config, catalog = two_plugins()
    rig = Rig(config, catalog)
    rig.script("alpha", ok())
    await rig.engine.start()
    await rig.engine.enqueue("alpha")
    await rig.engine.dispatch_one()
    catalog.verify_reasons["alpha"] = "entrypoint now resolves outside plugins_dir"
    refused = (await rig.engine.enqueue("alpha")).job_id
    await rig.engine.dispatch_one()
    del catalog.verify_reasons["alpha"]
    await rig.engine.enqueue("alpha")
    await rig.engine.dispatch_one()

    assert len(rig.spawns("alpha")) == 2
    assert (await rig.job(refused)).last_error == (
        "plugin 'alpha' refused before spawn: entrypoint now resolves outside plugins_dir"
    )


# =========================================================================== internal failures


@pytest.mark.parametrize(("max_attempts", "status"), [(3, JobStatus.QUEUED), (1, JobStatus.DEAD)])
@async_test
async def test_a_spawner_that_raises_fails_the_job_with_an_internal_error_and_loses_nothing(
    max_attempts: int, status: JobStatus, caplog: pytest.LogCaptureFixture
) -> None:
    config, catalog = two_plugins(retry=RetryPolicy(max_attempts=max_attempts))
    rig = Rig(config, catalog)
    rig.script("alpha", sequence(RuntimeError("pipe exploded")))
    await rig.engine.start()
    job_id = (await rig.engine.enqueue("alpha")).job_id

    assert await rig.engine.dispatch_one()

    job = await rig.job(job_id)
    assert job.status is status
    assert job.last_error is not None
    assert "internal error" in job.last_error
    assert "pipe exploded" in job.last_error
    assert await rig.store.running() == []
    [line] = records(caplog, component="dispatcher", job_id=job_id, message="the spawner failed")
    assert line.levelno == logging.ERROR
    assert line.exc_info is not None


class FlakyStore(InMemoryStore):
    """An InMemoryStore whose chosen methods raise ``failures[name]`` times before working
    (``error``: what they raise; a plain OSError by default, as a bug in a store would)."""

    def __init__(self, error: type[Exception] | None = None, **failures: int) -> None:
        super().__init__()
        self.failures = dict(failures)
        self.attempts: dict[str, int] = {}
        self.error = error
        #: Called at each settle attempt (a test stops the daemon from there).
        self.on_settle: Any = None

    def _trip(self, name: str) -> None:
        self.attempts[name] = self.attempts.get(name, 0) + 1
        if self.failures.get(name, 0) > 0:
            self.failures[name] -= 1
            if self.error is not None:
                raise self.error(f"{name} failed: the disk is full (a test's words)")
            raise OSError(28, f"No space left on device ({name})")

    async def settle(
        self, job_id: str, end: RunEnd, *, ctx: SettleContext, dedupe_ttl: timedelta, token: int
    ) -> Committed:
        if self.on_settle is not None:
            self.on_settle()
        self._trip("settle")
        return await super().settle(job_id, end, ctx=ctx, dedupe_ttl=dedupe_ttl, token=token)

    async def get_state(self, plugin: str) -> dict[str, Any]:
        self._trip("get_state")
        return await super().get_state(plugin)

    async def record_process(self, job_id: str, handle: ProcessHandle, *, token: int) -> None:
        self._trip("record_process")
        await super().record_process(job_id, handle, token=token)


@pytest.fixture
def no_pause(monkeypatch: pytest.MonkeyPatch) -> None:
    """The dispatcher retries a refused settle at once instead of every second."""
    monkeypatch.setattr(dispatch_module, "SETTLE_RETRY", 0.0)


@pytest.mark.usefixtures("no_pause")
@pytest.mark.parametrize("fault", [False, True], ids=["a bug", "a transient store fault"])
@async_test
async def test_a_settle_that_fails_is_retried_until_committed_once_and_logged_once(
    fault: bool, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="ductile")
    config, catalog = two_plugins()
    store = FlakyStore(TransientStoreError if fault else None, settle=4)
    rig = Rig(config, catalog, store=store)
    rig.script("alpha", ok(state_updates={"n": 1}))
    await rig.engine.start()
    job_id = (await rig.engine.enqueue("alpha")).job_id

    assert await rig.engine.dispatch_one()

    assert store.attempts["settle"] == 5
    job = await rig.job(job_id)
    assert job.status is JobStatus.SUCCEEDED
    assert [h[:2] for h in await rig.history(job_id)] == [
        (None, "queued"),
        ("queued", "running"),
        ("running", "succeeded"),
    ]
    assert len(await rig.store.runs(job_id)) == 1
    assert await rig.store.get_state("alpha") == {"n": 1}
    assert len(rig.spawns("alpha")) == 1  # the plugin is not run again
    # One line when it starts failing (a fault explains itself; a bug keeps its traceback),
    # one when it is over: not one per try.
    [failed] = records(caplog, component="dispatcher", job_id=job_id, message="could not record the end")
    assert "trying again every" in failed.getMessage()
    assert failed.levelno == (logging.WARNING if fault else logging.ERROR)
    assert (failed.exc_info is None) is fault
    [done] = records(caplog, component="dispatcher", job_id=job_id, message="the end of the job was recorded")
    assert "after 4 failed tries" in done.getMessage()


@pytest.mark.usefixtures("no_pause")
@async_test
async def test_a_permanent_store_fault_at_settle_leaves_the_job_to_recovery_at_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A corrupt page met at settle: retrying would wedge the lane for good."""
    config, catalog = two_plugins()
    store = FlakyStore(PermanentStoreError, settle=1000)
    rig = Rig(config, catalog, store=store)
    rig.script("alpha", ok())
    await rig.engine.start()
    job_id = (await rig.engine.enqueue("alpha")).job_id

    with pytest.raises(UnsettledError):
        await rig.engine.dispatch_one()

    assert store.attempts["settle"] == 1
    assert (await rig.job(job_id)).status is JobStatus.RUNNING  # crash recovery's, after a repair
    [line] = records(caplog, component="dispatcher", job_id=job_id, message="could not record the end")
    assert line.levelno == logging.CRITICAL
    assert "crash recovery runs it again" in line.getMessage()
    # The lane goes on: the next job is claimed and run.
    rig.script("beta", ok())
    store.failures["settle"] = 0
    other = (await rig.engine.enqueue("beta")).job_id
    assert await rig.engine.dispatch_one()
    assert (await rig.job(other)).status is JobStatus.SUCCEEDED


@pytest.mark.usefixtures("no_pause")
@async_test
async def test_a_stop_ends_the_settle_retries_after_one_more_try(caplog: pytest.LogCaptureFixture) -> None:
    """SIGTERM while the store refuses the settle (a full disk, a held lock): bounded."""
    config, catalog = two_plugins()
    store = FlakyStore(TransientStoreError, settle=1000)
    rig = Rig(config, catalog, store=store)
    rig.script("alpha", ok())
    await rig.engine.start()
    job_id = (await rig.engine.enqueue("alpha")).job_id

    def stop_at_the_third_try() -> None:
        if store.attempts.get("settle", 0) == 2:
            rig.engine.halt()

    store.on_settle = stop_at_the_third_try
    with pytest.raises(UnsettledError):
        await asyncio.wait_for(rig.engine.dispatch_one(), 10)

    assert store.attempts["settle"] == 4  # the try during which the stop came, and one more
    assert (await rig.job(job_id)).status is JobStatus.RUNNING
    [line] = records(caplog, component="dispatcher", job_id=job_id, message="before stopping")
    assert line.levelno == logging.ERROR
    assert "crash recovery runs it again at the next start" in line.getMessage()


@async_test
async def test_a_stale_job_at_settle_is_not_retried_but_logged_as_a_lost_claim(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class StaleStore(InMemoryStore):
        async def settle(
            self, job_id: str, outcome: Outcome, *, ctx: SettleContext, dedupe_ttl: timedelta, token: int
        ) -> Committed:
            self.settles = getattr(self, "settles", 0) + 1
            raise StaleJobError(f"job {job_id} runs under claim {token + 1}, not {token}")

    config, catalog = two_plugins()
    store = StaleStore()
    rig = Rig(config, catalog, store=store)
    rig.script("alpha", ok())
    await rig.engine.start()
    job_id = (await rig.engine.enqueue("alpha")).job_id
    assert await rig.engine.dispatch_one() is True  # the dispatcher goes on with other work
    assert store.settles == 1
    [line] = records(caplog, job_id=job_id, message="claim lost, result discarded")
    assert line.levelno == logging.WARNING
    assert "runs under claim 2, not 1" in line.getMessage()


@async_test
async def test_a_failure_to_record_the_process_handle_does_not_stop_the_run(
    caplog: pytest.LogCaptureFixture,
) -> None:
    config, catalog = two_plugins()
    rig = Rig(config, catalog, store=FlakyStore(record_process=1))
    rig.script("alpha", ok())
    await rig.engine.start()
    job_id = (await rig.engine.enqueue("alpha")).job_id
    await rig.engine.dispatch_one()
    assert (await rig.job(job_id)).status is JobStatus.SUCCEEDED
    [line] = records(caplog, job_id=job_id, message="could not record the process group")
    assert line.levelno == logging.ERROR


class RaisingCatalog(DictCatalog):
    def verify(self, plugin: Plugin) -> str | None:
        raise PermissionError(13, "Permission denied", plugin.directory)


@pytest.mark.parametrize("failing", ["store.get_state", "catalog.verify"])
@async_test
async def test_an_error_before_the_spawn_fails_the_job_instead_of_leaving_it_running(
    failing: str, caplog: pytest.LogCaptureFixture
) -> None:
    # Reading the plugin's state fails (a locked database), or the trust check
    # itself blows up: the job must not stay "running" until the next restart
    # (its poll guard would block the plugin's schedule meanwhile).
    config, _ = two_plugins()
    store = FlakyStore(get_state=1) if failing == "store.get_state" else InMemoryStore()
    manifests = (manifest("alpha", "poll", "handle"), manifest("beta", "poll", "handle"))
    catalog = DictCatalog(*manifests) if failing == "store.get_state" else RaisingCatalog(*manifests)
    rig = Rig(config, catalog, store=store)
    rig.script("alpha", ok())
    await rig.engine.start()
    job_id = (await rig.engine.enqueue("alpha")).job_id

    assert await rig.engine.dispatch_one()

    assert await rig.store.running() == []
    job = await rig.job(job_id)
    assert (job.status, job.attempt) == (JobStatus.QUEUED, 2)
    assert job.last_error is not None
    assert "internal error" in job.last_error
    assert rig.spawner.calls == []
    [line] = records(caplog, component="dispatcher", job_id=job_id, message="could not prepare the run")
    assert line.levelno == logging.ERROR
    assert line.exc_info is not None
    if failing == "store.get_state":
        rig.clock.advance(timedelta(minutes=5))
        assert await rig.engine.dispatch_one()
        assert (await rig.job(job_id)).status is JobStatus.SUCCEEDED
