"""Dead letters through the API against the real broker and Redis: index, browse, show, replay."""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from redis.asyncio import Redis
from redis.exceptions import RedisError

from deadletters.index import DlqIndexer
from deadletters.store import DlqStore
from jobstream.cli import procs
from jobstream.cli.stack import RedisServer
from jobstream.kafka import DLQ_RETENTION_MS, make_producer
from jobstream.settings import ApiSettings, Settings
from producer import create_app
from producer.runtime import Runtime
from schemas import (
    AttemptError,
    DeadLetter,
    DeadReason,
    Priority,
    Source,
    decode_job,
    encode_dead_letter,
    partition_for,
)
from tests.conftest import MS
from tests.helpers import asgi_app, make_job, read_topic

WAIT = 20_000 * MS


@dataclass
class Api:
    client: httpx.AsyncClient
    runtime: Runtime
    settings: ApiSettings
    dead: dict[str, DeadLetter]  # what the test wrote to the dead-letter topic, by name


async def wait_until(check: Callable[[], Awaitable[bool]], what: str, timeout_s: float = WAIT) -> None:
    """Re-check `check()` until it holds; fail naming `what` after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        await asyncio.sleep(0.05)


def letter(settings: Settings, name: str, reason: DeadReason, dead_at: int, **fields: Any) -> DeadLetter:
    """A dead letter of job type `name` (or a poison record when `name` is None)."""
    errors = fields.pop("errors", None) or [
        AttemptError(
            attempt=1, type="RuntimeError", message=f"{name} broke", traceback="Traceback:\n  x", at=dead_at
        )
    ]
    job = make_job(name, {"n": dead_at}, **fields)
    return DeadLetter(
        id=job.id, type=name, reason=reason, job=job, errors=errors, dead_at=dead_at,
        source=Source(topic=settings.topics.jobs(job.priority), partition=0, offset=dead_at % 1000),
    )  # fmt: skip


async def write_dead(settings: Settings, records: list[DeadLetter], garbage: int = 0) -> None:
    """Produce dead letters (and undecodable values) to the dead-letter topic as workers do."""
    producer = make_producer(settings)
    await producer.start()
    try:
        topic, n = settings.topics.dlq, settings.partitions
        futs = []
        for d in records:
            key = d.job.partition_key if d.job is not None else d.id
            futs.append(
                await producer.send(
                    topic, encode_dead_letter(d), key=key.encode(), partition=partition_for(key, n)
                )
            )
        for i in range(garbage):
            futs.append(await producer.send(topic, b"{not a dead letter", partition=i % n))
        await asyncio.gather(*futs)
    finally:
        await producer.close()


@pytest.fixture
async def api(settings: Settings) -> AsyncIterator[Api]:
    """The API in-process over a dead-letter topic holding six records and one garbage value."""
    s = ApiSettings(**settings.model_dump())
    t = int(time.time() * 1000) - 3_600_000
    err = AttemptError
    dead = {
        "a": letter(s, "email.send", DeadReason.exhausted, t + 1000, key="user-1",
                    errors=[err(attempt=i, type="SMTPError", message="Connection refused", at=t + i,
                                traceback=f"Traceback (most recent call last):\n  line {i}", worker="w1")
                            for i in (1, 2, 3)]),
        "b": letter(s, "email.send", DeadReason.non_retryable, t + 2000,
                    errors=[err(attempt=1, type="ValueError", message="bad address", at=t)]),
        "c": letter(s, "image.resize", DeadReason.timeout, t + 3000, priority=Priority.high),
        "d": letter(s, "image.resize", DeadReason.exhausted, t + 3000,
                    errors=[err(attempt=1, type="OSError", message="Disk full", at=t)]),
        "p": DeadLetter(
            id=f"poison:{s.topics.jobs(Priority.normal)}:0:7", reason=DeadReason.poison,
            raw=base64.b64encode(b"\x00garbage").decode(), dead_at=t + 4000,
            errors=[err(attempt=1, type="DecodeError", message="not a job envelope", at=t + 4000)],
            source=Source(topic=s.topics.jobs(Priority.normal), partition=0, offset=7),
        ),
        "f": letter(s, "report.build", DeadReason.unknown_type, t + 5000),
    }  # fmt: skip
    await write_dead(s, list(dead.values()), garbage=1)
    async with asgi_app(create_app(s), base_url="http://api") as (client, state):
        a = Api(client, state["runtime"], s, dead)
        await wait_until(lambda: _indexed(a, len(dead)), "the indexer to index every record")
        yield a


async def _indexed(api: Api, n: int) -> bool:
    r = await api.client.get("/dlq", params={"limit": 500})
    return r.status_code == 200 and len(r.json()["items"]) >= n


def ids_of(api: Api, *names: str) -> list[str]:
    return [api.dead[n].id for n in names]


def newest_first(api: Api, *names: str) -> list[str]:
    """The names' ids in the order GET /dlq lists them: dead_at, then id, descending."""
    return [d.id for d in sorted((api.dead[n] for n in names), key=lambda d: (d.dead_at, d.id), reverse=True)]


