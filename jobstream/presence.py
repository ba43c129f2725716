"""Each worker's heartbeat in Redis, for the dashboard's workers page (`GET /workers` on
the gateway): who runs, with which partitions, how busy.

Every `interval_s` a worker writes `{p}:worker:<id>` (JSON: id, app, host, pid,
concurrency, running, buffered, paused, partitions, handler types, started_at, at) with a
time to live of the group's session timeout, and scores its id in the `{p}:workers`
sorted set by the time. A worker that dies drops off when its key expires, within the
session timeout, the time the group takes to notice it too; one that stops cleanly
removes both at once. Readers (`read_workers`) take the ids from the set, the records
that still exist, and remove the ids whose record expired.
One pipelined round trip per heartbeat; nothing per job.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
from redis.asyncio import Redis
from redis.exceptions import RedisError

log = logging.getLogger("jobstream.presence")

INDEX_TTL_S = 7 * 24 * 3600  # the index outlives its members; readers prune it


def worker_key(prefix: str, worker_id: str) -> str:
    return f"{prefix}:worker:{worker_id}"


def index_key(prefix: str) -> str:
    return f"{prefix}:workers"


@dataclass
class Vitals:
    """What a heartbeat reads of its worker, each when it is sent."""

    running: Callable[[], int]
    buffered: Callable[[], int]
    paused: Callable[[], int]
    partitions: Callable[[], list[str]]


class Presence:
    """Heartbeats of one worker until `stop()`; Redis trouble is logged, never raised."""

    def __init__(
        self, redis: Redis, prefix: str, worker_id: str, static: dict[str, Any], vitals: Vitals, ttl_s: float
    ) -> None:
        self._redis = redis
        self._key = worker_key(prefix, worker_id)
        self._index = index_key(prefix)
        self._id = worker_id
        self._static = {
            "id": worker_id,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "started_at": int(time.time() * 1000),
            **static,
        }
        self._vitals = vitals
        self._ttl_ms = max(1000, int(ttl_s * 1000))
        self.interval_s = max(0.2, min(2.0, ttl_s / 3))
        self._task: asyncio.Task[None] | None = None
        self._warned = False

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="worker-presence")

    async def stop(self) -> None:
        """Stop the heartbeats and take this worker off the list."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        with contextlib.suppress(RedisError, OSError, TimeoutError):
            async with asyncio.timeout(2), self._redis.pipeline(transaction=False) as pipe:
                pipe.delete(self._key)
                pipe.zrem(self._index, self._id)
                await pipe.execute()

    def record(self) -> dict[str, Any]:
        v = self._vitals
        return {
            **self._static,
            "running": v.running(),
            "buffered": v.buffered(),
            "paused": v.paused(),
            "partitions": v.partitions(),
            "at": int(time.time() * 1000),
        }

    async def beat(self) -> None:
        record = self.record()
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.set(self._key, orjson.dumps(record), px=self._ttl_ms)
            pipe.zadd(self._index, {self._id: record["at"]})
            pipe.expire(self._index, INDEX_TTL_S)
            await pipe.execute()

    async def _run(self) -> None:
        while True:
            try:
                async with asyncio.timeout(max(1.0, self.interval_s)):
                    await self.beat()
                self._warned = False
            except (RedisError, OSError, TimeoutError) as exc:
                if not self._warned:  # once per outage
                    log.warning("worker %s: heartbeat not written (%r); retrying", self._id, exc)
                    self._warned = True
            await asyncio.sleep(self.interval_s)


async def read_workers(redis: Redis, prefix: str) -> list[dict[str, Any]]:
    """Every worker whose heartbeat has not expired, by id; prunes the expired from the index."""
    index = index_key(prefix)
    ids = [i.decode() if isinstance(i, bytes) else str(i) for i in await redis.zrange(index, 0, -1)]
    if not ids:
        return []
    raws = await redis.mget([worker_key(prefix, i) for i in ids])
    gone = [i for i, raw in zip(ids, raws, strict=True) if raw is None]
    if gone:
        await redis.zrem(index, *gone)
    return sorted((orjson.loads(raw) for raw in raws if raw is not None), key=lambda w: str(w["id"]))
