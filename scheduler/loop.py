"""The delay scheduler: moves due jobs from Redis (`DelayStore`) to their priority topics.

One loop claims the jobs due within `lookahead_ms` (up to `batch`; a Lua script: due order,
lease `lease_ms`; it also answers when the next claim can take something), hands them to a
task, and sleeps until the next job is due within half the lookahead (the arithmetic:
`scheduler.lookahead`). Each batch's task
publishes the `queued` events and waits for Kafka to take them (as the API does, so a
worker's `active` never precedes `queued`), then produces each job record at its due time,
never before; so the `queued` round trip happens ahead of time, not on the job's path.
It gathers the acks; the loop's next claim deletes the acknowledged jobs from Redis.
A job is never held back by another of its batch: one whose record Kafka refuses (too
large) goes to the dead letters with reason `rejected` and is deleted like a fired one;
records a broken producer failed are sent again on its replacement. Up to
`BATCHES_IN_FLIGHT` tasks run at once. What Kafka did not acknowledge stays claimed, and
any scheduler claims it again when the lease expires: nothing is lost, and a job is
produced twice only when a scheduler dies (or Kafka stalls past the lease) between produce
and delete; the worker's completed-id check absorbs that duplicate.

The loop sleeps at most `max_sleep_s`. Inserts publish their earliest due time on a Redis
channel, so schedulers in every process wake early for a job due sooner than they planned.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from typing import Any, NamedTuple

import orjson
from aiokafka.errors import KafkaError

from jobstream.futures import observe
from jobstream.kafka import Partitioner
from jobstream.lifecycle import Lifecycle
from jobstream.producer_guard import SendGroup, refused_record
from jobstream.settings import DelaySettings
from jobstream.status import StatusPublisher
from scheduler.lookahead import Lookahead
from scheduler.store import DelayStore
from schemas import (
    DeadLetter,
    DeadReason,
    JobState,
    Priority,
    Source,
    Topics,
    encode_dead_letter,
    events,
    now_ms,
    partition_for,
    record_headers,
)

log = logging.getLogger("jobstream.scheduler")

BATCHES_IN_FLIGHT = 16
# acknowledged jobs are deleted from Redis within about this long (by the next claim)
FORGET_WITHIN_MS = 100
RESEND_PAUSE_S = 0.05  # between rounds of sending again what a broken producer failed


class Scheduler(Lifecycle):
    """Fires delayed jobs when due. A `jobstream.lifecycle.Service`: `close()` returns once
    the loops have stopped and every produced batch is settled (bounded by twice the
    produce timeout)."""

    def __init__(
        self,
        store: DelayStore,
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
    ) -> None:
        super().__init__()
        self._store = store
        self._producer = producer
        self._partitioner = partitioner
        self._publisher = publisher
        self._topics = topics
        self._lease_ms = lease_ms
        self._batch = batch
        self._clock = Lookahead.of(lookahead_ms, lease_ms, max_sleep_s)
        # acks later than this: leave the jobs claimed (well before the lease runs out)
        self._produce_timeout_s = self._clock.produce_timeout_s(produce_timeout_s)
        self._wake = asyncio.Event()
        self._sleep_until = math.inf  # ms; an insert to claim before this wakes the loop
        self._slots = asyncio.Semaphore(BATCHES_IN_FLIGHT)
        self._tasks: set[asyncio.Task[None]] = set()
        self._finishers: set[asyncio.Task[None]] = set()
        self._acked: list[str] = []  # ids Kafka has, still claimed in Redis
        self.fired = 0

    @classmethod
    def from_settings(
        cls, settings: DelaySettings, store: DelayStore, producer: Any, partitioner: Partitioner,
        publisher: StatusPublisher,
    ) -> Scheduler:  # fmt: skip
        return cls(
            store, producer, partitioner, publisher, settings.topics,
            lease_ms=settings.scheduler_lease_ms, batch=settings.scheduler_batch,
            produce_timeout_s=settings.submit_timeout_s, lookahead_ms=settings.scheduler_lookahead_ms,
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
        """Publish the batch's `queued` events; once Kafka has them, produce each job at its
        due time (they come in due order), then gather the acks. Each job stands alone: one
        that Kafka refuses goes to the dead letters (`rejected`), one failed by a producer
        that broke is sent again while the produce timeout lasts, and whatever is still not
        acknowledged stays claimed: fired again after the lease."""
        sent: list[_Sent] = []
        try:
            jobs = [orjson.loads(r) for r in raw]
            deadline = asyncio.get_running_loop().time() + self._produce_timeout_s
            async with asyncio.timeout_at(deadline):
                await (await self._publisher.send_now([events.fired(job, now) for job in jobs]))
            counts: dict[str, int] = {}
            start = 0
            while start < len(jobs):  # every job due by now in one hand-over, the next when due
                await _until(jobs[start].get("not_before") or 0)
                now_due, end = now_ms(), start + 1
                while end < len(jobs) and (jobs[end].get("not_before") or 0) <= now_due:
                    end += 1
                sent.extend(await self._send(jobs[start:end], raw[start:end], counts))
                start = end
            sent = await self._settle(sent, counts, deadline)
            acked = [s.job["id"] for s in sent if s.ok]
            refused = [(s.job, len(s.value), s.error) for s in sent if s.refused]
            if refused:  # a step of its own: the refusals may have used up the deadline
                loop = asyncio.get_running_loop()
                acked.extend(await self._dead_letter(refused, loop.time() + self._produce_timeout_s))
            if len(acked) < len(jobs):
                log.warning("kafka did not acknowledge %d delayed jobs; they fire again after the lease",
                            len(jobs) - len(acked))  # fmt: skip
            self._acked.extend(acked)  # the next claim forgets them in Redis ...
            self.fired += len(acked)
            if self._sleep_until - now_ms() > FORGET_WITHIN_MS:
                self._wake.set()  # ... soon: a scheduler killed meanwhile would fire them again
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("could not fire %d delayed jobs (they fire again after the lease): %r", len(raw), exc)
        finally:
            self._slots.release()

    async def _settle(self, sent: list[_Sent], counts: dict[str, int], deadline: float) -> list[_Sent]:
        """Wait for the acks until `deadline`, sending again each record that failed for a
        reason other than the record itself (a producer that broke and was replaced)."""
        loop = asyncio.get_running_loop()
        while True:
            waiting = {id(s.group): s.group.done for s in sent if not s.group.done.done()}
            if waiting:
                await asyncio.wait(waiting.values(), timeout=max(0.0, deadline - loop.time()))
            again = [i for i, s in enumerate(sent) if s.error is not None and not s.refused]
            if not again or loop.time() >= deadline or self._closing:
                return sent
            await asyncio.sleep(RESEND_PAUSE_S)
            try:
                async with asyncio.timeout_at(deadline):
                    jobs, values = [sent[i].job for i in again], [sent[i].value for i in again]
                    resent = await self._send(jobs, values, counts)
            except TimeoutError:
                return sent
            for i, s in zip(again, resent, strict=True):
                sent[i] = s

    async def _send(
        self, jobs: list[dict[str, Any]], values: list[bytes], counts: dict[str, int]
    ) -> list[_Sent]:
        """Hand the records to the producer in one go; each settles when Kafka acknowledged or
        refused it (refused by the client too: too large). No producer: each failed so."""
        records = []
        for job, value in zip(jobs, values, strict=True):
            topic = self._topics.jobs(Priority(job.get("priority", "normal")))
            n = counts.get(topic) or await self._partitioner.count(topic)
            counts[topic] = n
            key = job.get("key") or job["id"]
            headers = record_headers(job["type"], job.get("attempt", 1), job.get("traceparent"))
            records.append((topic, value, key.encode(), partition_for(key, n), headers))
        try:
            group = await self._producer.send_all(records)
        except KafkaError as exc:  # no producer (one replacing a broken one did not come up)
            group = SendGroup.failed(asyncio.get_running_loop(), len(records), exc)
        return [_Sent(job, value, group, i) for i, (job, value) in enumerate(zip(jobs, values, strict=True))]

    async def _dead_letter(
        self, refused: list[tuple[dict[str, Any], int, BaseException | None]], deadline: float
    ) -> list[str]:
        """Send jobs that Kafka will never take to the dead-letter topic (`rejected`) and end
        them with a `dead` event; the ids whose dead letter Kafka acknowledged."""
        now = now_ms()
        futures: list[asyncio.Future[Any]] = []
        try:
            async with asyncio.timeout_at(deadline):
                for job, size, exc in refused:
                    dead, event = refused_job(job, size, exc, self._topics, now)
                    log.warning("delayed job %s %s refused by Kafka: %s", job["id"], job["type"], exc)
                    self._publisher.publish(event)
                    partition = await self._partitioner.partition(self._topics.dlq, dead.id)
                    futures.append(
                        await self._producer.send(
                            self._topics.dlq,
                            encode_dead_letter(dead),
                            key=dead.id.encode(),
                            partition=partition,
                        )
                    )
                await asyncio.wait(futures, timeout=max(0.0, deadline - asyncio.get_running_loop().time()))
        except (TimeoutError, KafkaError) as exc:
            log.warning("dead letters of refused delayed jobs not written (retried after the lease): %r", exc)
        return [job["id"] for (job, _, _), fut in zip(refused, futures, strict=False) if _ok(fut)]

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


async def _until(due_ms: int) -> None:
    """Return once the clock reads `due_ms` or later (never before: a timer may fire early)."""
    while (left := due_ms - time.time_ns() / 1_000_000) > 0:  # noqa: ASYNC110 - a clock, no event
        await asyncio.sleep(left / 1000)


def refused_job(
    job: dict[str, Any], size: int, exc: BaseException | None, topics: Topics, now: int
) -> tuple[DeadLetter, dict[str, Any]]:
    """The dead letter and the `dead` event of a delayed job whose record Kafka refused. The
    envelope is left out (it is what Kafka would not take), so the dead letter cannot be
    replayed as it is: the error says what to change."""
    message = f"Kafka refused the job's record ({size} bytes): {exc!r}; submit a smaller job"
    error = {"type": "Rejected", "message": message}
    dead = DeadLetter(
        id=job["id"], type=job["type"], reason=DeadReason.rejected,
        errors=[{"attempt": job.get("attempt", 1), "at": now, **error}],
        source=Source(topic=topics.jobs(Priority(job.get("priority", "normal"))), partition=-1, offset=-1),
        dead_at=now,
    )  # fmt: skip
    announced = events.status_event(job["id"], job["type"], JobState.queued, now, job.get("attempt", 1))
    return dead, events.rejected(announced, message, now)


class _Sent(NamedTuple):
    """A delayed job handed to the producer: record `i` of `group`."""

    job: dict[str, Any]
    value: bytes
    group: SendGroup
    i: int

    @property
    def error(self) -> BaseException | None:
        """Why Kafka does not have it; None while unsettled or once acknowledged."""
        return self.group.errors[self.i] if self.group.settled(self.i) else None

    @property
    def ok(self) -> bool:
        return self.group.settled(self.i) and self.group.errors[self.i] is None

    @property
    def refused(self) -> bool:
        return refused_record(self.error)


def _ok(fut: asyncio.Future[Any]) -> bool:
    if not fut.done():
        fut.add_done_callback(observe)
        return False
    return not fut.cancelled() and fut.exception() is None
