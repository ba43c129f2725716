"""The delay scheduler's loop: moves due jobs from Redis (`DelayStore`) to their topics.

One loop claims the jobs due within `lookahead_ms` (up to `batch`; a Lua script: due order,
lease `lease_ms`; it also answers when the next claim can take something), hands them to a
task that fires them (`scheduler.fire.BatchFirer`: `queued` events first, each record at its
due time, never before), and sleeps until the next job is due within half the lookahead (the
arithmetic: `scheduler.lookahead`). The loop's next claim deletes the acknowledged jobs from
Redis. Up to `BATCHES_IN_FLIGHT` tasks run at once. What Kafka did not acknowledge stays
claimed, and any scheduler claims it again when the lease expires: nothing is lost, and a
job is produced twice only when a scheduler dies (or Kafka stalls past the lease) between
produce and delete; the worker's completed-id check absorbs that duplicate.

The loop sleeps at most `max_sleep_s`. Inserts publish their earliest due time on a Redis
channel, so schedulers in every process wake early for a job due sooner than they planned.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import Sequence
from typing import Any, Protocol

from redis.asyncio import Redis

from jobstream.kafka import Partitioner
from jobstream.lifecycle import Lifecycle
from jobstream.settings import DelaySettings
from jobstream.status_publisher import StatusPublisher
from scheduler.fire import BatchFirer
from scheduler.lookahead import Lookahead
from scheduler.store import ClaimedJobs
from schemas import (
    Topics,
    now_ms,
)

log = logging.getLogger("jobstream.scheduler")

BATCHES_IN_FLIGHT = 16
# acknowledged jobs are deleted from Redis within about this long (by the next claim)
FORGET_WITHIN_MS = 100


class JobSource(Protocol):
    """Where a scheduler claims its jobs: the delay store (`DelayStore`), or the schedules
    (`scheduler.recurring.ScheduleClaims`), each with a lease and a wake channel."""

    redis: Redis
    channel: str

    async def claim(
        self,
        now_ms: int,
        lease_ms: int,
        limit: int,
        forget: Sequence[str] = (),
        horizon_ms: int | None = None,
    ) -> ClaimedJobs: ...

    async def done(self, ids: Sequence[str]) -> None: ...


class Scheduler(Lifecycle):
    """Fires delayed jobs when due. A `jobstream.lifecycle.Service`: `close()` returns once
    the loops have stopped and every produced batch is settled (bounded by twice the
    produce timeout)."""

    def __init__(
        self,
        store: JobSource,
        producer: Any,
        partitioner: Partitioner,
        publisher: StatusPublisher,
        topics: Topics,
        *,
        lease_ms: int = 10_000,
        batch: int = 1_000,
        max_sleep_s: float = 1.0,
        produce_timeout_s: float = 5.0,
        lookahead_ms: int = 50,
        what: str = "delayed jobs",
    ) -> None:
        super().__init__()
        self._what = what  # in logs
        self._store = store
        self._publisher = publisher
        self._topics = topics
        self._lease_ms = lease_ms
        self._batch = batch
        self._clock = Lookahead.of(lookahead_ms, lease_ms, max_sleep_s)
        # acks later than this: leave the jobs claimed (well before the lease runs out)
        self._produce_timeout_s = self._clock.produce_timeout_s(produce_timeout_s)
        self._firer = BatchFirer(
            producer, partitioner, publisher, topics, self._produce_timeout_s, closing=lambda: self._closing
        )
        self._wake = asyncio.Event()
        self._sleep_until = math.inf  # ms; an insert to claim before this wakes the loop
        self._slots = asyncio.Semaphore(BATCHES_IN_FLIGHT)
        self._tasks: set[asyncio.Task[None]] = set()
        self._finishers: set[asyncio.Task[None]] = set()
        self._acked: list[str] = []  # ids Kafka has, still claimed in Redis
        self.fired = 0
        self.lateness = self._firer.lateness  # from due to hand-over, per job (the API's metrics)

    @classmethod
    def from_settings(
        cls, settings: DelaySettings, store: JobSource, producer: Any, partitioner: Partitioner,
        publisher: StatusPublisher, what: str = "delayed jobs", lookahead_ms: int | None = None,
    ) -> Scheduler:  # fmt: skip
        """A scheduler as `settings` say; `lookahead_ms` instead of theirs when given."""
        ahead = settings.scheduler_lookahead_ms if lookahead_ms is None else lookahead_ms
        return cls(
            store, producer, partitioner, publisher, settings.topics,
            lease_ms=settings.scheduler_lease_ms, batch=settings.scheduler_batch,
            produce_timeout_s=settings.submit_timeout_s, lookahead_ms=ahead, what=what,
        )  # fmt: skip

    async def _startup(self) -> None:
        for coro, name in ((self._run(), "scheduler"), (self._listen(), "scheduler-wake")):
            self._tasks.add(asyncio.create_task(coro, name=name))

    async def _shutdown(self) -> None:
        """Stop claiming, let produced batches settle (bounded), stop listening."""
        self._wake.set()
        for task in self._tasks:
            if task.get_name() == "scheduler-wake":
                task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._finishers:
            await asyncio.wait(self._finishers, timeout=2 * self._produce_timeout_s + 1)
        if self._acked:
            try:
                await self._store.done(self._acked)
            except Exception as exc:  # they stay claimed: fired again after the lease
                log.warning("could not forget %d fired jobs in redis: %r", len(self._acked), exc)

    async def _run(self) -> None:
        backoff = 0.1
        while not self._closing:
            try:
                self._wake.clear()
                self._sleep_until = math.inf  # until we know the head, any insert wakes us
                claimed, head = await self._fire_once()
                if claimed >= self._batch:
                    continue  # more are due: claim again at once
                await self._sleep_until_due(head)
                backoff = 0.1
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("scheduler step failed, retrying in %.1fs: %r", backoff, exc)
                await self._nap(backoff)
                backoff = min(backoff * 2, 2.0)

    async def _fire_once(self) -> tuple[int, int | None]:
        """Claim the jobs due within the lookahead and hand them to a task that produces each
        when due; returns how many were claimed and when to claim next."""
        await self._slots.acquire()  # released by the batch's task, or below
        forget, self._acked = self._acked, []
        try:
            now = now_ms()
            raw, due, expiry = await self._store.claim(
                now, self._lease_ms, self._batch, forget, horizon_ms=self._clock.horizon(now)
            )
            head = self._clock.claim_at(due, expiry)
        except BaseException:
            self._acked.extend(forget)  # still claimed: forget them next time
            self._slots.release()
            raise
        if not raw:
            self._slots.release()
            return 0, head
        task = asyncio.create_task(self._produce(raw, now), name="scheduler-produce")
        self._finishers.add(task)
        task.add_done_callback(self._finishers.discard)
        return len(raw), head

    async def _produce(self, raw: list[bytes], now: int) -> None:
        """Fire a claimed batch (`BatchFirer.fire`); the acknowledged jobs are forgotten in
        Redis by the next claim, which comes soon. What Kafka did not acknowledge stays
        claimed: fired again after the lease."""
        try:
            acked = await self._firer.fire(raw, now)
            if len(acked) < len(raw):
                log.warning("kafka did not acknowledge %d %s; they fire again after the lease",
                            len(raw) - len(acked), self._what)  # fmt: skip
            self._acked.extend(acked)  # the next claim forgets them in Redis ...
            self.fired += len(acked)
            if self._sleep_until - now_ms() > FORGET_WITHIN_MS:
                self._wake.set()  # ... soon: a scheduler killed meanwhile would fire them again
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning(
                "could not fire %d %s (they fire again after the lease): %r", len(raw), self._what, exc
            )
        finally:
            self._slots.release()

    async def _sleep_until_due(self, head: int | None) -> None:
        """Sleep until `head` (at most `max_sleep_s`), unless an insert due sooner wakes us."""
        now = now_ms()
        wait_ms = self._clock.sleep_ms(head, now)
        if wait_ms <= 0:
            return
        self._sleep_until = now + wait_ms
        await self._nap(wait_ms / 1000)
        self._sleep_until = -math.inf

    async def _nap(self, seconds: float) -> None:
        """Sleep, unless woken (a sooner job, or close)."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._wake.wait()

    async def _listen(self) -> None:
        """Wake the loop when another process stores a job due before it planned to look."""
        backoff = 0.1
        while not self._closing:
            try:
                async with self._store.redis.pubsub(ignore_subscribe_messages=True) as sub:
                    await sub.subscribe(self._store.channel)
                    self._wake.set()  # inserts may have come while we were not listening
                    backoff = 0.1
                    # checked, not only cancelled: redis-py's read timeout can swallow a cancel
                    while not self._closing:
                        msg = await sub.get_message(ignore_subscribe_messages=True, timeout=0.5)
                        if msg is not None and self._clock.wakes(int(msg["data"]), self._sleep_until):
                            self._wake.set()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("scheduler wake channel failed, resubscribing in %.1fs: %r", backoff, exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
