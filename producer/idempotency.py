"""Idempotency keys: a repeated `POST /jobs` (or batch item) answers with the first job.

A key (the `Idempotency-Key` header or the `idempotency_key` field) is claimed in Redis
before anything is produced, at `{prefix}:idem:<sha256 of the key>`, with
`SET k v NX PX ttl GET`: one command either claims the key or says who holds it. The value
(`producer.idempotency_keys.Record`) holds the request's fingerprint, the job id chosen up front
and `pending`. Then:

- the winner produces the job under that id and marks its record `done` with the job's
  first state; if Kafka refuses the job (503) it deletes its claim so a retry can proceed
  (both compare-and-set: only its own pending record is touched);
- a request finding a `done` record with its fingerprint answers 200 with that id and the
  job's state (the projection's, else the one stored with the key); nothing is produced;
- one finding another fingerprint answers 409: the key was used with a different body;
- one finding `pending` polls, backing off, for up to `submit_timeout_s`: the winner
  finishes (200, same id), the claim is released (it claims the key itself), or time runs
  out (409, retry).

A pending claim lives at most `lease_ms` (or the TTL if shorter), so a process dying
between claim and produce blocks its key for that long, not for the TTL; a `done` record
lives the TTL from the moment its job was accepted. A batch makes all its first-round
claims in one pipelined round trip; its own repeats map to the first item with the key.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any, cast

from redis.asyncio import Redis
from redis.commands.core import AsyncScript
from redis.exceptions import RedisError

from jobstream.http_errors import ItemError, Unavailable
from jobstream.projection import job_key
from jobstream.settings import ApiSettings
from producer.health import HealthMonitor
from producer.idempotency_keys import Busy, Clash, KeyClaim, Outcome, Plan, Record, Seen, Won, judge
from producer.results import Refused, SubmitResult, Submitted
from producer.submit import Submitter
from schemas import JobSpec

__all__ = ["Deduplicator"]

log = logging.getLogger("jobstream.producer.idempotency")

POLL_FIRST_S = 0.01
POLL_MAX_S = 0.25
LEASE_MIN_S = 30.0
SETTLE_CHUNK = 1_000  # keys per script call: bounds how long one call holds Redis

# KEYS: claims (one hash tag, so this runs on Redis Cluster). ARGV[1]: ttl (ms); then per
# key the pending value this process wrote and the new value ('' deletes the claim).
_SETTLE = """
local n = 0
for i, key in ipairs(KEYS) do
  if redis.call('GET', key) == ARGV[2 * i] then
    local new = ARGV[2 * i + 1]
    if new == '' then redis.call('DEL', key) else redis.call('SET', key, new, 'PX', ARGV[1]) end
    n = n + 1
  end
