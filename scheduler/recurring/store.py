"""Recurring schedules in Redis: definitions, when each fires next, claims, counts, runs.

Keys share the deployment's hash tag (`settings.redis_prefix`); every script names its
keys, so they run unchanged on Redis Cluster. Per schedule name:

- `{p}:sched:defs`     hash: name -> the `Schedule` as JSON
- `{p}:sched:names`    sorted set (all scores 0): every name, for listing in name order
- `{p}:sched:next`     hash: name -> its first occurrence not fired yet (ms); absent once
                       it has ended, or while paused
- `{p}:sched:due`      sorted set: name scored by that occurrence, while no scheduler holds it
- `{p}:sched:claimed`  sorted set: name scored by the expiry of a scheduler's lease
- `{p}:sched:version`  hash: name -> a counter each change of the definition moves on
- `{p}:sched:fired`, `{p}:sched:missed`: hashes of counts; `{p}:sched:last`: newest fired
- `{p}:sched:paused`   hash: name -> when it was paused
- `{p}:sched:runs:<name>`  list: its newest `RUNS_KEPT` runs (JSON), oldest first
- `{p}:sched:wake`     pub/sub channel: the next occurrence of each change

A name is in at most one of `due` and `claimed`. A claim moves the names whose next
occurrence falls by the horizon (and those whose lease expired) to `claimed`, in one
script; so two schedulers never hold one schedule at once while its lease runs. The
holder fires the occurrences and releases the schedule with its new next occurrence;
one that dies before releasing leaves it to its lease, and the next holder fires the same
occurrences again, as the same job ids (`spec.occurrence_id`), which the pipeline drops.
A release carries its claim's expiry and acts only while that claim is still the one held:
a change of the schedule (put, pause, resume, delete) drops the claim and sets the next
occurrence itself, and a holder whose lease ran out has been replaced by the next one. A
deleted name's version moves on, so one made again under that name is read afresh.

Why one module: each Lua script and the method that calls it are one contract (the order of
KEYS and ARGV, what comes back); apart, one would change without the other.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, cast

import orjson
from redis.asyncio import Redis

from jobstream.redis_scripts import PipelinedScript

RUNS_KEPT = 20

# One script releases and claims, so that a NOSCRIPT (Redis restarted) fails before any write
# and the call can simply run again. KEYS: due, claimed, defs, next, fired, version, missed,
# last, then each release's runs list. ARGV: now, horizon, lease, limit (0: release only),
# runs kept, then a JSON array of releases: [name, lease (the claim's expiry: its token),
# next ('' = ended), fired, missed, last ('' = none), [run JSON, ...]]. A release acts only
# while its claim is still the one held (the same expiry in `claimed`): a change of the
# schedule (put, pause, resume, delete) or another scheduler's claim after the lease ran out
# replaced it, and then what this holder would say is theirs to say. Then the claim: returns
# the earliest next occurrence and lease expiry left ('' for none), and five values per
# schedule claimed: name, next, fired, version (not the definition: the caller keeps those
# it has read, by version, and reads the others with `definitions`), and '1' when it was
# taken back from a lease that ran out ('0' when it was due).
_STEP = """
local now, horizon, limit, keep = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[4]), tonumber(ARGV[5])
if ARGV[6] then
  for i, it in ipairs(cjson.decode(ARGV[6])) do
    local name = it[1]
    local held = redis.call('ZSCORE', KEYS[2], name)
    if held and tonumber(held) == tonumber(it[2]) and redis.call('HEXISTS', KEYS[3], name) == 1 then
      redis.call('ZREM', KEYS[2], name)
      if tonumber(it[4]) > 0 then redis.call('HINCRBY', KEYS[5], name, it[4]) end
      if tonumber(it[5]) > 0 then redis.call('HINCRBY', KEYS[7], name, it[5]) end
      if it[6] ~= '' then redis.call('HSET', KEYS[8], name, it[6]) end
      if #it[7] > 0 then
        redis.call('RPUSH', KEYS[8 + i], unpack(it[7]))
        redis.call('LTRIM', KEYS[8 + i], -keep, -1)
      end
      if it[3] == '' then
        redis.call('HDEL', KEYS[4], name)
      else
        redis.call('HSET', KEYS[4], name, it[3])
        redis.call('ZADD', KEYS[1], it[3], name)
      end
    end
  end
