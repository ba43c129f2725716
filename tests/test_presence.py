"""Workers' heartbeats in Redis (`jobstream.presence`), read for the dashboard's workers page."""

from __future__ import annotations

from redis.asyncio import Redis

from jobstream.presence import Presence, Vitals, index_key, read_workers
from jobstream.settings import Settings
from tests.helpers import wait_until


def presence(redis: Redis, prefix: str, worker_id: str, ttl_s: float) -> Presence:
    vitals = Vitals(
        running=lambda: 3, buffered=lambda: 7, paused=lambda: 1, partitions=lambda: ["t.jobs.high[0]"]
    )
    return Presence(redis, prefix, worker_id, {"app": "demo", "concurrency": 8}, vitals, ttl_s)


async def test_a_heartbeat_says_who_runs_what(redis: Redis, settings: Settings) -> None:
    p = presence(redis, settings.redis_prefix, "host-a:1", ttl_s=10)
    await p.beat()
    [worker] = await read_workers(redis, settings.redis_prefix)
    assert worker["id"] == "host-a:1" and worker["app"] == "demo" and worker["concurrency"] == 8
    assert (worker["running"], worker["buffered"], worker["paused"]) == (3, 7, 1)
    assert worker["partitions"] == ["t.jobs.high[0]"] and worker["at"] >= worker["started_at"]


async def test_a_worker_that_stops_leaves_at_once_and_one_that_dies_within_its_ttl(
    redis: Redis, settings: Settings
) -> None:
    prefix = settings.redis_prefix
    leaving, dying = presence(redis, prefix, "leaves:1", ttl_s=30), presence(redis, prefix, "dies:2", ttl_s=1)
    leaving.start()
    dying.start()
    await wait_until(lambda: read_workers(redis, prefix), 2, "both workers to beat")
    await leaving.stop()
    assert [w["id"] for w in await read_workers(redis, prefix)] == ["dies:2"]
    assert dying._task is not None
    dying._task.cancel()  # dead: no more heartbeats, nothing removed

    async def gone() -> list[str]:
        return [] if await read_workers(redis, prefix) else ["gone"]

    await wait_until(gone, 1, "the dead worker's heartbeat to expire", timeout_s=10)
    assert await redis.zcard(index_key(prefix)) == 0  # pruned by the reader