end
return n
"""


class Deduplicator:
    """Submits through a `Submitter`, honouring idempotency keys. Built once, with the app."""

    def __init__(
        self, submitter: Submitter, redis: Redis, health: HealthMonitor, settings: ApiSettings
    ) -> None:
        self._submitter = submitter
        self._redis = redis
        self._health = health
        self._prefix = settings.redis_prefix
        self._ttl_ms = settings.idempotency_ttl_s * 1000
        self._lease_ms = min(self._ttl_ms, int(max(LEASE_MIN_S, 3 * settings.submit_timeout_s) * 1000))
        self._wait_s = settings.submit_timeout_s
        self._settle_script: AsyncScript = redis.register_script(_SETTLE)

    async def submit_many(self, items: Sequence[JobSpec | ItemError]) -> list[SubmitResult]:
        """`Submitter.submit_many`, except that a repeated key answers its first job
        (`Submitted` with `duplicate`) and a conflicting one a 409 `Refused`."""
        submitter = self._submitter
        plan = Plan.of(items, self._prefix)
        if not plan.claims:
            return await submitter.submit_many(items)
        outcomes = await self._claim(list(plan.claims.values()))
        won = {i: c for i, c in plan.claims.items() if isinstance(outcomes[c.redis_key], Won)}
        send = [i for i in range(len(items)) if i not in plan.lead_of or i in won]
        results: list[SubmitResult | None] = [None] * len(items)
        if send:
            try:
                sent = await submitter.submit_many(
                    [items[i] for i in send], ids=[won[i].job_id if i in won else None for i in send]
                )
            except BaseException:
                await self._settle([(c, None) for c in won.values()])
                raise
            for i, result in zip(send, sent, strict=True):
                results[i] = result
        await self._settle([(c, _state(results[i])) for i, c in won.items()])
        states = await self._current_states([o for o in outcomes.values() if isinstance(o, Seen)])
        for i, lead in plan.lead_of.items():
            if i in plan.clashes:
                results[i] = Refused(ItemError(409, plan.clashes[i]))
            elif i != lead:  # a repeat inside this batch: whatever its first item got
                results[i] = _repeat(results[lead])
            elif i not in won:
                results[i] = _answer(outcomes[plan.claims[i].redis_key], states)
        return cast(list[SubmitResult], results)  # every item has its result now

    async def _claim(self, claims: list[KeyClaim]) -> dict[str, Outcome]:
        """Claim every key, or learn who holds it; wait out pending holders (bounded)."""
        health = self._health
        if not health.is_up("redis"):
            raise _redis_down("Redis is unreachable", health.retry_after_s)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._wait_s
        delay = POLL_FIRST_S
        outcomes: dict[str, Outcome] = {}
        todo = claims
        while True:
            try:  # one pipelined round trip per round, however many keys
                async with self._redis.pipeline(transaction=False) as pipe:
                    for c in todo:
                        pipe.set(c.redis_key, c.value, nx=True, px=self._lease_ms, get=True)
                    held: list[bytes | None] = await pipe.execute()
            except (RedisError, OSError) as exc:
                raise _redis_down(f"Redis did not answer ({exc})", health.retry_after_s) from exc
            waiting: list[KeyClaim] = []
            for c, old in zip(todo, held, strict=True):
                outcome = judge(c, old)
                if outcome is None:
                    waiting.append(c)
                else:
                    outcomes[c.redis_key] = outcome
            if not waiting:
                return outcomes
            if loop.time() + delay > deadline:
                outcomes.update((c.redis_key, Busy(c.key)) for c in waiting)
                return outcomes
            await asyncio.sleep(delay)
            delay = min(delay * 2, POLL_MAX_S)
            todo = waiting

    async def _settle(self, done: list[tuple[KeyClaim, str | None]]) -> None:
        """Mark won claims done (with the job's state) or, state None, release them. Never
        raises: the jobs are in Kafka either way; a claim left pending expires with its lease."""
        if not done:
            return
        script = self._settle_script
        try:
            for start in range(0, len(done), SETTLE_CHUNK):
                chunk = done[start : start + SETTLE_CHUNK]
                args: list[Any] = [self._ttl_ms]
                for c, state in chunk:
                    new = "" if state is None else Record(c.fingerprint, c.job_id, "done", state).encode()
                    args += [c.value, new]
                await script(keys=[c.redis_key for c, _ in chunk], args=args)
        except (RedisError, OSError) as exc:
            log.warning("idempotency settle failed keys=%d error=%r", len(done), exc)

    async def _current_states(self, seen: list[Seen]) -> dict[str, str]:
        """The projection's state of each earlier job (one round trip); missing ones left out."""
        if not seen:
            return {}
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for s in seen:
                    pipe.hget(job_key(self._prefix, s.job_id), "state")
                got: list[bytes | None] = await pipe.execute()
        except (RedisError, OSError) as exc:
            log.warning("idempotency state lookup failed jobs=%d error=%r", len(seen), exc)
            return {}
        return {s.job_id: v.decode() for s, v in zip(seen, got, strict=True) if v}


def _state(result: SubmitResult | None) -> str | None:
    """The state to mark a won claim done with; None (release the claim) if refused."""
    return result.state if isinstance(result, Submitted) else None


def _repeat(first: SubmitResult | None) -> SubmitResult:
    """What a batch's repeat of an earlier item with the same key and body gets."""
    assert first is not None, "a lead comes before its repeats"
    if isinstance(first, Refused):
        return Refused(first.error)
    return Submitted(first.id, first.state, duplicate=True)


def _answer(outcome: Outcome, states: dict[str, str]) -> SubmitResult:
    if isinstance(outcome, Seen):
        return Submitted(outcome.job_id, states.get(outcome.job_id, outcome.state), duplicate=True)
    assert isinstance(outcome, Clash | Busy)
    return Refused(ItemError(409, outcome.message))


def _redis_down(why: str, retry_after: int) -> Unavailable:
    return Unavailable(
        "redis", f"{why}: idempotency keys cannot be checked; the job was not accepted, retry later",
        retry_after=retry_after,
    )  # fmt: skip
