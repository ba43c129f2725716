"""Recurring schedules against the real broker and Redis: the API, two schedulers at once, a
scheduler dying mid-claim, a Redis restart, and catch-up after downtime."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import subprocess
import sys
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from typing import Any

import httpx
import orjson
import pytest
from redis.asyncio import Redis

from consumer import Worker
from consumer.examples import app as examples
from jobstream.cli.stack import RedisServer
from jobstream.kafka import Partitioner, make_producer
from jobstream.settings import Settings, WorkerSettings
from jobstream.status_publisher import StatusPublisher
from scheduler.loop import Scheduler
from scheduler.recurring import Schedule, ScheduleClaims, ScheduleSpec, ScheduleStore
from scheduler.recurring.store import Release
from schemas import JobEnvelope, Priority, decode_job, now_ms, rfc3339
from tests.conftest import MS
from tests.helpers import StatusLog, crash_and_restart, read_topic, wait_until
from tests.pipeline import in_process

WAIT = 30_000 * MS


class NeverReleases(ScheduleClaims):
    """Claims of a scheduler that dies once it has fired: it never releases a schedule."""

    def _taken(self, ids: Sequence[str]) -> list[Release]:
        return []


@contextlib.asynccontextmanager
async def recurring(
    settings: Settings, redis: Redis, lease_ms: int = 10_000, grace_ms: int = 10_000,
    claims: type[ScheduleClaims] = ScheduleClaims,
) -> AsyncIterator[Scheduler]:  # fmt: skip
    """A loop firing schedules' occurrences, with its own producer, as `jobstream scheduler` runs one."""
    producer = make_producer(settings, linger_ms=0)
    await producer.start()
    try:
        async with StatusPublisher(producer, settings.topics.status, settings.status_partitions) as pub:
            source = claims(ScheduleStore(redis, settings.redis_prefix), grace_ms)
            loop = Scheduler(source, producer, Partitioner(producer), pub, settings.topics, lease_ms=lease_ms)
            async with loop:
                yield loop
    finally:
        await producer.close()


async def put(store: ScheduleStore, name: str, first: int, **fields: Any) -> None:
    """Store a schedule (every second from `first` unless `fields` say otherwise), as the API does."""
    spec = ScheduleSpec.model_validate({"type": "example.echo", "every_ms": 1_000, **fields})
    schedule = Schedule(name=name, spec=spec, created_at=first, updated_at=first)
    await store.put(name, schedule.encode(), first)


async def occurrences(settings: Settings, at_least: int) -> list[JobEnvelope]:
    records = await read_topic(settings, settings.topics.jobs(Priority.normal), at_least, timeout_s=60)
    return [decode_job(r.value) for r in records]


async def until(t_ms: int) -> None:
    """Wait for the clock to reach `t_ms` (the event these tests wait on is time passing)."""
    while (left := t_ms - now_ms()) > 0:  # noqa: ASYNC110 - a clock, no event
        await asyncio.sleep(left / 1000)


def per_schedule(jobs: list[JobEnvelope]) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for job in jobs:
        assert job.schedule is not None and job.occurrence_at is not None
        assert job.id == f"sched:{job.schedule}:{job.occurrence_at}"
        out.setdefault(job.schedule, []).append(job.occurrence_at)
    return {name: sorted(times) for name, times in out.items()}


async def test_a_release_counts_only_while_its_claim_is_held(settings: Settings, redis: Redis) -> None:
    """A holder's release acts only while its claim is the one held: not after its lease ran
    out and another took the schedule, nor after a change replaced the claim; and a name
    deleted and made again gets a new version, never the old definition's."""
    store = ScheduleStore(redis, settings.redis_prefix)
    now = now_ms()
    await put(store, "s", now)
    [a] = (await store.claim(now, now, 100, 10)).schedules  # holder A, lease 100 ms
    [b] = (await store.claim(now + 200, now + 200, 10_000, 10)).schedules  # A's lease ran out: B
    assert (a.taken_back, b.taken_back) == (False, True) and b.lease != a.lease
    await store.release([Release("s", a.lease, now + 5_000, fired=1)], now + 300)  # A, late: ignored
    [state] = await store.states(["s"])
    assert (state.fired, state.next) == (0, now)
    await store.release([Release("s", b.lease, now + 1_000, fired=1)], now + 300)
    [state] = await store.states(["s"])
    assert (state.fired, state.next) == (1, now + 1_000)

    [c] = (await store.claim(now + 1_000, now + 1_000, 10_000, 10)).schedules
    await put(store, "s", now + 9_000)  # changed while held: the change sets the next occurrence
    await store.release([Release("s", c.lease, now + 2_000, fired=1)], now + 1_100)
    [state] = await store.states(["s"])
    assert (state.fired, state.next) == (1, now + 9_000)

    versions = [c.version]
    assert await store.delete("s")
    await put(store, "s", now + 20_000)
    [d] = (await store.claim(now + 20_000, now + 20_000, 10_000, 10)).schedules
    assert int(d.version) > int(versions[0]) + 1  # put, delete and put again: never an old version