async def listed(api: Api, **params: Any) -> list[str]:
    r = await api.client.get("/dlq", params={"limit": 500, **params})
    assert r.status_code == 200, r.text
    return [item["id"] for item in r.json()["items"]]


async def topic_size(settings: Settings, topic: str) -> int:
    """How many records `topic` holds (end offsets summed): exact once producers are acked."""
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap_servers, group_id=None)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(settings.partitions)]
        ends = await consumer.end_offsets(tps)
        return sum(ends.values())
    finally:
        await consumer.stop()


async def replay(api: Api, body: dict[str, Any]) -> dict[str, Any]:
    """Start a replay and wait until GET /dlq/replays/{id} says it ended; its last report."""
    r = await api.client.post("/dlq/replay", json={**body, "dry_run": False})
    assert r.status_code == 202, r.text
    replay_id = r.json()["replay_id"]
    report: dict[str, Any] = {}

    async def ended() -> bool:
        nonlocal report
        got = await api.client.get(f"/dlq/replays/{replay_id}")
        assert got.status_code == 200, got.text
        report = got.json()
        return bool(report["state"] != "running")

    await wait_until(ended, f"replay {replay_id} to end")
    assert report["matched"] == r.json()["matched"]
    return report


# -- index and browse -------------------------------------------------------------------


async def test_lists_newest_first_with_summaries(api: Api) -> None:
    """GET /dlq lists every decodable record newest first (ties by id), skipping garbage."""
    r = await api.client.get("/dlq")
    assert r.status_code == 200
    body = r.json()
    assert [i["id"] for i in body["items"]] == newest_first(api, "a", "b", "c", "d", "p", "f")
    assert body["next_cursor"] is None
    a = next(i for i in body["items"] if i["id"] == api.dead["a"].id)
    assert a == {
        "id": api.dead["a"].id, "type": "email.send", "reason": "exhausted", "dead_at": api.dead["a"].dead_at,
        "attempts": 3, "last_error": {"type": "SMTPError", "message": "Connection refused"},
        "source": api.dead["a"].source.model_dump(), "replayed_by": None,
    }  # fmt: skip
    assert api.runtime.dead_letters.indexer.skipped == 1


async def test_filters(api: Api) -> None:
    """type and reason (repeatable), since/until (ms or RFC 3339) and q each narrow the list."""
    t = api.dead["c"].dead_at
    assert await listed(api, type="email.send") == newest_first(api, "a", "b")
    assert await listed(api, type=["email.send", "report.build"]) == newest_first(api, "a", "b", "f")
    assert await listed(api, reason="exhausted") == newest_first(api, "a", "d")
    assert await listed(api, reason=["poison", "timeout"]) == newest_first(api, "c", "p")
    assert await listed(api, since=t, until=t) == newest_first(api, "c", "d")
    rfc = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t // 1000)) + f".{t % 1000:03d}Z"
    assert await listed(api, since=rfc) == newest_first(api, "c", "d", "p", "f")
    assert await listed(api, q="disk FULL") == ids_of(api, "d")
    assert await listed(api, q="smtperror", type="email.send") == ids_of(api, "a")
    assert await listed(api, q="nothing like this") == []


