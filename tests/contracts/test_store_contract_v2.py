"""The Store contract, continued: what protocol v2 and several schedules per plugin added.

Pauses, facts, lifetime counters, the poll guard and the breaker per
schedule, ``if_running: cancel`` (queued jobs dead, running ones asked to
stop, their settle burying them), the route depth carried on routed jobs and
a run's ``result``. Run against every store in ``conftest.store_factory``,
like the rest of the suite (whose helpers this module shares).
"""

from __future__ import annotations

from datetime import timedelta

from ductile.domain.breaker import BreakerPolicy
from ductile.domain.classify import classify
from ductile.domain.job import Actor, JobStatus, SubmittedBy
from ductile.domain.outcome import SpawnOutcome
from ductile.domain.plugin import FactOutput
from ductile.domain.routing import Route, Target
from ductile.domain.schedule import schedule_key
from ductile.fakes import spawner
from ductile.ports.store import EnqueueResult, Guard, Pause, Store
from ductile.ports.store_values import ROUTE_DEPTH_DROPS
from tests.contracts.test_store_contract import (
    FAIL,
    OK,
    T0,
    TTL,
    add,
    at,
    claim,
    ctx,
    finish,
    make_job,
    moves,
    ok,
    planned,
)
from tests.support.cases import StoreRunner

S = JobStatus
MORNING, HOURLY = schedule_key("feeds", "morning"), schedule_key("feeds", "hourly")


def scheduled(schedule_id: str, *, created: timedelta = timedelta(0), **fields: object) -> object:
    return make_job(
        "feeds",
        "poll",
        created=T0 + created,
        schedule_id=schedule_id,
        submitted_by=SubmittedBy.SCHEDULER,
        **fields,
    )


async def fire(store: Store, key: str, when: float, jobs: list[object], guard: Guard | None) -> object:
    due, nxt = planned(key, at(when)), planned(key, at(when + 3600))
    await store.put_planned(due)
    return await store.fire(
        due=due,
        next_run=nxt,
        jobs=jobs,
        guard=guard,
        actor=Actor.SCHEDULER,
        now=at(when),
        dedupe_ttl=TTL,  # type: ignore[arg-type]
    )


def guard_of(schedule_id: str, **fields: object) -> Guard:
    return Guard(plugin="feeds", command="poll", schedule_id=schedule_id, **fields)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- new job fields and run result


def test_schedule_id_and_route_depth_are_stored_with_the_job(with_store: StoreRunner) -> None:
    async def body(store: Store) -> None:
        job = make_job("feeds", "poll", schedule_id="morning", route_depth=3)
        await add(store, job)
        assert await store.get_job(job.id) == job

    with_store(body)


def test_a_runs_result_is_kept_with_it(with_store: StoreRunner) -> None:
    async def body(store: Store) -> None:
        job = make_job("feeds", "poll")
        await finish(store, job, ok(result="3 new items"), now=at(5))
        [run] = await store.runs(job.id)
        assert run.result == "3 new items"
        [view] = await store.recent_runs(plugin="feeds")
        assert view.run.result == "3 new items"

    with_store(body)


# --------------------------------------------------------------------------- pauses


def test_pause_and_resume_say_whether_anything_changed_and_pauses_lists_them(with_store: StoreRunner) -> None:
    async def body(store: Store) -> None:
        assert await store.pause("feeds", None, now=at(1)) is True
        assert await store.pause("feeds", None, now=at(2)) is False  # already paused: kept as it was
        assert await store.pause("feeds", "hourly", now=at(3)) is True
        assert await store.pause("alpha", "x", now=at(4)) is True
        assert await store.pauses() == [
            Pause(plugin="alpha", schedule_id="x", at=at(4)),
            Pause(plugin="feeds", schedule_id=None, at=at(1)),
            Pause(plugin="feeds", schedule_id="hourly", at=at(3)),
        ]
        assert await store.resume("feeds", None) is True
        assert await store.resume("feeds", None) is False
        assert await store.resume("feeds", "morning") is False
        assert [(p.plugin, p.schedule_id) for p in await store.pauses()] == [
            ("alpha", "x"),
            ("feeds", "hourly"),
        ]

    with_store(body)


