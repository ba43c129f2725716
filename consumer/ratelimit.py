"""Rate limits per job type, shared by every worker through Redis.

A limit is `N/s`, `N/m` or `N/h`. Each limited type has a token bucket in Redis, refilled
by a Lua script on Redis's own clock (so workers' clocks do not matter), holding at most
a tenth of a second's worth (at least one token) so that a burst stays small. Workers ask
for tokens in small batches only while they hold records of a starved type, and sleep
until the script says the next token is due: no polling, no handler slot held.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from consumer.dispatch import Dispatch

log = logging.getLogger("jobstream.worker")

_LIMIT = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*/\s*(s|m|h)\s*$")
_PERIOD_MS = {"s": 1_000, "m": 60_000, "h": 3_600_000}

# KEYS[1] bucket; ARGV rate (tokens/ms), burst, want[, now in ms: tests only, else Redis's
# TIME]. Returns {granted, ms until the next token}.
_TAKE = """
local rate, burst, want = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local now
if ARGV[4] then
  now = tonumber(ARGV[4])
else
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local b = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens, ts = tonumber(b[1]) or burst, tonumber(b[2]) or now
if now > ts then tokens = math.min(burst, tokens + (now - ts) * rate) end
local granted = math.min(want, math.floor(tokens))
tokens = tokens - granted
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(math.max(now, ts)))
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate) + 60000)
local wait = 0
if granted < want then wait = math.ceil((1 - (tokens - math.floor(tokens))) / rate) end
return {granted, wait}
"""


@dataclass(frozen=True, slots=True)
class Limit:
    per_ms: float  # tokens per millisecond
    text: str

    @classmethod
    def parse(cls, text: str) -> Limit:
        m = _LIMIT.match(text)
        if m is None or float(m.group(1)) <= 0:
            raise ValueError(f"a rate limit is a positive number per s, m or h, like '50/s'; got {text!r}")
        return cls(float(m.group(1)) / _PERIOD_MS[m.group(2)], text.strip())

    @property
    def burst(self) -> int:
        return max(1, math.floor(self.per_ms * 100))

    @property
    def batch(self) -> int:
        """How many tokens one worker asks for at once."""
        return self.burst


def parse_limits(text: str) -> dict[str, Limit]:
    """`"images.resize=50/s, mail.send=10/m"` → limits by job type."""
    limits: dict[str, Limit] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        job_type, sep, limit = part.partition("=")
        if not sep or not job_type.strip():
            raise ValueError(f"rate limits are written type=N/s, separated by commas; got {part!r}")
        limits[job_type.strip()] = Limit.parse(limit)
    return limits


class TokenBuckets:
    """The buckets under `prefix`. `clock_ms` replaces Redis's clock (tests only): every
    caller of a bucket must then use the same clock."""

    def __init__(self, redis: Redis, prefix: str, clock_ms: Callable[[], int] | None = None) -> None:
        self._prefix = f"{prefix}:rate:"
        self._take = redis.register_script(_TAKE)
        self._clock_ms = clock_ms

    async def take(self, job_type: str, limit: Limit, want: int) -> tuple[int, int]:
        """(tokens granted, ms until the next one if fewer than `want`)."""
        args: list[float | int] = [limit.per_ms, limit.burst, want]
        if self._clock_ms is not None:
            args.append(self._clock_ms())
        granted, wait = await self._take(keys=[self._prefix + job_type], args=args)
        return int(granted), int(wait)


class RateLimiter:
    """The worker's half: fetches tokens for the limited types whose records wait in
    `dispatch` (`Dispatch.starved`), and hands them over (`Dispatch.grant`), waking as many
    runners. Sleeps while no type is starved (`starving()` wakes it) and otherwise until the
    next token is due; records of other types never wait on this."""

    def __init__(self, limits: dict[str, Limit], buckets: TokenBuckets, dispatch: Dispatch[Any]) -> None:
        self._limits = limits
        self._buckets = buckets
        self._dispatch = dispatch
        self._starved = asyncio.Event()

    def starving(self) -> None:
        """A runner found only records with no token: fetch some."""
        self._starved.set()

    async def run(self, wake: Callable[[int], None]) -> None:
        while True:
            starved = self._dispatch.starved()
            if not starved:
                self._starved.clear()
                await self._starved.wait()
                continue
            waits: list[int] = []
            for job_type, held in starved.items():
                limit = self._limits[job_type]
                try:
                    granted, wait = await self._buckets.take(job_type, limit, min(held, limit.batch))
                except (RedisError, OSError) as exc:
                    log.warning("rate limit for %s: Redis unreachable, retrying: %s", job_type, exc)
                    granted, wait = 0, 1_000
                if granted:
                    self._dispatch.grant(job_type, granted, time.monotonic() * 1000)
                    wake(granted)
                if granted < held:
                    waits.append(max(wait, 1))
            if waits:
                self._starved.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._starved.wait(), min(waits) / 1000)