async def test_pages_by_cursor(api: Api) -> None:
    """limit=2 pages walk the whole list once, in order, through ties, and then stop."""
    seen: list[str] = []
    cursor: str | None = None
    for _ in range(10):
        params: dict[str, Any] = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        r = await api.client.get("/dlq", params=params)
        assert r.status_code == 200, r.text
        seen += [i["id"] for i in r.json()["items"]]
        cursor = r.json()["next_cursor"]
        if cursor is None:
            break
    assert seen == newest_first(api, "a", "b", "c", "d", "p", "f")
    page = await api.client.get("/dlq", params={"limit": 1, "reason": "exhausted"})
    after = await api.client.get("/dlq", params={"limit": 5, "reason": "exhausted",
                                                 "cursor": page.json()["next_cursor"]})  # fmt: skip
    assert [i["id"] for i in after.json()["items"]] == newest_first(api, "a", "d")[1:]
    first = await api.client.get("/dlq", params={"limit": 1})
    until_c = {"cursor": first.json()["next_cursor"], "until": api.dead["c"].dead_at}
    assert await listed(api, **until_c) == newest_first(api, "a", "b", "c", "d")


async def test_show_one_and_404(api: Api) -> None:
    """GET /dlq/{id} has the job, every attempt's error with traceback and worker; poison has raw."""
    a = api.dead["a"]
    r = await api.client.get(f"/dlq/{a.id}")
    assert r.status_code == 200
    body = r.json()
    assert body["job"]["id"] == a.id and body["job"]["key"] == "user-1"
    assert [e["attempt"] for e in body["errors"]] == [1, 2, 3]
    assert body["errors"][0]["traceback"].startswith("Traceback") and body["errors"][0]["worker"] == "w1"
    assert body["source"] == a.source.model_dump() and body["replayed_by"] is None
    p = (await api.client.get(f"/dlq/{api.dead['p'].id}")).json()
    assert p["job"] is None and base64.b64decode(p["raw"]) == b"\x00garbage"
    missing = await api.client.get("/dlq/no-such-id")
    assert missing.status_code == 404 and "no-such-id" in missing.json()["detail"]
    assert (await api.client.get("/dlq/replays/nope")).status_code == 404


# -- replay ------------------------------------------------------------------------------


async def test_dry_run_counts_and_samples(api: Api) -> None:
    """A dry run (the default) answers the count and sample and enqueues nothing."""
    r = await api.client.post("/dlq/replay", json={"types": ["email.send", "image.resize"]})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["matched"] == 4
    assert sorted(s["id"] for s in body["sample"]) == sorted(ids_of(api, "a", "b", "c", "d"))
    assert all(s["replayed_by"] is None for s in body["sample"])
    everything = await api.client.post("/dlq/replay", json={})
    assert everything.json()["matched"] == 6 and len(everything.json()["sample"]) == 6
    for p in Priority:
        assert await topic_size(api.settings, api.settings.topics.jobs(p)) == 0