def test_a_paused_plugin_or_schedule_enqueues_nothing_but_its_plan_advances(with_store: StoreRunner) -> None:
    async def body(store: Store) -> None:
        await store.pause("feeds", "hourly", now=T0)
        job = scheduled("hourly")
        result = await fire(store, HOURLY, 60, [job], guard_of("hourly", max_outstanding=1))
        assert (result.fired, result.jobs, result.blocked) == (True, (), "paused")  # type: ignore[attr-defined]
        assert (await store.planned(HOURLY)).planned_at == at(3660)  # type: ignore[union-attr]
        assert await store.get_job(job.id) is None  # type: ignore[attr-defined]
        # the plugin's other schedule is not paused
        other = scheduled("morning")
        result = await fire(store, MORNING, 61, [other], guard_of("morning", max_outstanding=1))
        assert result.jobs == (EnqueueResult(other.id, True),)  # type: ignore[attr-defined]
        # a pause of the whole plugin holds every schedule of it, timers included
        await store.resume("feeds", "hourly")
        await store.pause("feeds", None, now=at(62))
        late = scheduled("hourly", created=timedelta(seconds=63))
        result = await fire(store, HOURLY, 3700, [late], None)
        assert result.blocked == "paused"  # type: ignore[attr-defined]
        await store.resume("feeds", None)
        result = await fire(store, HOURLY, 7300, [late], None)
        assert result.jobs == (EnqueueResult(late.id, True),)  # type: ignore[attr-defined]

    with_store(body)


# --------------------------------------------------------------------------- the guard per schedule


def test_the_poll_guard_counts_the_jobs_of_the_firing_schedule_only(with_store: StoreRunner) -> None:
    async def body(store: Store) -> None:
        busy = await add(store, scheduled("hourly"))  # type: ignore[arg-type]
        await add(store, make_job("feeds", "poll"))  # a manual poll: no schedule's
        morning = scheduled("morning", created=timedelta(seconds=1))
        result = await fire(store, MORNING, 60, [morning], guard_of("morning", max_outstanding=1))
        assert result.jobs == (EnqueueResult(morning.id, True),)  # type: ignore[attr-defined]
        again = scheduled("hourly", created=timedelta(seconds=2))
        result = await fire(store, HOURLY, 61, [again], guard_of("hourly", max_outstanding=1))
        assert result.blocked == "poll_guard"  # type: ignore[attr-defined]
        await claim(store, at(62), busy)  # running counts as well
        result = await fire(store, HOURLY, 3700, [again], guard_of("hourly", max_outstanding=2))
        assert result.jobs == (EnqueueResult(again.id, True),)  # type: ignore[attr-defined]

    with_store(body)


def test_a_named_schedule_has_its_own_breaker(with_store: StoreRunner) -> None:
    async def body(store: Store) -> None:
        policy = BreakerPolicy(threshold=1, reset_after=timedelta(minutes=30))
        failing = scheduled("hourly", max_attempts=1)
        await finish(store, failing, FAIL, now=at(10), context=ctx(at(10), breaker=policy))  # type: ignore[arg-type]
        opened = await store.get_breaker("feeds", "poll@hourly")
        assert opened is not None
        assert opened.is_open
        assert await store.get_breaker("feeds", "poll") is None
        blocked = scheduled("hourly", created=timedelta(seconds=20))
        result = await fire(store, HOURLY, 20, [blocked], guard_of("hourly", breaker=policy))
        assert result.blocked == "breaker_open"  # type: ignore[attr-defined]
        fine = scheduled("morning", created=timedelta(seconds=21))
        result = await fire(store, MORNING, 21, [fine], guard_of("morning", breaker=policy))
        assert result.jobs == (EnqueueResult(fine.id, True),)  # type: ignore[attr-defined]
        # the default schedule keeps the pair it always had
        plain = make_job(
            "feeds", "poll", schedule_id="default", submitted_by=SubmittedBy.SCHEDULER, max_attempts=1
        )
        await finish(store, plain, FAIL, now=at(30), context=ctx(at(30), breaker=policy))
        assert await store.get_breaker("feeds", "poll") is not None

    with_store(body)


