"""Idempotency keys: pure planning, and `POST /jobs` / `POST /jobs/batch` against the real
broker and Redis (one record on the topic per key, races, conflicts, release, TTL)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from redis.asyncio import Redis

from jobstream.http_errors import InvalidInput, ItemError
from jobstream.settings import ApiSettings, Settings
from producer import create_app
from producer.idempotency_keys import (
    Busy,
    Clash,
    KeyClaim,
    Plan,
    Record,
    Seen,
    Won,
    claim_key,
    fingerprint,
    judge,
    with_header,
)
from producer.runtime import Runtime
from schemas import JobSpec, Priority, decode_job
from tests.conftest import MS
from tests.helpers import asgi_app, read_topic, wait_until

WAIT = 15_000 * MS

# -- pure -------------------------------------------------------------------------------


def test_fingerprint_is_the_meaning_of_the_spec_without_the_key() -> None:
    """Equivalent bodies (defaults spelled out, key order, another key) share a fingerprint."""
    a = JobSpec.model_validate({"type": "t", "payload": {"x": 1, "y": [1, 2]}, "idempotency_key": "k"})
    b = JobSpec.model_validate({"payload": {"y": [1, 2], "x": 1}, "priority": "normal", "type": "t"})
    c = JobSpec.model_validate({"type": "t", "payload": {"x": 2, "y": [1, 2]}})
    assert fingerprint(a) == fingerprint(b) != fingerprint(c)


def test_record_round_trips_and_rejects_foreign_values() -> None:
    """A record decodes to itself; a value this module did not write decodes to None."""
    rec = Record("fp", "id-1", "done", "queued")
    assert Record.decode(rec.encode()) == rec
    assert Record.decode(b"not json") is None and Record.decode(b'{"fp": 1}') is None


def test_judge_maps_what_is_held_to_an_outcome() -> None:
    """Free: won; done with the same body: seen; another body: clash; pending: wait (None)."""
    claim = KeyClaim.new("k", "{p}", "fp")
    assert judge(claim, None) == Won()
    assert judge(claim, Record("fp", "j1", "done", "active").encode()) == Seen("j1", "active")
    assert judge(claim, Record("fp", "j1", "pending").encode()) is None
    clash = judge(claim, Record("other", "j1", "done", "queued").encode())
    assert isinstance(clash, Clash) and "different body" in clash.message
    assert "in progress" in Busy("k").message
    assert claim.redis_key.startswith("{p}:idem:") and len(claim.redis_key) == len("{p}:idem:") + 64


def test_plan_groups_a_batch_by_key() -> None:
    """The first valid item with a key leads; repeats follow it; another body clashes."""
    spec = JobSpec.model_validate
    items: list[JobSpec | ItemError] = [
        spec({"type": "a", "idempotency_key": "k1"}),
        spec({"type": "b"}),
        ItemError(422, "bad"),
        spec({"type": "a", "idempotency_key": "k1"}),
        spec({"type": "z", "idempotency_key": "k1"}),
        spec({"type": "a", "idempotency_key": "k2"}),
    ]
    plan = Plan.of(items, "{p}")
    assert sorted(plan.claims) == [0, 5]
    assert plan.lead_of == {0: 0, 3: 0, 4: 0, 5: 5}
    assert list(plan.clashes) == [4] and "item 0 of this batch" in plan.clashes[4]


def test_header_and_field() -> None:
    """The header fills the field; equal values pass; differing ones or a long header are 422."""
    bare = JobSpec(type="t")
    assert with_header(bare, "h").idempotency_key == "h"
    assert with_header(bare, None).idempotency_key is None
    keyed = JobSpec(type="t", idempotency_key="f")
    assert with_header(keyed, "f").idempotency_key == "f"
    with pytest.raises(InvalidInput, match="differ"):
        with_header(keyed, "h")
    with pytest.raises(InvalidInput, match="1 to 256"):
        with_header(bare, "x" * 257)


# -- over HTTP, real Kafka and Redis ----------------------------------------------------


@dataclass
class Api:
    client: httpx.AsyncClient
    runtime: Runtime
    settings: ApiSettings


Start = Callable[..., Awaitable[Api]]


@pytest.fixture
async def make_api(settings: Settings) -> AsyncIterator[Start]:
    """Start apps with extra settings; each runs its lifespan until the test ends."""
    async with contextlib.AsyncExitStack() as stack:

        async def start(**extra: Any) -> Api:
            api_settings = ApiSettings(**{**settings.model_dump(), **extra})
            app = asgi_app(create_app(api_settings), base_url="http://api")
            client, state = await stack.enter_async_context(app)
            return Api(client, state["runtime"], api_settings)

        yield start


@pytest.fixture
async def api(make_api: Start) -> Api:
    return await make_api()


async def records_on(settings: Settings, topic: str) -> int:
    """How many records `topic` holds (sum of end offsets: every answer came after the ack)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap_servers)
    await consumer.start()
    try:
        parts = [TopicPartition(topic, p) for p in range(settings.partitions)]
        ends: dict[TopicPartition, int] = await consumer.end_offsets(parts)
        return sum(ends.values())
    finally:
        await consumer.stop()


