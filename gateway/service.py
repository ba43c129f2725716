"""The gateway's long-lived parts, opened and closed together: Redis, feed, projector, hub."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from contextlib import AsyncExitStack
from typing import Any

from redis.asyncio import Redis

from gateway.feed import Feed
from gateway.hub import Hub
from gateway.resume import Backfill
from jobstream.access.ring import KeyRing
from jobstream.lifecycle import Lifecycle
from jobstream.projection import Projection
from jobstream.projector import Projector
from jobstream.settings import GatewaySettings

log = logging.getLogger("jobstream.gateway")

REDIS_PING_TIMEOUT_S = 1.0
SNAPSHOT_CONCURRENCY = 32  # HGETALLs in flight per snapshot, so one snapshot opens few connections
STARTUP_WAIT_S = 15.0


class Gateway(Lifecycle):
    """One gateway process: a `jobstream.lifecycle.Service` (the app's lifespan uses it as an
    async context manager).

    Opening starts Redis, the feed (positioned at the end of the status topic, waited for
    up to `STARTUP_WAIT_S`) and, when `settings.projector`, the projector; the feed and the
    projector retry in the background while Kafka or the topic is missing. `close()`
    closes every client with 1001, then stops the projector and the feed, then closes
    Redis; it returns when all of them are closed.
    """

    def __init__(self, settings: GatewaySettings) -> None:
        super().__init__()
        self.settings = settings
        self.hub = Hub(settings.client_queue_max, settings.client_queue_bytes)
        self.backfill = Backfill(settings)
        self._redis: Redis | None = None
        self._projection: Projection | None = None
        self.feed: Feed | None = None
        self.projector: Projector | None = None
        self._stack = AsyncExitStack()
        # API keys, when required (`jobstream.access`); Redis is connected at start
        self.keys = KeyRing.of(settings) if settings.auth == "required" else None

    async def _startup(self) -> None:
        s = self.settings
        redis = Redis.from_url(s.redis_url, socket_connect_timeout=2, socket_timeout=5)
        self._stack.push_async_callback(redis.aclose)
        self._redis = redis
        if self.keys is not None:
            self.keys.connect(redis)
        self._projection = Projection(redis, s.redis_prefix, s.state_ttl_s)
        self.feed = await self._stack.enter_async_context(Feed(s, self.hub))
        if s.projector:
            self.projector = await self._stack.enter_async_context(Projector(s, redis))
        # Serve only once at the topic's end when Kafka is there, so a client that
        # subscribes right after startup misses nothing; else serve and keep trying.
        if not await self.feed.wait_positioned(STARTUP_WAIT_S):
            log.warning("gateway serving before the feed is positioned; /readyz says kafka down")
        log.info("gateway started prefix=%s projector=%s", s.topic_prefix, s.projector)

    async def _shutdown(self) -> None:
        """Close clients (1001), projector, feed, Redis, in that order."""
        await self.drain()
        await self._stack.aclose()
        log.info("gateway stopped prefix=%s", self.settings.topic_prefix)

    async def drain(self) -> None:
        """Close every client with 1001 and refuse new ones; returns once they are closed."""
        await self.hub.close()

    @property
    def redis(self) -> Redis:
        if self._redis is None:
            raise RuntimeError("gateway not started")
        return self._redis

    @property
    def projection(self) -> Projection:
        if self._projection is None:
            raise RuntimeError("gateway not started")
        return self._projection

    async def snapshot(self, job_ids: list[str]) -> list[dict[str, Any]]:
        """The projection's state of each known job among `job_ids` (unknown ones left out)."""
        projection = self.projection
        states: list[dict[str, Any]] = []
        for i in range(0, len(job_ids), SNAPSHOT_CONCURRENCY):
            chunk = job_ids[i : i + SNAPSHOT_CONCURRENCY]
            got = await asyncio.gather(*(projection.get(j) for j in chunk))
            states.extend(s for s in got if s is not None)
        return states

    async def readiness(self) -> dict[str, str]:
        """`{"kafka": "ok"|"down", "redis": "ok"|"down"}`; each check bounded by a short timeout."""
        kafka, redis = await asyncio.gather(self._kafka_ok(), self._redis_ok())
        return {"kafka": "ok" if kafka else "down", "redis": "ok" if redis else "down"}

    async def _kafka_ok(self) -> bool:
        return self.feed is not None and await self.feed.ready()

    async def _redis_ok(self) -> bool:
        if self._redis is None:
            return False
        with contextlib.suppress(Exception):
            async with asyncio.timeout(REDIS_PING_TIMEOUT_S):
                return bool(await self._redis.ping())
        return False