# --------------------------------------------------------------------------- if_running: cancel


def test_if_running_cancel_buries_queued_jobs_and_asks_running_ones_to_stop(with_store: StoreRunner) -> None:
    async def body(store: Store) -> None:
        running = await add(store, scheduled("hourly"))  # type: ignore[arg-type]
        await claim(store, at(1), running)
        queued = await add(store, scheduled("hourly", created=timedelta(seconds=2)))  # type: ignore[arg-type]
        other = await add(store, scheduled("morning", created=timedelta(seconds=3)))  # type: ignore[arg-type]
        new = scheduled("hourly", created=timedelta(seconds=10))
        reason = "cancelled: schedule 'hourly' fired again (if_running: cancel)"
        result = await fire(store, HOURLY, 10, [new], guard_of("hourly", cancel_reason=reason))
        assert result.cancelled == (queued.id,)  # type: ignore[attr-defined]
        assert result.stopping == (running.id,)  # type: ignore[attr-defined]
        assert result.jobs == (EnqueueResult(new.id, True),)  # type: ignore[attr-defined]
        dead = await store.get_job(queued.id)
        assert dead is not None
        assert (dead.status, dead.last_error) == (S.DEAD, reason)
        assert moves(await store.transitions(queued.id))[-1] == (S.QUEUED, S.DEAD, Actor.SCHEDULER)
        assert (await store.get_job(other.id)).status is S.QUEUED  # type: ignore[union-attr]
        # the stopped run ends as it ends (killed: a failure), and is not retried
        killed = classify(SpawnOutcome(signal=9))
        committed = await store.settle(
            running.id, killed, ctx=ctx(at(11)), dedupe_ttl=TTL, token=await token(store, running.id)
        )
        assert committed.settlement.job.status is S.DEAD
        assert committed.settlement.job.last_error == reason

    with_store(body)


def test_a_cancelled_run_that_succeeded_first_stays_a_success(with_store: StoreRunner) -> None:
    async def body(store: Store) -> None:
        running = await add(store, scheduled("hourly"))  # type: ignore[arg-type]
        await claim(store, at(1), running)
        new = scheduled("hourly", created=timedelta(seconds=10))
        await fire(store, HOURLY, 10, [new], guard_of("hourly", cancel_reason="c"))
        committed = await store.settle(
            running.id, OK, ctx=ctx(at(11)), dedupe_ttl=TTL, token=await token(store, running.id)
        )
        assert committed.settlement.job.status is S.SUCCEEDED
        # the request went with the run: the next job of the schedule fails and is retried as usual
        await claim(store, at(12), new.id)  # type: ignore[attr-defined]
        again = await store.settle(
            new.id, FAIL, ctx=ctx(at(13)), dedupe_ttl=TTL, token=await token(store, new.id)
        )  # type: ignore[attr-defined]
        assert again.settlement.job.status is S.QUEUED

    with_store(body)


# --------------------------------------------------------------------------- facts


RULE = FactOutput(command="poll", fact_type="feeds.snapshot")


def test_a_fact_rule_appends_a_fact_and_mirrors_the_state_in_the_same_commit(with_store: StoreRunner) -> None:
    async def body(store: Store) -> None:
        first = make_job("feeds", "poll")
        await finish(
            store, first, ok(state_updates={"a": 1, "b": 2}), now=at(5), context=ctx(at(5), fact=RULE)
        )
        second = make_job("feeds", "poll", created=at(6))
        await finish(store, second, ok(state_updates={"a": 3}), now=at(7), context=ctx(at(7), fact=RULE))
        assert await store.get_state("feeds") == {"a": 3}  # mirrored: 'b' is gone
        facts = await store.facts("feeds")
        assert [(f.fact_type, f.job_id, f.body, f.at) for f in facts] == [
            ("feeds.snapshot", second.id, {"a": 3}, at(7)),
            ("feeds.snapshot", first.id, {"a": 1, "b": 2}, at(5)),
        ]
        assert facts[0].seq > facts[1].seq > 0
        assert await store.facts("feeds", fact_type="other") == []
        assert [f.job_id for f in await store.facts("feeds", limit=1)] == [second.id]
        assert await store.facts("alpha") == []

    with_store(body)