async def test_replay_enqueues_new_jobs_once(api: Api) -> None:
    """A replay enqueues new jobs (new id, attempt 1, replay_of, new priority), skips poison,
    marks the records, publishes `replayed`; the same replay again enqueues nothing."""
    s = api.settings
    body = {"reasons": ["exhausted", "timeout", "poison"], "priority": "low"}
    report = await replay(api, body)
    assert report["state"] == "done", report
    assert (report["matched"], report["replayed"], report["skipped"], report["failed"]) == (4, 3, 1, 0)
    assert report["skipped_by_reason"] == {"already_replayed": 0, "no_job": 1, "expired": 0}
    records = await read_topic(s, s.topics.jobs(Priority.low), 3)
    jobs = {str(decode_job(r.value).replay_of): (decode_job(r.value), r) for r in records}
    assert set(jobs) == set(ids_of(api, "a", "c", "d"))
    for old_id, (job, rec) in jobs.items():
        old = next(d for d in api.dead.values() if d.id == old_id)
        assert old.job is not None
        assert job.id != old_id and job.attempt == 1 and job.errors == [] and job.priority == Priority.low
        assert (job.type, job.payload, job.key) == (old.job.type, old.job.payload, old.job.key)
        assert rec.partition == partition_for(job.partition_key, s.partitions)
        shown = (await api.client.get(f"/dlq/{old_id}")).json()
        assert shown["replayed_by"] == report["replay_id"] and shown["replayed_as"] == job.id
    states = await status_events(s, {*jobs, *(j.id for j, _ in jobs.values())})
    for old_id, (job, _) in jobs.items():
        assert states[job.id][0]["state"] == "queued" and states[job.id][0]["replay_of"] == old_id
        replayed = next(e for e in states[old_id] if e["state"] == "replayed")
        assert replayed["new_job_id"] == job.id and replayed["replay_id"] == report["replay_id"]

    again = await replay(api, body)
    assert (again["state"], again["replayed"], again["skipped"]) == ("done", 0, 4)
    assert again["skipped_by_reason"]["already_replayed"] == 3
    assert await topic_size(s, s.topics.jobs(Priority.low)) == 3

    forced = await replay(api, {**body, "force": True, "ids": ids_of(api, "a")})
    assert (forced["matched"], forced["replayed"]) == (1, 1)
    assert await topic_size(s, s.topics.jobs(Priority.low)) == 4
    listed_a = (await api.client.get("/dlq", params={"type": "email.send", "reason": "exhausted"})).json()
    assert listed_a["items"][0]["replayed_by"] == forced["replay_id"]


async def test_concurrent_replays_enqueue_each_record_once(api: Api) -> None:
    """Two replays of the same records started at once enqueue each record exactly once."""
    s = api.settings
    body = {"types": ["image.resize", "email.send"], "dry_run": False}
    first, second = await asyncio.gather(
        api.client.post("/dlq/replay", json=body), api.client.post("/dlq/replay", json=body)
    )
    assert first.status_code == second.status_code == 202
    final: dict[str, dict[str, Any]] = {}  # the last report of each replay
    for r in (first, second):
        rid = r.json()["replay_id"]

        async def done(rid: str = rid) -> bool:
            final[rid] = (await api.client.get(f"/dlq/replays/{rid}")).json()
            return bool(final[rid]["state"] == "done")

        await wait_until(done, f"replay {rid}")
    a, b = final.values()
    assert a["replayed"] + b["replayed"] == 4
    assert a["skipped"] + b["skipped"] == 4
    total = sum([await topic_size(s, s.topics.jobs(p)) for p in Priority])
    assert total == 4
    assert await topic_size(s, s.topics.jobs(Priority.high)) == 1  # c kept its priority


async def test_rate_paces_the_replay(api: Api) -> None:
    """With rate=8 jobs/s four jobs go two at a time, a quarter second apart, and all arrive."""
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    replayer = api.runtime.dead_letters.replayer
    replayer.clock = lambda: 100.0  # time stands still: the waits are the pacer's alone
    replayer.sleep = sleep
    report = await replay(api, {"types": ["email.send", "image.resize"], "rate": 8})
    assert report["replayed"] == 4
    assert slept == [0.0, 0.25]  # the wait before each pair, from a clock that did not move
    s = api.settings
    assert sum([await topic_size(s, s.topics.jobs(p)) for p in Priority]) == 4