async def test_repeat_answers_200_with_the_first_job(api: Api) -> None:
    """A repeat with the header answers 200 with the first id and state; one record is on the
    topic, carrying the key."""
    body = {"type": "email.send", "payload": {"to": "a@b.c"}}
    first = await api.client.post("/jobs", json=body, headers={"Idempotency-Key": "order-1"})
    assert first.status_code == 202, first.text
    job_id = first.json()["id"]
    again = await api.client.post("/jobs", json=body, headers={"Idempotency-Key": "order-1"})
    assert again.status_code == 200, again.text
    assert again.json() == {"id": job_id, "state": "queued", "duplicate": True}
    topic = api.settings.topics.jobs(Priority.normal)
    [rec] = await read_topic(api.settings, topic, 1, WAIT)
    env = decode_job(rec.value)
    assert (env.id, env.idempotency_key) == (job_id, "order-1")
    assert await records_on(api.settings, topic) == 1


async def test_field_and_header_name_the_same_key(api: Api, redis: Redis) -> None:
    """The field and the header are one key; the repeat reports the projection's state."""
    first = await api.client.post("/jobs", json={"type": "t", "idempotency_key": "k"})
    assert first.status_code == 202, first.text
    job_id = first.json()["id"]
    await redis.hset(f"{api.settings.redis_prefix}:job:{job_id}", "state", "active")  # as a worker's
    again = await api.client.post("/jobs", json={"type": "t"}, headers={"Idempotency-Key": "k"})
    assert again.status_code == 200 and again.json()["id"] == job_id
    assert again.json()["state"] == "active"


async def test_header_and_field_that_differ_are_422(api: Api) -> None:
    """A header and a field naming different keys are refused, saying so."""
    r = await api.client.post(
        "/jobs", json={"type": "t", "idempotency_key": "a"}, headers={"Idempotency-Key": "b"}
    )
    assert r.status_code == 422 and "differ" in r.json()["detail"]
    assert r.json()["errors"][0]["field"] == "idempotency_key"


async def test_same_key_other_body_is_409(api: Api) -> None:
    """A key reused with a different body answers 409 saying so, and produces nothing."""
    assert (await api.client.post("/jobs", json={"type": "t", "idempotency_key": "k"})).status_code == 202
    r = await api.client.post("/jobs", json={"type": "t", "payload": {"x": 1}, "idempotency_key": "k"})
    assert r.status_code == 409 and "different body" in r.json()["detail"]
    assert await records_on(api.settings, api.settings.topics.jobs(Priority.normal)) == 1


async def test_concurrent_repeats_make_one_job(api: Api) -> None:
    """20 concurrent requests with one key: one job produced, every answer carries its id."""
    body = {"type": "t", "payload": {"n": 1}}
    answers = await asyncio.gather(
        *(api.client.post("/jobs", json=body, headers={"Idempotency-Key": "race"}) for _ in range(20))
    )
    assert sorted(a.status_code for a in answers) == [200] * 19 + [202], [a.text for a in answers]
    assert len({a.json()["id"] for a in answers}) == 1
    assert await records_on(api.settings, api.settings.topics.jobs(Priority.normal)) == 1


async def test_failed_produce_releases_the_claim(api: Api, redis: Redis) -> None:
    """A submit refused with 503 deletes its claim, so a retry with the key produces the job."""
    health = api.runtime.health
    await health.close()  # keep the monitor from flipping Kafka back while we look
    health.mark_down("kafka", "test says so")
    r = await api.client.post("/jobs", json={"type": "t"}, headers={"Idempotency-Key": "k"})
    assert r.status_code == 503, r.text
    assert not await redis.exists(claim_key(api.settings.redis_prefix, "k"))
    health.note_ok("kafka")
    r = await api.client.post("/jobs", json={"type": "t"}, headers={"Idempotency-Key": "k"})
    assert r.status_code == 202, r.text
    assert await records_on(api.settings, api.settings.topics.jobs(Priority.normal)) == 1


async def test_a_keyed_job_the_broker_refuses_is_413(make_api: Start, redis: Redis) -> None:
    """A job with a key that Kafka refuses (too large) answers 413, as without a key, and
    its claim is released."""
    big = 4 * 1024 * 1024
    api: Api = await make_api(max_payload_bytes=big, max_record_bytes=big)
    body = {"type": "t", "payload": {"blob": "x" * 1_300_000}}
    r = await api.client.post("/jobs", json=body, headers={"Idempotency-Key": "big"})
    assert r.status_code == 413 and "make the job smaller" in r.json()["detail"], r.text
    assert r.json()["limit"] == big
    assert not await redis.exists(claim_key(api.settings.redis_prefix, "big"))


