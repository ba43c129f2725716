"""One replay run: claim dead letters, enqueue them as new jobs, count what happened.

Per chunk of matched records, in order:

1. claim each record with a job: `SET {p}:dlq:replayed:<id> <replay_id> NX` (plain `SET`
   with `force`), all in one round trip. A record already claimed is skipped, so two
   replays over the same records enqueue each exactly once;
2. build the new envelopes (new id, attempt 1, no errors, `replay_of` = the dead id);
3. send their `queued` events and wait for Kafka (`StatusPublisher.send_now`), so no
   worker's `active` can overtake them;
4. hand every job to the producer, then wait for all acknowledgements (no per-job
   round trip); pacing to `rate` happens before this step;
5. publish a `replayed` event for each old id that made it, and record the new id; for
   one that did not, release the claim (only if it is still ours) so a later replay can
   take it, and publish `dead` for the new id whose `queued` went out.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from deadletters.store import DlqStore
from jobstream.futures import describe
from jobstream.kafka import Partitioner
from schemas import (
    DeadLetter,
    JobEnvelope,
    JobState,
    Priority,
    encode_job,
    events,
    job_headers,
    new_job_id,
    now_ms,
)

# Compare-and-delete: release claims only where the value is still this replay's id.
_RELEASE = """
local n = 0
for _, key in ipairs(KEYS) do
  if redis.call('GET', key) == ARGV[1] then n = n + redis.call('DEL', key) end
end
return n
"""


@dataclass(frozen=True, slots=True)
class ReplayOptions:
    priority: Priority | None = None
    rate: float | None = None
    force: bool = False


@dataclass(slots=True)
class Counts:
    replayed: int = 0
    skipped_replayed: int = 0  # claimed by another (or an earlier) replay
    skipped_no_job: int = 0  # poison: nothing to enqueue
    skipped_gone: int = 0  # left the index (retention) between selection and replay
    failed: int = 0
    error: str | None = None


class Pacer:
    """Spaces jobs to `rate` per second: `delay(n)` is how long to wait before sending the
    next `n` jobs, given the jobs counted so far. Pure but for the clock passed in."""

    def __init__(self, rate: float | None, start: float) -> None:
        self.rate = rate
        self.start = start
        self.sent = 0

    def delay(self, n: int, now: float) -> float:
        if not self.rate:
            return 0.0
        due = self.start + self.sent / self.rate
        self.sent += n
        return max(0.0, due - now)

    def chunk(self, default: int) -> int:
        """Jobs per send: about a quarter second's worth, so bursts stay small."""
        if not self.rate:
            return default
        return max(1, min(default, int(self.rate / 4)))


