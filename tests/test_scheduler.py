"""Delayed jobs: the claim/lease scripts, the scheduler, the API, cancellation, restarts."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from collections.abc import AsyncIterator

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from redis.asyncio import Redis

from jobstream.cli.stack import RedisServer
from jobstream.kafka import Partitioner, make_producer
from jobstream.projection import Projection
from jobstream.settings import ApiSettings, Settings
from producer import create_app
from scheduler.loop import Scheduler
from scheduler.store import CANCELLED, CANCELLED_WHILE_CLAIMED, DelayStore
from schemas import DeadReason, JobEnvelope, Priority, decode_dead_letter, decode_job, now_ms
from tests.conftest import MS
from tests.helpers import StatusLog, asgi_client, crash_and_restart, make_job, read_topic, wait_until
from tests.pipeline import in_process


def delayed(due: int) -> JobEnvelope:
    return make_job("example.echo", not_before=due)


@contextlib.asynccontextmanager
async def scheduler(settings: Settings, redis: Redis, lease_ms: int = 10_000) -> AsyncIterator[Scheduler]:
    """A scheduler with its own producer and status publisher, as `jobstream scheduler` runs."""
    from jobstream.status_publisher import StatusPublisher

    producer = make_producer(settings, linger_ms=0)
    await producer.start()
    try:
        async with StatusPublisher(producer, settings.topics.status, settings.status_partitions) as pub:
            store = DelayStore(redis, settings.redis_prefix)
            s = Scheduler(store, producer, Partitioner(producer), pub, settings.topics, lease_ms=lease_ms)
            async with s:
                yield s
    finally:
        await producer.close()


@pytest.fixture
def store(settings: Settings, redis: Redis) -> DelayStore:
    return DelayStore(redis, settings.redis_prefix)


async def test_claim_takes_due_jobs_in_due_order_and_leases_them(store: DelayStore) -> None:
    """Claim returns only due jobs, earliest first, and holds them until the lease expires."""
    now = now_ms()
    jobs = [delayed(now + d) for d in (300, 100, 200, 60_000)]
    await store.add(jobs)
    got = [decode_job(r).id for r in (await store.claim(now + 1_000, 5_000, 10)).envelopes]
    assert got == [jobs[1].id, jobs[2].id, jobs[0].id]
    assert await store.counts() == (1, 3)
    leased = await store.claim(now + 1_000, 5_000, 10)
    assert leased.next_expiry == now + 6_000 < (leased.next_due or 0)  # expires before the last is due
    assert leased == ([], now + 60_000, now + 6_000)  # leased: not again
    again = [decode_job(r).id for r in (await store.claim(now + 6_001, 5_000, 2)).envelopes]
    assert len(again) == 2 and set(again) < {j.id for j in jobs[:3]}  # expired leases, `limit` kept
    await store.done(again)
    assert await store.counts() == (1, 1)


async def test_claim_looks_ahead_but_never_takes_a_lease_early(store: DelayStore) -> None:
    """The horizon takes jobs due soon; a lease is taken only once `now` passed its expiry,
    and `forget` deletes fired jobs in the same call."""
    now = now_ms()
    soon, later = delayed(now + 40), delayed(now + 500)
    await store.add([soon, later])
    first = await store.claim(now, 1_000, 10, horizon_ms=now + 50)
    assert [decode_job(r).id for r in first.envelopes] == [soon.id]
    assert (first.next_due, first.next_expiry) == (now + 500, now + 1_000)
    again = await store.claim(now + 990, 1_000, 10, horizon_ms=now + 1_040)
    assert [decode_job(r).id for r in again.envelopes] == [later.id]  # not `soon`: leased to now+1000
    last = await store.claim(now + 1_001, 1_000, 10, forget=[soon.id])
    assert last == ([], None, now + 1_990)  # `soon` forgotten, not taken; `later` still leased
    assert await store.counts() == (0, 1)


async def test_cancel_script_says_where_the_job_was(store: DelayStore) -> None:
    """Cancel removes a waiting job (1), a claimed one (2), and reports a gone one (0)."""
    now = now_ms()
    waiting, claimed = delayed(now + 60_000), delayed(now - 1)
    await store.add([waiting, claimed])
    assert len((await store.claim(now, 5_000, 10)).envelopes) == 1
    assert await store.cancel(waiting.id) == CANCELLED
    assert await store.cancel(claimed.id) == CANCELLED_WHILE_CLAIMED
    assert await store.cancel(claimed.id) == 0
    assert await store.counts() == (0, 0)
    assert (await store.claim(now + 3_600_000, 5_000, 10)).envelopes == []  # a dead claimer's job never fires


async def test_dead_schedulers_claims_fire_after_the_lease(
    settings: Settings, redis: Redis, store: DelayStore
) -> None:
    """Jobs claimed by a scheduler that never deletes them are produced by another after the lease."""
    now = now_ms()
    jobs = [delayed(now - 10) for _ in range(20)]
    await store.add(jobs)
    lease_ms = 500
    assert len((await store.claim(now, lease_ms, 100)).envelopes) == 20  # ... and the claimer dies
    async with scheduler(settings, redis, lease_ms=lease_ms):
        records = await read_topic(settings, settings.topics.jobs(Priority.normal), 20, timeout_s=30)
    assert sorted(decode_job(r.value).id for r in records) == sorted(j.id for j in jobs)
    assert min(r.timestamp for r in records) >= now + lease_ms
    await wait_until(lambda: _empty(store), 1, "the fired jobs to leave Redis")


async def _empty(store: DelayStore) -> list[bool]:
    """One item once both sets are empty (for `wait_until`)."""
    return [True] if await store.counts() == (0, 0) else []


async def test_two_schedulers_produce_each_job_exactly_once(
    settings: Settings, redis: Redis, store: DelayStore
) -> None:
    """Two schedulers racing over 3,000 jobs due at once produce every job once."""
    due = now_ms() + 300
    jobs = [delayed(due + i % 50) for i in range(3_000)]
    async with scheduler(settings, redis) as a, scheduler(settings, redis) as b:
        await store.add(jobs)
        await wait_until(lambda: _empty(store), 1, "Redis to be empty", timeout_s=60)
        await wait_until(lambda: _fired(a, b, 3_000), 1, "the acks")
    records = await read_topic(settings, settings.topics.jobs(Priority.normal), 3_000)
    ids = [decode_job(r.value).id for r in records]
    assert sorted(ids) == sorted(j.id for j in jobs)
    assert a.fired + b.fired == 3_000
    assert min(r.timestamp for r in records) >= due
    assert await _end_total(settings) == 3_000  # nothing beyond: no duplicate anywhere


async def _fired(a: Scheduler, b: Scheduler, n: int) -> list[int]:
    return [1] if a.fired + b.fired >= n else []


async def _end_total(settings: Settings) -> int:
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap_servers, group_id=None)
    await consumer.start()
    try:
        tps = [TopicPartition(t, p) for t in settings.topics.job_topics for p in range(settings.partitions)]
        ends: dict[TopicPartition, int] = await consumer.end_offsets(tps)
        return sum(ends.values())
    finally:
        await consumer.stop()


async def test_redis_restart_keeps_scheduled_jobs(settings: Settings, private_redis: RedisServer) -> None:
    """Jobs stored in a Redis that is killed (SIGKILL) and restarted on its AOF still fire."""
    server = private_redis
    client = Redis.from_url(server.url)
    # LocalStack's Redis fsyncs every second; `always` makes this test not depend on timing
    await client.config_set("appendfsync", "always")
    own = DelayStore(client, settings.redis_prefix)
    jobs = [delayed(now_ms() + 500) for _ in range(50)]
    await own.add(jobs)
    await client.aclose()
    crash_and_restart(server)
    client = Redis.from_url(server.url)
    own = DelayStore(client, settings.redis_prefix)
    assert await own.counts() == (50, 0)
    async with scheduler(settings, client):
        records = await read_topic(settings, settings.topics.jobs(Priority.normal), 50)
    assert sorted(decode_job(r.value).id for r in records) == sorted(j.id for j in jobs)
    await client.aclose()


@pytest.fixture
async def api(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with in_process(settings) as client:
        yield client


async def test_delayed_job_is_scheduled_then_runs_on_time(api: httpx.AsyncClient, settings: Settings) -> None:
    """POST with delay_ms answers scheduled with run_at; the job is queued no earlier than due, soon after."""
    async with StatusLog(settings) as status:
        r = await api.post("/jobs", json={"type": "example.echo", "payload": {"a": 1}, "delay_ms": 400})
        assert r.status_code == 202, r.text
        body = r.json()
        assert body["state"] == "scheduled" and body["run_at"].endswith("Z")
        job_id = body["id"]
        assert (await api.get(f"/jobs/{job_id}")).json()["state"] == "scheduled"
        await status.wait_for(lambda: "completed" in status.states(job_id), 30, "the delayed job")
    events = {e["state"]: e for e in status.events[job_id]}
    assert status.states(job_id) == ["scheduled", "queued", "active", "completed"]
    due = events["scheduled"]["due_at"]
    assert events["queued"]["due_at"] == due
    assert due <= events["queued"]["at"] < due + 250 * MS * 1000
    assert events["active"]["at"] >= due


async def test_run_at_in_the_past_and_zero_delay_queue_at_once(api: httpx.AsyncClient) -> None:
    """A run_at already past and delay_ms 0 are plain submits: state queued."""
    for extra in ({"run_at": "2001-01-01T00:00:00Z"}, {"delay_ms": 0}):
        r = await api.post("/jobs", json={"type": "example.echo", **extra})
        assert r.status_code == 202 and r.json()["state"] == "queued", r.text


async def test_batch_rows_say_scheduled_with_run_at(api: httpx.AsyncClient) -> None:
    """Batch items with run_at are scheduled rows with run_at; others stay queued."""
    at = dt.datetime.now(dt.UTC).replace(microsecond=0) + dt.timedelta(days=30)
    run_at = at.astimezone(dt.timezone(dt.timedelta(hours=2))).isoformat()
    jobs = [{"type": "example.echo", "run_at": run_at}, {"type": "example.echo"}]
    r = await api.post("/jobs/batch", json={"jobs": jobs})
    rows = r.json()["results"]
    assert rows[0]["state"] == "scheduled", rows
    assert rows[0]["run_at"] == at.strftime("%Y-%m-%dT%H:%M:%S.000Z")
    assert rows[1]["state"] == "queued"
    far = (at + dt.timedelta(days=400)).isoformat()
    r = await api.post("/jobs", json={"type": "example.echo", "run_at": far})
    assert r.status_code == 422 and "run_at" in r.json()["detail"]


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ({"run_at": "2030-01-01T00:00:00"}, "run_at"),  # naive
        ({"run_at": "next tuesday"}, "run_at"),
        ({"run_at": 1_900_000_000}, "run_at"),
        ({"run_at": "2030-01-01T00:00:00Z", "delay_ms": 5}, "delay_ms or run_at"),
    ],
)
async def test_bad_delay_fields_are_422_naming_the_field(
    api: httpx.AsyncClient, extra: dict[str, object], field: str
) -> None:
    """A naive or non-RFC 3339 run_at, or both delay_ms and run_at, answer 422 naming the field."""
    r = await api.post("/jobs", json={"type": "example.echo", **extra})
    assert r.status_code == 422, r.text
    assert field in r.json()["detail"]


async def test_cancel_removes_a_scheduled_job_and_it_never_runs(
    api: httpx.AsyncClient, settings: Settings, redis: Redis
) -> None:
    """DELETE of a scheduled job answers 200 cancelled; it leaves Redis and never runs."""
    async with StatusLog(settings) as status:
        r = await api.post("/jobs", json={"type": "example.echo", "delay_ms": 500})
        job_id = r.json()["id"]
        r = await api.delete(f"/jobs/{job_id}")
        assert r.status_code == 200 and r.json() == {"id": job_id, "state": "cancelled"}
        assert await DelayStore(redis, settings.redis_prefix).counts() == (0, 0)
        # a job due later than the cancelled one: once it has run, the scheduler went past both
        r = await api.post("/jobs", json={"type": "example.echo", "delay_ms": 600})
        later = r.json()["id"]
        await status.wait_for(lambda: "completed" in status.states(later), 30, "the later job")
    assert status.states(job_id) == ["scheduled", "cancelled"]
    assert (await api.get(f"/jobs/{job_id}")).json()["state"] == "cancelled"


async def test_cancel_removes_a_job_a_scheduler_is_firing_for_good(
    api: httpx.AsyncClient, settings: Settings, redis: Redis
) -> None:
    """DELETE of a delayed job that a stalled scheduler claimed (and announced `queued`):
    it leaves Redis, so no later claim fires it, and it ends `cancelled`."""
    store = DelayStore(redis, settings.redis_prefix)
    r = await api.post("/jobs", json={"type": "example.echo", "delay_ms": 60_000})
    job_id = r.json()["id"]
    now = now_ms()
    claim = await store.claim(now, 600_000, 10, horizon_ms=now + 61_000)  # ... and never produces it
    assert [decode_job(e).id for e in claim.envelopes] == [job_id]
    queued = {"job_id": job_id, "type": "example.echo", "state": "queued", "attempt": 1, "at": now_ms()}
    await Projection(redis, settings.redis_prefix, settings.state_ttl_s).apply([queued])
    r = await api.delete(f"/jobs/{job_id}")
    assert r.status_code == 202 and r.json() == {"id": job_id, "state": "cancelling"}, r.text
    assert await store.counts() == (0, 0)
    assert (await store.claim(now + 3_600_000, 5_000, 10)).envelopes == []  # never fired again
    assert (await api.get(f"/jobs/{job_id}")).json()["state"] == "cancelled"


async def test_redis_down_answers_503_naming_redis(settings: Settings, private_redis: RedisServer) -> None:
    """With Redis unreachable, a delayed submit is refused with 503, Retry-After and service redis."""
    app = create_app(ApiSettings(**{**settings.model_dump(), "redis_url": private_redis.url}))
    async with asgi_client(app) as client:
        private_redis.stop()
        # known down (health monitor) or found down (the write fails): 503 either way
        r = await client.post("/jobs", json={"type": "example.echo", "delay_ms": 1000})
        assert r.status_code == 503, r.text
        assert r.json()["service"] == "redis" and "Retry-After" in r.headers


async def test_a_job_kafka_refuses_is_dead_lettered_and_holds_back_no_other(
    settings: Settings, redis: Redis, store: DelayStore
) -> None:
    """Among 20 small due jobs, one the broker refuses and one the client refuses: the small
    ones all fire before any lease runs out, the two are dead letters (`rejected`), none stays claimed."""
    now = now_ms()
    small = [make_job("example.echo", key="k", not_before=now + i) for i in range(20)]
    broker_refuses = make_job("example.echo", {"blob": "x" * 1_250_000}, key="k", not_before=now + 5)
    client_refuses = make_job("example.echo", {"blob": "x" * 9_600_000}, key="k", not_before=now + 12)
    await store.add([*small, broker_refuses, client_refuses])
    async with StatusLog(settings) as status, scheduler(settings, redis, lease_ms=120_000):
        records = await read_topic(settings, settings.topics.jobs(Priority.normal), 20, timeout_s=30_000 * MS)
        assert sorted(decode_job(r.value).id for r in records) == sorted(j.id for j in small)
        dead = [decode_dead_letter(r.value) for r in await read_topic(settings, settings.topics.dlq, 2)]
        assert {d.id for d in dead} == {broker_refuses.id, client_refuses.id}
        assert {d.reason for d in dead} == {DeadReason.rejected}
        assert all("Kafka refused" in d.errors[0].message for d in dead)
        await status.wait_for(
            lambda: all(status.states(j.id)[-1:] == ["dead"] for j in (broker_refuses, client_refuses)),
            timeout_s=30_000 * MS,
            what="dead events for the refused jobs",
        )
        async with asyncio.timeout(30_000 * MS):  # forgotten by the next claim, not after the lease
            while await store.counts() != (0, 0):  # noqa: ASYNC110 - Redis state, no event
                await asyncio.sleep(0.05)