async def test_pending_claim_is_waited_for(make_api: Start, redis: Redis) -> None:
    """A request finding a pending claim waits: it answers the winner's id once the winner is
    done, and 409 'in progress' when the winner never finishes within the submit timeout."""
    api: Api = await make_api(submit_timeout_s=0.5)
    spec = JobSpec(type="t")
    key = claim_key(api.settings.redis_prefix, "k")
    await redis.set(key, Record(fingerprint(spec), "winner-id", "pending").encode())
    r = await api.client.post("/jobs", json={"type": "t"}, headers={"Idempotency-Key": "k"})
    assert r.status_code == 409 and "in progress" in r.json()["detail"], r.text

    async def finish() -> None:
        await asyncio.sleep(0.1)
        await redis.set(key, Record(fingerprint(spec), "winner-id", "done", "queued").encode())

    done = asyncio.create_task(finish())
    r = await api.client.post("/jobs", json={"type": "t"}, headers={"Idempotency-Key": "k"})
    await done
    assert r.status_code == 200 and r.json()["id"] == "winner-id", r.text
    assert await records_on(api.settings, api.settings.topics.jobs(Priority.normal)) == 0


async def test_batch_repeats_and_conflicts(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    """Batch items with keys: in-batch repeats map to one job, another body is a 409 row, a
    later batch sees earlier jobs as duplicates; each batch claims in one pipelined round trip."""
    executed: list[list[str]] = []  # per pipeline execution: its command names
    real_pipeline = api.runtime.redis.pipeline

    def spying_pipeline(*args: Any, **kwargs: Any) -> Any:
        pipe = real_pipeline(*args, **kwargs)
        real_execute = pipe.execute

        async def execute(*a: Any, **k: Any) -> Any:
            executed.append([str(c[0][0]) for c in pipe.command_stack])
            return await real_execute(*a, **k)

        pipe.execute = execute  # type: ignore[method-assign]
        return pipe

    monkeypatch.setattr(api.runtime.redis, "pipeline", spying_pipeline)
    jobs: list[dict[str, Any]] = [
        {"type": "a", "idempotency_key": "k1"},
        {"type": "b"},
        {"type": "a", "idempotency_key": "k1"},
        {"type": "c", "idempotency_key": "k1"},
        {"type": "d", "idempotency_key": "k2"},
        {"type": "bad type!"},
    ]
    r = await api.client.post("/jobs/batch", json={"jobs": jobs})
    assert r.status_code == 200, r.text
    rows = r.json()["results"]
    assert [row["index"] for row in rows] == list(range(6))
    assert rows[0]["state"] == "queued" and "duplicate" not in rows[0]
    assert rows[2] == {"index": 2, "id": rows[0]["id"], "state": "queued", "duplicate": True}
    assert rows[3]["error"]["status"] == 409 and "different body" in rows[3]["error"]["message"]
    assert rows[5]["error"]["status"] == 422
    assert [cmds for cmds in executed if "SET" in cmds] == [["SET", "SET"]]  # k1 and k2, one trip
    executed.clear()

    again = [
        {"type": "d", "idempotency_key": "k2"},
        {"type": "x", "idempotency_key": "k1"},
        {"type": "e", "idempotency_key": "k3"},
    ]
    rows2 = (await api.client.post("/jobs/batch", json={"jobs": again})).json()["results"]
    assert rows2[0] == {"index": 0, "id": rows[4]["id"], "state": "queued", "duplicate": True}
    assert rows2[1]["error"]["status"] == 409
    assert rows2[2]["state"] == "queued" and rows2[2]["id"] not in {rows[0]["id"], rows[4]["id"]}
    assert [cmds for cmds in executed if "SET" in cmds] == [["SET", "SET", "SET"]]
    assert await records_on(api.settings, api.settings.topics.jobs(Priority.normal)) == 4  # a, b, d, e


async def test_key_expires_after_its_ttl(make_api: Start, redis: Redis) -> None:
    """With a 1 s TTL the key disappears, and the same request then makes a new job."""
    api: Api = await make_api(idempotency_ttl_s=1)
    first = await api.client.post("/jobs", json={"type": "t"}, headers={"Idempotency-Key": "k"})
    assert first.status_code == 202
    key = claim_key(api.settings.redis_prefix, "k")
    assert 0 < await redis.pttl(key) <= 1000

    async def gone() -> list[bool]:
        return [] if await redis.exists(key) else [True]

    await wait_until(gone, 1, "the idempotency key to expire", WAIT)  # bounded poll, backing off
    again = await api.client.post("/jobs", json={"type": "t"}, headers={"Idempotency-Key": "k"})
    assert again.status_code == 202 and again.json()["id"] != first.json()["id"]