@pytest.mark.parametrize(
    ("method", "params", "field"),
    [
        ("GET", {"reason": "bogus"}, "reason.0"),
        ("GET", {"type": "has space"}, "type.0"),
        ("GET", {"since": "yesterday"}, "since"),
        ("GET", {"since": "2026-01-01T00:00:00"}, "since"),
        ("GET", {"since": 10, "until": 5}, "until"),
        ("GET", {"limit": 0}, "limit"),
        ("GET", {"limit": 501}, "limit"),
        ("GET", {"cursor": "not-a-cursor"}, "cursor"),
        ("GET", {"since": "1" * 4301}, "since"),
        ("GET", {"until": "9" * 5000}, "until"),
        ("POST", {"reasons": ["bogus"]}, "reasons.0"),
        ("POST", {"rate": 0}, "rate"),
        ("POST", {"priority": "urgent"}, "priority"),
        ("POST", {"since": "soon"}, "since"),
        ("POST", {"since": "1" * 4301}, "since"),
        ("POST", {"until": 10**30}, "until"),
        ("POST", {"surprise": 1}, "surprise"),
        ("POST", {"ids": "abc"}, "ids"),
    ],
)
async def test_bad_filters_are_422_naming_the_field(
    api: Api, method: str, params: dict[str, Any], field: str
) -> None:
    """Each bad filter is a 422 whose message and errors name the field."""
    if method == "GET":
        r = await api.client.get("/dlq", params=params)
    else:
        r = await api.client.post("/dlq/replay", json=params)
    assert r.status_code == 422, r.text
    body = r.json()
    assert body["errors"][0]["field"] == field
    assert field.split(".")[0] in body["detail"]


async def test_bad_json_body_is_400(api: Api) -> None:
    """A replay body that is not JSON is a 400 that says so."""
    r = await api.client.post("/dlq/replay", content=b"{nope", headers={"content-type": "application/json"})
    assert r.status_code == 400 and "JSON" in r.json()["detail"]


@pytest.mark.slow
async def test_indexer_rides_out_a_redis_outage(settings: Settings, tmp_path: Path) -> None:
    """With Redis down the indexer retries the batch it holds; back up, it indexes it, unrestarted."""
    server = RedisServer(tmp_path / "redis", procs.free_port())
    await asyncio.to_thread(server.start)
    client = Redis.from_url(server.url, socket_timeout=1, socket_connect_timeout=1)
    store = DlqStore(client, settings.redis_prefix, DLQ_RETENTION_MS)
    now = int(time.time() * 1000)
    first, second = (letter(settings, "x.y", DeadReason.exhausted, now + i) for i in (0, 1))
    try:
        async with DlqIndexer(settings, store) as indexer:
            await write_dead(settings, [first])
            await wait_until(lambda: _has(store, first.id), "the first record indexed")
            await asyncio.to_thread(server.stop)
            await write_dead(settings, [second])
            await wait_until(lambda: _true(indexer.redis_down), "the indexer to notice Redis is down")
            await asyncio.to_thread(server.start)

            async def indexed_and_back() -> bool:
                # the record can be readable before the indexer has seen its own write answered
                return await _has(store, second.id) and not indexer.redis_down

            await wait_until(indexed_and_back, "the second record indexed after the outage, Redis noted back")
            assert indexer.indexed == 2
    finally:
        await client.aclose()
        await asyncio.to_thread(server.stop)


async def _has(store: DlqStore, dead_id: str) -> bool:
    try:
        return await store.get(dead_id) is not None
    except (RedisError, OSError):
        return False


async def _true(value: bool) -> bool:
    return value


async def status_events(settings: Settings, job_ids: set[str]) -> dict[str, list[dict[str, Any]]]:
    """Every status event of `job_ids`, once each id has at least one."""
    from schemas import decode_status_batch

    found: dict[str, list[dict[str, Any]]] = {}
    consumer = AIOKafkaConsumer(
        settings.topics.status, bootstrap_servers=settings.kafka_bootstrap_servers,
        auto_offset_reset="earliest", group_id=None,
    )  # fmt: skip
    await consumer.start()
    try:
        async with asyncio.timeout(WAIT):
            while not job_ids <= found.keys():
                for recs in (await consumer.getmany(timeout_ms=200)).values():
                    for rec in recs:
                        for ev in decode_status_batch(rec.value):
                            found.setdefault(ev["job_id"], []).append(ev)
    finally:
        await consumer.stop()
    return found
