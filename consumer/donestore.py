"""The ids of completed jobs, recorded in Redis so a redelivered job is not run again.

A record is made in two steps. `record` writes each id with its `completed` event before
that event goes to Kafka (`consumer.completions`); `confirm` reduces it to a mark once
Kafka has acknowledged the event. So `seen` tells a successor of a killed worker both that
a job completed and, for the few whose event may never have reached Kafka, the event to
send again: no completed job runs twice and no completed event is lost.

Ids go into one hash per day (`{p}:done:<day>`), so a batch of thousands of records is one
HSET and one EXPIRE, and a day's hash expires whole once older than the TTL. A check
asks every day within the TTL in one pipeline, newest first (a confirmation written after
midnight lands in a newer hash than its record); the worker checks only records that may
have been delivered before (see `consumer.assignment`). Redis being down degrades to at-least-once
(a redelivered completed job may run again) and never stops the worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from jobstream.lifecycle import Lifecycle
from jobstream.redis_scripts import PipelinedScript

log = logging.getLogger("jobstream.worker")

_MAX_PENDING = 200_000
_CHECK_CHUNK = 1_000  # ids per script call (Lua's unpack has a stack limit)
# KEYS: the day hashes, newest first; ARGV: ids. Returns id, value, id, value... for the
# ids found (the newest day's value): the search runs in Redis and the reply holds only
# what was found, usually nothing.
_FIND = """
local found, seen = {}, {}
for _, key in ipairs(KEYS) do
  local values = redis.call('HMGET', key, unpack(ARGV))
  for i, v in ipairs(values) do
    if v and not seen[i] then
      seen[i] = true; found[#found + 1] = ARGV[i]; found[#found + 1] = v
    end
  end
end
return found
"""
CONFIRMED = b"1"  # the value of a record whose completed event Kafka has acknowledged
DAY_S = 86_400


class DoneStore(Lifecycle):
    """The completed-id records; a `jobstream.lifecycle.Service`: `start()` starts writing
    confirmations in the background, `close()` writes what is buffered (for up to
    `close_timeout_s` if Redis is down), then stops."""

    def __init__(self, redis: Redis, prefix: str, ttl_s: int, *, close_timeout_s: float = 5.0) -> None:
        super().__init__()
        self._close_timeout_s = close_timeout_s
        self._redis = redis
        self._prefix = f"{prefix}:done:"
        self._days = ttl_s // DAY_S + 2  # hashes a mark made up to ttl_s ago can be in
        self._find = PipelinedScript(redis, _FIND)
        self._ttl = ttl_s
        self._pending: list[str] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._warned_at = 0.0

    async def _startup(self) -> None:
        self._task = asyncio.create_task(self._run(), name="done-store")

    async def _shutdown(self) -> None:
        self._wake.set()
        if self._task is not None:
            # no cancel while a write is under way: the Redis client may turn a cancel into
            # a connection error, and the marks would be lost
            try:
                await asyncio.wait_for(asyncio.shield(self._task), self._close_timeout_s)
            except TimeoutError:
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task
            self._task = None

    async def seen(self, ids: list[str]) -> dict[str, bytes | None]:
        """Those of `ids` recorded as completed, each with its completed event (JSON) when
        Kafka's acknowledgement of it was never confirmed, else None. Empty when Redis is
        unreachable."""
        if not ids:
            return {}
        today = int(time.time()) // DAY_S
        days = [f"{self._prefix}{day}" for day in range(today, today - self._days, -1)]

        def build(pipe: Any) -> None:
            for start in range(0, len(ids), _CHECK_CHUNK):
                self._find.queue(pipe, days, ids[start : start + _CHECK_CHUNK])

        try:
            found = await self._find.run(build)
        except (RedisError, OSError) as exc:
            self._warn(f"completed-id check skipped, Redis unreachable: {exc}")
            return {}
        seen: dict[str, bytes | None] = {}
        for chunk in found:
            for i in range(0, len(chunk), 2):
                job_id, value = chunk[i], chunk[i + 1]
                job_id = job_id.decode() if isinstance(job_id, bytes) else job_id
                seen[job_id] = None if value == CONFIRMED else value
        return seen

    async def record(self, events: dict[str, bytes]) -> None:
        """Record jobs as completed, each with its completed event (JSON), in one pipelined
        write; returns once Redis has them. Raises `RedisError` or `OSError`."""
        if not events:
            return
        key = f"{self._prefix}{int(time.time()) // DAY_S}"
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.hset(key, mapping=events)  # type: ignore[arg-type]
            pipe.expire(key, self._ttl + DAY_S)
            await pipe.execute()

    def confirm(self, job_id: str) -> None:
        """Kafka has acknowledged the job's completed event: reduce its record to a mark
        (written in the background, batched, retried while Redis is unreachable)."""
        if len(self._pending) < _MAX_PENDING:
            self._pending.append(job_id)
            self._wake.set()

    async def flush(self) -> None:
        if not self._pending:
            return
        ids, self._pending = self._pending, []
        key = f"{self._prefix}{int(time.time()) // DAY_S}"
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.hset(key, mapping=dict.fromkeys(ids, CONFIRMED))
                pipe.expire(key, self._ttl + DAY_S)
                await pipe.execute()
        except (RedisError, OSError) as exc:
            self._warn(f"could not record {len(ids)} completed ids, will retry: {exc}")
            self._pending[:0] = ids[: _MAX_PENDING - len(self._pending)]
            raise

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                await self.flush()
            except (RedisError, OSError):
                await asyncio.sleep(1.0)
                self._wake.set()
                continue
            if self._closing and not self._pending:
                return

    def _warn(self, msg: str) -> None:
        now = time.monotonic()
        if now - self._warned_at > 10:
            self._warned_at = now
            log.warning(msg)
