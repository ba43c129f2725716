"""Delayed jobs in Redis: the due-time sorted set, the claimed set and the envelopes.

Keys share the deployment's hash tag (`settings.redis_prefix`), so the scripts run
unchanged on Redis Cluster:

- `{p}:delay:z`        sorted set: job id scored by due time (ms since the epoch)
- `{p}:delay:claimed`  sorted set: job id scored by the expiry of a scheduler's lease
- `{p}:delay:jobs`     hash: job id -> the encoded envelope, exactly the record value
- `{p}:delay:wake`     pub/sub channel: the earliest due time of each insert

A stored job is in exactly one of the two sets while its envelope is in the hash. A
claim moves due ids (and ids whose lease expired) from their set to `claimed` in one
script, so two schedulers never claim the same job while its lease runs; `done()`
deletes them once Kafka has them. A scheduler that dies between the two leaves its
claims to expire, and the next claim after the expiry takes them again.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple, cast

from redis.asyncio import Redis

from schemas import JobEnvelope, encode_job

# KEYS: z, claimed, jobs. ARGV: now (ms), horizon (ms), lease (ms), limit, then the ids of
# jobs Kafka has taken since the last claim (forgotten first, as `done` does). Claims leases
# expired by `now` first (they were due earliest), then ids due by `horizon` in due order.
# Returns the earliest due time and lease expiry left ('' for none), then the envelopes in
# that order: the scheduler's one round trip per cycle.
_CLAIM = """
for start = 5, #ARGV, 500 do
  local chunk = {unpack(ARGV, start, math.min(start + 499, #ARGV))}
  redis.call('ZREM', KEYS[2], unpack(chunk))
  redis.call('HDEL', KEYS[3], unpack(chunk))
end
local now, horizon, limit = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[4])
local lease_until = now + tonumber(ARGV[3])
local ids = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, limit)
if #ids < limit then
  local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', horizon, 'LIMIT', 0, limit - #ids)
  if #due > 0 then
    -- the due ids are the set's first ranks
    redis.call('ZREMRANGEBYRANK', KEYS[1], 0, #due - 1)
    for _, id in ipairs(due) do ids[#ids + 1] = id end
  end
end
local out = {}
for start = 1, #ids, 500 do
  local chunk = {unpack(ids, start, math.min(start + 499, #ids))}
  local envs = redis.call('HMGET', KEYS[3], unpack(chunk))
  local scored = {}
  for i, id in ipairs(chunk) do
    if envs[i] then
      scored[#scored + 1] = lease_until
      scored[#scored + 1] = id
      out[#out + 1] = envs[i]
    else
      redis.call('ZREM', KEYS[2], id)  -- cancelled meanwhile: nothing to produce
    end
  end
  if #scored > 0 then redis.call('ZADD', KEYS[2], unpack(scored)) end
end
for i, key in ipairs({KEYS[2], KEYS[1]}) do
  table.insert(out, 1, redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')[2] or '')
end
return out
"""

# KEYS: z, claimed, jobs. ARGV: id. 1: removed before any claim (it will never run);
# 2: removed while claimed (a scheduler may be producing it right now); 0: not here.
_CANCEL = """
if redis.call('ZREM', KEYS[1], ARGV[1]) == 1 then
  redis.call('HDEL', KEYS[3], ARGV[1])
  return 1
end
if redis.call('ZREM', KEYS[2], ARGV[1]) == 1 then
  redis.call('HDEL', KEYS[3], ARGV[1])
  return 2
end
return 0
"""

# Ids per command: bounds how long one command holds Redis.
_CHUNK = 1_000

CANCELLED = 1
CANCELLED_WHILE_CLAIMED = 2


class ClaimedJobs(NamedTuple):
    """What one claim took, and what is left (ms; None: nothing)."""

    envelopes: list[bytes]
    next_due: int | None  # the earliest due time of the jobs not claimed
    next_expiry: int | None  # the earliest expiry of a lease, this claim's included


class DelayStore:
    """The Redis side of delayed jobs; `redis` is any asyncio Redis client."""

    def __init__(self, redis: Redis, prefix: str) -> None:
        self.redis = redis
        self.zset = f"{prefix}:delay:z"
        self.claimed = f"{prefix}:delay:claimed"
        self.jobs = f"{prefix}:delay:jobs"
        self.channel = f"{prefix}:delay:wake"
        self._keys = [self.zset, self.claimed, self.jobs]
        self._claim = redis.register_script(_CLAIM)
        self._cancel = redis.register_script(_CANCEL)

    async def add(self, envelopes: Sequence[JobEnvelope]) -> None:
        """Store jobs (each with `not_before` set) in one round trip, atomically (MULTI), and
        publish the earliest due time so sleeping schedulers wake if it is sooner."""
        if not envelopes:
            return
        async with self.redis.pipeline(transaction=True) as pipe:
            for start in range(0, len(envelopes), _CHUNK):
                chunk = envelopes[start : start + _CHUNK]
                pipe.hset(self.jobs, mapping={e.id: encode_job(e) for e in chunk})
                pipe.zadd(self.zset, {e.id: _due(e) for e in chunk})
            pipe.publish(self.channel, str(min(_due(e) for e in envelopes)))
            await pipe.execute()

    async def claim(
        self,
        now_ms: int,
        lease_ms: int,
        limit: int,
        forget: Sequence[str] = (),
        horizon_ms: int | None = None,
    ) -> ClaimedJobs:
        """Forget the jobs in `forget` (as `done`), then claim for `lease_ms` up to `limit`
        jobs: those whose lease expired by `now_ms` first, then those due by `horizon_ms`
        (default `now_ms`). One round trip."""
        horizon = now_ms if horizon_ms is None else horizon_ms
        due, expiry, *envelopes = await self._claim(
            keys=self._keys, args=[now_ms, horizon, lease_ms, limit, *forget]
        )
        return ClaimedJobs(envelopes, _ms(due), _ms(expiry))

    async def done(self, ids: Sequence[str]) -> None:
        """Forget jobs Kafka has: out of the claimed set and the hash, in one round trip."""
        if not ids:
            return
        async with self.redis.pipeline(transaction=True) as pipe:
            for start in range(0, len(ids), _CHUNK):
                chunk = ids[start : start + _CHUNK]
                pipe.zrem(self.claimed, *chunk)
                pipe.hdel(self.jobs, *chunk)
            await pipe.execute()

    async def cancel(self, job_id: str) -> int:
        """Remove a job wherever it is: `CANCELLED`, `CANCELLED_WHILE_CLAIMED` or 0 (gone)."""
        return int(await self._cancel(keys=self._keys, args=[job_id]))

    async def envelope(self, job_id: str) -> bytes | None:
        """The stored envelope of a job waiting (or claimed), or None."""
        return cast(bytes | None, await self.redis.hget(self.jobs, job_id))

    async def upcoming(self, limit: int) -> list[tuple[int, bytes]]:
        """The next `limit` jobs by due time, not claimed yet: (due ms, encoded envelope)."""
        scored = cast(
            list[tuple[bytes, float]], await self.redis.zrange(self.zset, 0, limit - 1, withscores=True)
        )
        if not scored:
            return []
        envs = cast(list[bytes | None], await self.redis.hmget(self.jobs, [m for m, _ in scored]))
        return [(int(score), env) for (_, score), env in zip(scored, envs, strict=True) if env is not None]

    async def counts(self) -> tuple[int, int]:
        """(waiting, claimed) job counts."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.zcard(self.zset)
            pipe.zcard(self.claimed)
            waiting, claimed = await pipe.execute()
        return int(waiting), int(claimed)


def _ms(score: bytes | str) -> int | None:
    return int(float(score)) if score else None


def _due(env: JobEnvelope) -> int:
    assert env.not_before is not None, "a delayed job has a due time"
    return env.not_before