async def test_two_schedulers_for_a_minute_fire_each_occurrence_once(
    settings: Settings, redis: Redis
) -> None:
    """Two schedulers running at once for a minute over five 1-second schedules: one record
    per occurrence, none missing, none twice, none before its time."""
    store = ScheduleStore(redis, settings.redis_prefix)
    first = now_ms() + 500
    names = [f"tick-{i}" for i in range(5)]
    async with recurring(settings, redis) as a, recurring(settings, redis) as b:
        for i, name in enumerate(names):
            await put(store, name, first + i * 100, start_at=_rfc(first + i * 100))
        await until(first + 60_000)
    records = await read_topic(settings, settings.topics.jobs(Priority.normal), 5 * 60, timeout_s=30)
    jobs = [decode_job(r.value) for r in records]
    assert not [i for i, n in Counter(j.id for j in jobs).items() if n > 1], "an occurrence fired twice"
    times = per_schedule(jobs)
    assert sorted(times) == names
    for i, name in enumerate(names):
        start = first + i * 100
        assert times[name][0] == start and times[name] == list(range(start, times[name][-1] + 1, 1_000))
        assert len(times[name]) >= 59
    assert all(r.timestamp >= decode_job(r.value).not_before for r in records)  # never early
    assert a.fired > 0 and b.fired > 0, "both schedulers took part"
    state = (await store.states(names))[0]
    assert state.fired == len(times[names[0]]) and state.missed == 0


async def test_a_scheduler_that_dies_mid_claim_loses_no_occurrence(settings: Settings, redis: Redis) -> None:
    """A scheduler claims a schedule and dies before firing: after its lease another fires
    the occurrence it held, and every later one, each once."""
    store = ScheduleStore(redis, settings.redis_prefix)
    first = now_ms() + 200
    await put(store, "heartbeat", first, start_at=_rfc(first))
    lease_ms = 1_000
    dead = await store.claim(first, first, lease_ms, 10)  # ... and it never releases
    assert [c.name for c in dead.schedules] == ["heartbeat"]
    async with recurring(settings, redis, lease_ms=lease_ms):
        jobs = await occurrences(settings, 4)
    times = per_schedule(jobs)["heartbeat"]
    assert times[:4] == [first, first + 1_000, first + 2_000, first + 3_000]
    assert len(set(times)) == len(times)


async def test_a_scheduler_that_dies_after_firing_leaves_one_job(settings: Settings, redis: Redis) -> None:
    """A scheduler fires an occurrence and dies before releasing its schedule: after the
    lease another fires the same occurrence again, as the same job id, and the worker runs
    it once (the second record is dropped by the completed-id check)."""
    store = ScheduleStore(redis, settings.redis_prefix)
    first = now_ms() + 300
    await put(store, "once", first, start_at=_rfc(first), limit=1)
    lease_ms = 1_500
    worker = WorkerSettings(**{**settings.model_dump(), "session_timeout_ms": 3000})
    async with StatusLog(settings) as status, Worker(examples, worker):
        async with recurring(settings, redis, lease_ms=lease_ms, claims=NeverReleases):
            await status.wait_for(
                lambda: "completed" in status.states(f"sched:once:{first}"), WAIT, "the first run"
            )
        async with recurring(settings, redis, lease_ms=lease_ms):
            jobs = await occurrences(settings, 2)
        job_id = f"sched:once:{first}"
        assert [j.id for j in jobs] == [job_id, job_id]  # fired twice ...
        await status.wait_for(lambda: status.states(job_id).count("completed") >= 1, WAIT, "its events")
    assert status.states(job_id).count("active") == 1  # ... run once
    [state] = await store.states(["once"])
    assert (state.next, state.fired) == (None, 1)  # ended after its one occurrence