class ReplayRun:
    """Does the work of one replay; `counts` is its progress so far."""

    def __init__(
        self,
        replay_id: str,
        options: ReplayOptions,
        store: DlqStore,
        producer: Any,
        publisher: Any,
        partitioner: Partitioner,
        topics: Any,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.replay_id = replay_id
        self.options = options
        self.counts = Counts()
        self._store = store
        self._redis = store.redis
        self._producer = producer
        self._publisher = publisher
        self._partitioner = partitioner
        self._topics = topics
        self._release = self._redis.register_script(_RELEASE)
        self._clock, self._sleep = clock, sleep  # what paces the run
        self._pacer = Pacer(options.rate, clock())
        self._held: list[str] = []  # claimed, not yet handed to the producer

    def chunk_size(self, default: int) -> int:
        return self._pacer.chunk(default)

    async def release_held(self) -> None:
        """Give back claims taken but not sent (on cancel or failure)."""
        held, self._held = self._held, []
        if held:
            await self._release(keys=[self._store.claim_key(i) for i in held], args=[self.replay_id])

    async def process(self, ids: list[str]) -> None:
        """Replay the records `ids` (one chunk); updates `counts`."""
        c = self.counts
        records = await self._store.load(ids)
        todo: list[DeadLetter] = []
        for dead in records:
            if dead is None:
                c.skipped_gone += 1
            elif dead.job is None:
                c.skipped_no_job += 1
            else:
                todo.append(dead)
        claimed = await self._claim(todo)
        c.skipped_replayed += len(todo) - len(claimed)
        if not claimed:
            return
        self._held = [d.id for d in claimed]
        await self._sleep(self._pacer.delay(len(claimed), self._clock()))
        now = now_ms()
        pairs = [(dead, self._envelope(dead, now)) for dead in claimed]
        queued = [events.queued(env, now, replay_of=dead.id) for dead, env in pairs]
        await (await self._publisher.send_now(queued))
        futures: list[asyncio.Future[Any]] = []
        send_error: BaseException | None = None
        for _, env in pairs:
            try:
                futures.append(await self._send(env))
            except Exception as exc:
                send_error = exc
                break
        self._held = []
        results: list[Any] = list(await asyncio.gather(*futures, return_exceptions=True))
        results += [send_error] * (len(pairs) - len(futures))
        done: list[tuple[DeadLetter, JobEnvelope]] = []
        lost: list[tuple[DeadLetter, JobEnvelope, BaseException]] = []
        for pair, result in zip(pairs, results, strict=True):
            if isinstance(result, BaseException):
                lost.append((*pair, result))
            else:
                done.append(pair)
        await self._settle(done, lost)

    async def _claim(self, todo: list[DeadLetter]) -> list[DeadLetter]:
        if not todo:
            return []
        ttl = self._store.retention_ms
        async with self._redis.pipeline(transaction=False) as pipe:
            for dead in todo:
                pipe.set(self._store.claim_key(dead.id), self.replay_id, px=ttl, nx=not self.options.force)
            answers = await pipe.execute()
        return [dead for dead, ok in zip(todo, answers, strict=True) if ok]

    async def _send(self, env: JobEnvelope) -> asyncio.Future[Any]:
        topic = self._topics.jobs(env.priority)
        key = env.partition_key
        fut: asyncio.Future[Any] = await self._producer.send(
            topic,
            encode_job(env),
            key=key.encode(),
            partition=await self._partitioner.partition(topic, key),
            headers=job_headers(env),
        )
        return fut

    async def _settle(
        self,
        done: list[tuple[DeadLetter, JobEnvelope]],
        lost: list[tuple[DeadLetter, JobEnvelope, BaseException]],
    ) -> None:
        c = self.counts
        now = now_ms()
        if done:
            ttl = self._store.retention_ms
            async with self._redis.pipeline(transaction=False) as pipe:
                for dead, env in done:
                    pipe.set(self._store.replayed_as_key(dead.id), env.id, px=ttl)
                await pipe.execute()
            replayed = [
                events.status_event(dead.id, env.type, JobState.replayed, now, _attempt(dead),
                                    replay_id=self.replay_id, new_job_id=env.id)
                for dead, env in done
            ]  # fmt: skip
            c.replayed += len(done)
            await (await self._publisher.send_now(replayed))
        if lost:
            keys = [self._store.claim_key(dead.id) for dead, _, _ in lost]
            await self._release(keys=keys, args=[self.replay_id])
            c.failed += len(lost)
            c.error = f"Kafka did not take {len(lost)} job(s): {describe(lost[0][2])}"
            for _, env, err in lost:
                announced = events.status_event(env.id, env.type, JobState.queued, now)
                self._publisher.publish(
                    events.rejected(announced, f"replay not accepted: {describe(err)}", now)
                )

    def _envelope(self, dead: DeadLetter, now: int) -> JobEnvelope:
        job = dead.job
        assert job is not None
        return JobEnvelope(
            id=new_job_id(now),
            type=job.type,
            payload=job.payload,
            priority=self.options.priority or job.priority,
            attempt=1,
            max_attempts=job.max_attempts,
            backoff=job.backoff,
            timeout_s=job.timeout_s,
            key=job.key,
            created_at=now,
            parent_id=job.parent_id,
            then=job.then,
            replay_of=dead.id,
            errors=[],
        )


def _attempt(dead: DeadLetter) -> int:
    return dead.job.attempt if dead.job is not None else 1
