"""Firing one claimed batch of delayed jobs: `queued` events, then each record when due.

`BatchFirer.fire` publishes the batch's `queued` events and waits for Kafka to take them
(as the API does, so a worker's `active` never precedes `queued`), then hands each job's
record to the producer at its due time, never before (the jobs due by then in one
`send_all`); so the `queued` round trip happens ahead of time, not on the job's path. It
gathers the acks until its deadline and returns the ids Kafka has. Each job stands alone:
one whose record Kafka refuses (too large) goes to the dead letters with reason `rejected`
(and counts as done), one failed by a producer that broke is sent again on its
replacement while the deadline lasts. The loop (`scheduler.loop`) claims the batches and
forgets what this returns.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import orjson
from aiokafka.errors import KafkaError

from jobstream.futures import observe
from jobstream.histogram import LATENESS_BUCKETS, PlainHistogram
from jobstream.kafka import Partitioner
from jobstream.producer_guard import GuardedProducer, SendGroup, SendRecord, refused_record
from jobstream.status_publisher import StatusPublisher
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

RESEND_PAUSE_S = 0.05  # between rounds of sending again what a broken producer failed


class BatchFirer:
    """Produces claimed batches; see the module docstring. `closing()` says when to stop
    sending again what failed."""

    def __init__(
        self,
        producer: GuardedProducer,
        partitioner: Partitioner,
        publisher: StatusPublisher,
        topics: Topics,
        produce_timeout_s: float,
        closing: Callable[[], bool] = lambda: False,
    ) -> None:
        self._producer = producer
        self._partitioner = partitioner
        self._publisher = publisher
        self._topics = topics
        self._produce_timeout_s = produce_timeout_s
        self._closing = closing
        self.lateness = PlainHistogram(LATENESS_BUCKETS)  # seconds from due to hand-over, per job

    async def fire(self, raw: list[bytes], now: int) -> list[str]:
        """Produce the batch (stored envelopes, in due order); the ids Kafka acknowledged,
        or whose record it refused and whose dead letter it took. Raises if Kafka does not
        take the `queued` events in time (then nothing was produced)."""
        jobs = [orjson.loads(r) for r in raw]
        deadline = asyncio.get_running_loop().time() + self._produce_timeout_s
        async with asyncio.timeout_at(deadline):
            await (await self._publisher.send_now([events.fired(job, now) for job in jobs]))
        counts: dict[str, int] = {}
        records = await self._records(jobs, raw, counts)  # built ahead: at the due time, only sends
        sent: list[_Sent] = []
        start = 0
        while start < len(jobs):  # every job due by now in one hand-over, the next when due
            await _until(jobs[start].get("not_before") or 0)
            now_due, end = now_ms(), start + 1
            while end < len(jobs) and (jobs[end].get("not_before") or 0) <= now_due:
                end += 1
            for job in jobs[start:end]:  # handed over now: how late against its due time
                self.lateness.observe((now_due - (job.get("not_before") or now_due)) / 1000)
            sent.extend(await self._send_records(jobs[start:end], raw[start:end], records[start:end]))
            start = end
        sent = await self._settle(sent, counts, deadline)
        acked = [s.job["id"] for s in sent if s.ok]
        refused = [(s.job, len(s.value), s.error) for s in sent if s.refused]
        if refused:  # a step of its own: the refusals may have used up the deadline
            loop = asyncio.get_running_loop()
            acked.extend(await self._dead_letter(refused, loop.time() + self._produce_timeout_s))
        return acked

    async def _settle(self, sent: list[_Sent], counts: dict[str, int], deadline: float) -> list[_Sent]:
        """Wait for the acks until `deadline`, sending again each record that failed for a
        reason other than the record itself (a producer that broke and was replaced)."""
        loop = asyncio.get_running_loop()
        while True:
            waiting = {id(s.group): s.group.done for s in sent if not s.group.done.done()}
            if waiting:
                await asyncio.wait(waiting.values(), timeout=max(0.0, deadline - loop.time()))
            again = [i for i, s in enumerate(sent) if s.error is not None and not s.refused]
            if not again or loop.time() >= deadline or self._closing():
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
        return await self._send_records(jobs, values, await self._records(jobs, values, counts))

    async def _records(
        self, jobs: list[dict[str, Any]], values: list[bytes], counts: dict[str, int]
    ) -> list[SendRecord]:
        """Each job's record: its topic, value, key, partition and headers."""
        records: list[SendRecord] = []
        for job, value in zip(jobs, values, strict=True):
            topic = self._topics.jobs(Priority(job.get("priority", "normal")))
            n = counts.get(topic) or await self._partitioner.count(topic)
            counts[topic] = n
            key = job.get("key") or job["id"]
            headers = record_headers(job["type"], job.get("attempt", 1), job.get("traceparent"))
            records.append((topic, value, key.encode(), partition_for(key, n), headers))
        return records

    async def _send_records(
        self, jobs: list[dict[str, Any]], values: list[bytes], records: list[SendRecord]
    ) -> list[_Sent]:
        """Hand the records to the producer in one go; each settles when Kafka acknowledged or
        refused it (refused by the client too: too large). No producer: each failed so."""
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