async def test_schedules_survive_a_redis_restart(settings: Settings, private_redis: RedisServer) -> None:
    """Schedules kept in a Redis killed (SIGKILL) and restarted on its append-only file fire."""
    server = private_redis
    client = Redis.from_url(server.url)
    await client.config_set("appendfsync", "always")
    first = now_ms() + 1_000
    await put(ScheduleStore(client, settings.redis_prefix), "kept", first, start_at=_rfc(first))
    await client.aclose()
    crash_and_restart(server)
    client = Redis.from_url(server.url)
    store = ScheduleStore(client, settings.redis_prefix)
    [state] = await store.states(["kept"])
    assert state.next == first
    async with recurring(settings, client):
        jobs = await occurrences(settings, 2)
    assert per_schedule(jobs)["kept"][:2] == [first, first + 1_000]
    await client.aclose()


async def test_catch_up_after_the_schedulers_were_down(settings: Settings, redis: Redis) -> None:
    """No scheduler runs for five occurrences of three 1-second schedules; then one starts.
    `none` skips them, `last` fires the newest, `all` fires all five; each fires on from there."""
    store = ScheduleStore(redis, settings.redis_prefix)
    first = now_ms() + 200
    for mode in ("none", "last", "all"):
        await put(store, mode, first, start_at=_rfc(first), catch_up=mode)
    await until(first + 4_600)  # occurrences first .. first + 4 s missed
    started = now_ms()
    async with recurring(settings, redis, grace_ms=300):
        await until(first + 7_100)
    times = per_schedule(await occurrences(settings, 1 + 5 + 3 * 3))
    late = {name: [t for t in ts if t < started - 300] for name, ts in times.items()}
    assert late == {"none": [], "last": [first + 4_000], "all": [first + i * 1_000 for i in range(5)]}
    for name in ("none", "last", "all"):
        assert [t for t in times[name] if t >= first + 5_000][:2] == [first + 5_000, first + 6_000]
    states = {s.name: s for s in await store.states(["none", "last", "all"])}
    assert (states["none"].missed, states["last"].missed, states["all"].missed) == (5, 4, 0)


# -- the API --------------------------------------------------------------------------------