end
local out = {}
if limit > 0 then
  local lease_until = now + tonumber(ARGV[3])
  local names = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, limit)
  local taken_back = #names
  if #names < limit then
    local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', horizon, 'LIMIT', 0, limit - #names)
    if #due > 0 then
      redis.call('ZREMRANGEBYRANK', KEYS[1], 0, #due - 1)
      for _, name in ipairs(due) do names[#names + 1] = name end
    end
  end
  for j, name in ipairs(names) do
    local nxt = redis.call('HGET', KEYS[4], name)
    if nxt and redis.call('HEXISTS', KEYS[3], name) == 1 then
      redis.call('ZADD', KEYS[2], lease_until, name)
      out[#out + 1] = name
      out[#out + 1] = nxt
      out[#out + 1] = redis.call('HGET', KEYS[5], name) or '0'
      out[#out + 1] = redis.call('HGET', KEYS[6], name) or '0'
      out[#out + 1] = j <= taken_back and '1' or '0'
    else
      redis.call('ZREM', KEYS[2], name)
    end
  end
end
local head = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
local expiry = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
return {head[2] or '', expiry[2] or '', unpack(out)}
"""

# KEYS: due, claimed, defs, next, version, names, paused, channel. ARGV: name, definition,
# next ('' = none). Returns 1 when the name was new. A paused schedule stays paused.
_PUT = """
local name, nxt = ARGV[1], ARGV[3]
local new = redis.call('HSETNX', KEYS[3], name, ARGV[2])
if new == 0 then redis.call('HSET', KEYS[3], name, ARGV[2]) end
redis.call('HINCRBY', KEYS[5], name, 1)
redis.call('ZADD', KEYS[6], 0, name)
redis.call('ZREM', KEYS[2], name)
if nxt == '' or redis.call('HEXISTS', KEYS[7], name) == 1 then
  redis.call('ZREM', KEYS[1], name)
  if nxt == '' then redis.call('HDEL', KEYS[4], name) else redis.call('HSET', KEYS[4], name, nxt) end
else
  redis.call('HSET', KEYS[4], name, nxt)
  redis.call('ZADD', KEYS[1], nxt, name)
  redis.call('PUBLISH', KEYS[8], nxt)
end
return new
"""

# KEYS: due, claimed, version, paused, defs, next, channel. ARGV: name, now, then for resume
# the next occurrence ('' = none); no ARGV[3] pauses. Returns 0 for an unknown name.
_PAUSE = """
local name = ARGV[1]
if redis.call('HEXISTS', KEYS[5], name) == 0 then return 0 end
redis.call('HINCRBY', KEYS[3], name, 1)
redis.call('ZREM', KEYS[2], name)
if ARGV[3] == nil then
  redis.call('HSET', KEYS[4], name, ARGV[2])
  redis.call('ZREM', KEYS[1], name)
else
  redis.call('HDEL', KEYS[4], name)
  if ARGV[3] == '' then
    redis.call('HDEL', KEYS[6], name)
  else
    redis.call('HSET', KEYS[6], name, ARGV[3])
    redis.call('ZADD', KEYS[1], ARGV[3], name)
    redis.call('PUBLISH', KEYS[7], ARGV[3])
  end
end
return 1
"""

_DELETE_HASHES = ("defs", "next", "fired", "missed", "last", "paused")


class Claimed(NamedTuple):
    """A schedule a claim took, as it stood when taken (`version` names its definition;
    `lease` is the claim's expiry, what its release must show; `taken_back`: from a holder
    whose lease ran out)."""

    name: str
    next: int
    fired: int
    version: str
    lease: int
    taken_back: bool


class ClaimedSchedules(NamedTuple):
    schedules: list[Claimed]
    next_due: int | None  # the earliest next occurrence left unclaimed
    next_expiry: int | None  # the earliest lease to expire


@dataclass(slots=True)
class Release:
    """What a holder says of a schedule it fired: its claim's expiry (`lease`, the token that
    says the claim is still its own), the next occurrence (None: ended), what fired and what
    was missed, and the runs to record."""

    name: str
    lease: int
    next: int | None
    fired: int = 0
    missed: int = 0
    last: int | None = None
    runs: list[bytes] | None = None

    def row(self) -> list[Any]:
        runs = [r.decode() for r in self.runs or ()]
        last = "" if self.last is None else str(self.last)
        nxt = "" if self.next is None else str(self.next)
        return [self.name, str(self.lease), nxt, self.fired, self.missed, last, runs]


@dataclass(frozen=True, slots=True)
class ScheduleState:
    """A schedule as `GET /schedules` shows it, before its times are worked out."""

    name: str
    definition: bytes
    next: int | None
    paused_at: int | None
    fired: int
    missed: int
    last: int | None


class ScheduleStore:
    """The Redis side of recurring schedules; `redis` is any asyncio Redis client."""

    def __init__(self, redis: Redis, prefix: str) -> None:
        self.redis = redis
        p = f"{prefix}:sched"
        self._p = p
        self.channel = f"{p}:wake"
        self.keys = {n: f"{p}:{n}" for n in ("defs", "names", "next", "due", "claimed", "version", "fired",
                                               "missed", "last", "paused")}  # fmt: skip
        self._step = PipelinedScript(redis, _STEP)
        self._put = redis.register_script(_PUT)
        self._pause = redis.register_script(_PAUSE)

    def runs_key(self, name: str) -> str:
        return f"{self._p}:runs:{name}"

    async def claim(
        self, now: int, horizon: int, lease_ms: int, limit: int, releases: Sequence[Release] = ()
    ) -> ClaimedSchedules:
        """Release `releases`, then claim for `lease_ms` up to `limit` schedules (0: none):
        those whose lease expired first, then those whose next occurrence falls by
        `horizon`. One script call, one round trip."""
        keys = self._keys("due", "claimed", "defs", "next", "fired", "version", "missed", "last")
        keys += [self.runs_key(r.name) for r in releases]
        args: list[Any] = [now, horizon, lease_ms, limit, RUNS_KEPT]
        if releases:
            args.append(orjson.dumps([r.row() for r in releases]))
        [answer] = await self._step.run(lambda pipe: self._step.queue(pipe, keys, args))
        head, expiry, *flat = answer
        lease = now + lease_ms
        fields = [flat[i : i + 5] for i in range(0, len(flat), 5)]
        rows = [
            Claimed(_s(name), int(nxt), int(fired), _s(version), lease, _s(back) == "1")
            for name, nxt, fired, version, back in fields
        ]
        return ClaimedSchedules(rows, _ms(head), _ms(expiry))

    async def release(self, releases: Sequence[Release], now: int) -> None:
        """Release schedules (see `Release`) without claiming any."""
        if releases:
            await self.claim(now, now, 0, 0, releases)

    async def put(self, name: str, definition: bytes, next_at: int | None) -> bool:
        """Store a schedule (new, or in place of the one of that name, whose counts, runs and
        pause it keeps) with its next occurrence; True when the name was new."""
        keys = [*self._keys("due", "claimed", "defs", "next", "version", "names", "paused"), self.channel]
        return bool(await self._put(keys=keys, args=[name, definition, "" if next_at is None else next_at]))

    async def pause(self, name: str, now: int) -> bool:
        """Stop firing `name` until resumed; False when there is no such schedule."""
        return bool(await self._pause(keys=self._pause_keys(), args=[name, now]))

    async def resume(self, name: str, now: int, next_at: int | None) -> bool:
        """Fire `name` again from `next_at` (None: it has ended); False when unknown."""
        return bool(
            await self._pause(keys=self._pause_keys(), args=[name, now, "" if next_at is None else next_at])
        )

    def _pause_keys(self) -> list[str]:
        return [*self._keys("due", "claimed", "version", "paused", "defs", "next"), self.channel]

    def _keys(self, *names: str) -> list[str]:
        return [self.keys[n] for n in names]

    async def delete(self, name: str) -> bool:
        """Forget `name` and its runs; False when there was no such schedule."""
        k = self.keys
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hdel(k["defs"], name)
            for h in _DELETE_HASHES[1:]:
                pipe.hdel(k[h], name)
            # the version moves on, not away: a name made again never meets a cached definition
            pipe.hincrby(k["version"], name, 1)
            pipe.zrem(k["due"], name)
            pipe.zrem(k["claimed"], name)
            pipe.zrem(k["names"], name)
            pipe.delete(self.runs_key(name))
            existed, *_ = await pipe.execute()
        return bool(existed)

    async def names(self, after: str | None, limit: int) -> list[str]:
        """Up to `limit` names in name order, after `after`."""
        start = "-" if after is None else f"({after}"
        raw = await self.redis.zrangebylex(self.keys["names"], start, "+", start=0, num=limit)
        return [_s(n) for n in raw]

    async def states(self, names: Sequence[str]) -> list[ScheduleState]:
        """The stored state of each of `names` that exists, in order, in one round trip."""
        if not names:
            return []
        k = self.keys
        async with self.redis.pipeline(transaction=False) as pipe:
            for h in ("defs", "next", "paused", "fired", "missed", "last"):
                pipe.hmget(k[h], list(names))
            defs, nexts, paused, fired, missed, last = await pipe.execute()
        return [
            ScheduleState(name, d, _ms(n), _ms(pa), int(f or 0), int(m or 0), _ms(la))
            for name, d, n, pa, f, m, la in zip(names, defs, nexts, paused, fired, missed, last, strict=True)
            if d is not None
        ]

    async def definitions(self, names: Sequence[str]) -> list[bytes | None]:
        """The stored definitions of `names`, in order (None for one deleted)."""
        return cast(list[bytes | None], await self.redis.hmget(self.keys["defs"], list(names)))

    async def runs(self, name: str) -> list[dict[str, Any]]:
        """The newest runs, oldest first."""
        return [orjson.loads(r) for r in await self.redis.lrange(self.runs_key(name), 0, -1)]

    async def record_run(self, name: str, run: bytes) -> None:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.rpush(self.runs_key(name), run)
            pipe.ltrim(self.runs_key(name), -RUNS_KEPT, -1)
            await pipe.execute()


def _s(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _ms(value: bytes | str | None) -> int | None:
    return int(float(value)) if value else None