def test_without_a_rule_or_without_updates_no_fact_is_recorded(with_store: StoreRunner) -> None:
    async def body(store: Store) -> None:
        await finish(store, make_job("feeds", "poll"), ok(state_updates={"a": 1}), now=at(5))
        await finish(
            store, make_job("feeds", "poll", created=at(6)), OK, now=at(7), context=ctx(at(7), fact=RULE)
        )
        assert await store.facts("feeds") == []
        assert await store.get_state("feeds") == {"a": 1}

    with_store(body)


def test_retention_deletes_old_facts_but_keeps_the_newest_of_each_type(with_store: StoreRunner) -> None:
    async def body(store: Store) -> None:
        other = FactOutput(command="poll", fact_type="feeds.other")
        for n, rule in enumerate([RULE, RULE, other, RULE]):
            job = make_job("feeds", "poll", created=at(10 * n))
            await finish(
                store,
                job,
                ok(state_updates={"n": n}),
                now=at(10 * n + 1),
                context=ctx(at(10 * n + 1), fact=rule),
            )
        await store.delete_finished(at(1000))
        left = await store.facts("feeds")
        assert [(f.fact_type, f.body) for f in left] == [
            ("feeds.snapshot", {"n": 3}),
            ("feeds.other", {"n": 2}),
        ]

    with_store(body)


# --------------------------------------------------------------------------- route depth


ROUTES = (Route(source="feeds", event_type="item", target="beta"),)
TARGETS = {"beta": Target(max_attempts=3)}


def test_routed_children_are_one_deeper_and_a_chain_at_the_limit_is_not_extended(
    with_store: StoreRunner,
) -> None:
    async def body(store: Store) -> None:
        routed = ctx(at(5), routes=ROUTES, targets=TARGETS, max_route_depth=3)
        parent = make_job("feeds", "poll", route_depth=2)
        committed = await finish(store, parent, ok(events=[{"type": "item"}]), now=at(5), context=routed)
        [child] = committed.settlement.children
        stored = await store.get_job(child.id)
        assert stored is not None
        assert stored.route_depth == 3
        assert await store.counts() == {}
        deep = make_job("feeds", "poll", created=at(-1), route_depth=3)  # claimed before the child
        routed = ctx(at(7), routes=ROUTES, targets=TARGETS, max_route_depth=3)
        committed = await finish(
            store, deep, ok(events=[{"type": "item"}, {"type": "item"}]), now=at(7), context=routed
        )
        assert committed.settlement.job.status is S.SUCCEEDED  # the parent still succeeds
        assert committed.settlement.children == ()
        assert committed.settlement.too_deep == (("item", "beta"), ("item", "beta"))
        assert await store.counts() == {ROUTE_DEPTH_DROPS: 2}

    with_store(body)


def test_a_failed_settle_of_a_deep_chain_counts_nothing(with_store: StoreRunner) -> None:
    async def body(store: Store) -> None:
        job = make_job("feeds", "poll", route_depth=9)
        await finish(
            store,
            job,
            spawner_failure(),
            now=at(5),
            context=ctx(at(5), routes=ROUTES, targets=TARGETS, max_route_depth=3),
        )
        assert await store.counts() == {}

    with_store(body)


def spawner_failure() -> object:
    return classify(spawner.error("boom"))


async def token(store: Store, job_id: str) -> int:
    """The claim token of a running job (its claim's, which its settle presents)."""
    job = await store.get_job(job_id)
    assert job is not None
    return job.claim_token