@pytest.fixture
async def api(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with in_process(settings) as client:
        yield client


NIGHTLY = {
    "cron": "30 2 * * *",
    "tz": "Europe/Berlin",
    "type": "example.echo",
    "payload": {"report": "daily"},
}


async def test_the_api_manages_a_schedule(api: httpx.AsyncClient, settings: Settings) -> None:
    """PUT creates (201) and updates in place (200); GET lists it with its next run times;
    pause, resume, run one now (its job completes and shows among the runs), delete."""
    r = await api.put("/schedules/nightly", json=NIGHTLY)
    assert r.status_code == 201, r.text
    made = r.json()
    assert (made["state"], made["cron"], made["tz"], made["fired"]) == (
        "active",
        "30 2 * * *",
        "Europe/Berlin",
        0,
    )
    assert len(made["next_runs"]) == 3 and made["next_runs"][0].endswith(("T00:30:00.000Z", "T01:30:00.000Z"))

    r = await api.put("/schedules/nightly", json={**NIGHTLY, "cron": "0 4 * * *"})
    assert r.status_code == 200 and r.json()["cron"] == "0 4 * * *"
    assert r.json()["created_at"] == made["created_at"]
    listed = (await api.get("/schedules")).json()
    assert [s["name"] for s in listed["items"]] == ["nightly"] and listed["next_cursor"] is None

    paused = (await api.post("/schedules/nightly/pause")).json()
    assert (paused["state"], paused["next_runs"]) == ("paused", [])
    resumed = (await api.post("/schedules/nightly/resume")).json()
    assert resumed["state"] == "active" and len(resumed["next_runs"]) == 3

    async with StatusLog(settings) as status:
        r = await api.post("/schedules/nightly/run")
        assert r.status_code == 202, r.text
        job_id = r.json()["job_id"]
        assert job_id == f"sched:nightly:{r.json()['occurrence_at']}"
        await status.wait_for(
            lambda: "completed" in status.states(job_id), WAIT, "the occurrence to complete"
        )
        events = status.events[job_id]
    assert all(e["schedule"] == "nightly" for e in events)

    async def projected() -> list[dict[str, Any]]:
        r = await api.get(f"/jobs/{job_id}")
        return [r.json()] if r.status_code == 200 and r.json()["state"] == "completed" else []

    await wait_until(projected, 1, "the projection to say completed")
    [job] = await projected()
    assert (job["schedule"], job["occurrence_at"], job["result"]) == (
        "nightly",
        events[0]["occurrence_at"],
        {"report": "daily"},
    )
    detail = (await api.get("/schedules/nightly")).json()
    assert [(run["job_id"], run.get("manual"), run["state"]) for run in detail["runs"]] == [
        (job_id, True, "completed")
    ]
    assert detail["spec"]["payload"] == {"report": "daily"}

    assert (await api.delete("/schedules/nightly")).json() == {"name": "nightly", "deleted": True}
    assert (await api.get("/schedules/nightly")).status_code == 404
    assert (await api.post("/schedules/nightly/run")).status_code == 404


async def test_the_api_fires_a_schedule_every_second(api: httpx.AsyncClient, settings: Settings) -> None:
    """The API's own scheduler fires a 1-second schedule; each occurrence's job completes and
    the schedule counts it."""
    async with StatusLog(settings) as status:
        r = await api.put("/schedules/often", json={"every_ms": 1_000, "type": "example.echo", "limit": 3})
        assert r.status_code == 201, r.text
        await status.wait_for(lambda: status.count("completed") >= 3, WAIT, "three occurrences to complete")

    async def ended() -> list[dict[str, Any]]:  # released once Kafka has its last occurrence
        detail = (await api.get("/schedules/often")).json()
        return [detail] if detail["state"] == "ended" else []

    await wait_until(ended, 1, "the schedule to end after its limit")
    [detail] = await ended()
    assert (detail["fired"], len(detail["runs"])) == (3, 3), detail
    times = [run["occurrence_at"] for run in detail["runs"]]
    assert [b - a for a, b in itertools.pairwise(times)] == [1_000, 1_000]


@pytest.mark.parametrize(
    ("name", "body", "status", "field"),
    [
        ("bad name!", NIGHTLY, 422, "name"),
        ("x", {**NIGHTLY, "cron": "0 25 * * *"}, 422, "cron"),
        ("x", {**NIGHTLY, "tz": "Europe/Atlantis"}, 422, "tz"),
        ("x", {"every_ms": 500, "type": "t"}, 422, "every_ms"),
        ("x", {"type": "t"}, 422, "cron"),
        ("x", {"every_ms": 5_000, "type": "t", "end_at": "2001-01-01T00:00:00Z"}, 422, "end_at"),
        ("x", {**NIGHTLY, "run_at": "2030-01-01T00:00:00Z"}, 422, "run_at"),
        ("x", {**NIGHTLY, "payload": {"blob": "x" * 300_000}}, 413, "payload"),
    ],
)
async def test_a_bad_schedule_is_refused_naming_the_field(
    api: httpx.AsyncClient, name: str, body: dict[str, Any], status: int, field: str
) -> None:
    r = await api.put(
        f"/schedules/{name}", content=orjson.dumps(body), headers={"content-type": "application/json"}
    )
    assert r.status_code == status, r.text
    assert [e["field"] for e in r.json()["errors"]][:1] == [field], r.text
    assert (await api.get("/schedules")).json()["items"] == []


def _rfc(t_ms: int) -> str:
    return rfc3339(t_ms)


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "jobstream.cli", "schedules", *args],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


async def test_schedules_from_the_terminal(api_url: str, env: dict[str, str]) -> None:
    """set, list, show, run, pause, resume and delete through `jobstream schedules`; a bad
    cron is refused naming the field."""

    async def run(*args: str) -> subprocess.CompletedProcess[str]:
        return await asyncio.to_thread(cli, env, *args, "--api", api_url)

    out = await run(
        "set", "nightly", "--cron", "30 2 * * *", "--tz", "Europe/Berlin", "--type", "example.echo"
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("created") and "30 2 * * * (Europe/Berlin)" in out.stdout
    out = await run("set", "often", "--every", "3600", "--type", "example.echo", "--payload", '{"n": 1}')
    assert out.returncode == 0 and "every 3600 s" in out.stdout, out.stderr
    out = await run("list")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].split()[:3] == ["NAME", "STATE", "WHEN"] and [ln.split()[0] for ln in lines[1:]] == [
        "nightly",
        "often",
    ]
    out = await run("run", "often")
    assert out.returncode == 0 and out.stdout.startswith("fired sched:often:"), out.stderr
    job_id = out.stdout.split()[1]
    out = await run("show", "often")
    assert out.returncode == 0 and job_id in out.stdout and '"payload": {"n": 1}' in out.stdout, out.stdout
    assert "paused" in (await run("pause", "often")).stdout
    assert "(active)" in (await run("resume", "often")).stdout
    assert (await run("delete", "often")).stdout.strip() == "deleted often"
    out = await run("show", "often")
    assert out.returncode == 1 and "404" in out.stderr
    out = await run("set", "bad", "--cron", "0 25 * * *", "--type", "example.echo")
    assert out.returncode == 1 and "cron" in out.stderr
