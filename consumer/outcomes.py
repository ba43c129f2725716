"""Outcomes: what the worker tells Kafka about each record it took, and when the record's
offset may be committed. The one place that builds status events (`Outcomes.event`).

Every outcome of a fetched record (completed, cancelled, failed then retried or dead,
expired, poison) goes through `Outcomes`, which marks the record done in its
`OffsetTracker` only once Kafka has acknowledged everything the outcome writes. Until then
the offset stays pending and the outcome is sent again: an outcome is never dropped.

Two ways to Kafka, by what the outcome writes:
- status events only (completed, cancelled, a redelivered job already completed): through
  the coalescing `StatusPublisher` with a callback, so a job costs no future and no loop
  turn; re-published every `REPUBLISH_DELAY_S` until acknowledged. A `completed` event is
  recorded in Redis first (`Completions`), and its record confirmed once Kafka has it
  (`DoneStore.confirm`).
- status events and records (retry, dead letter, follow-ups): the events are sent at once
  and awaited, then the records are produced and awaited. So the status stream shows
  `failed` and `retrying` before the next attempt's `active`, and a crash between the two
  steps redelivers the attempt instead of losing it. Retried every `RETRY_PAUSE_S` until
  Kafka takes them or the worker stops (then the record stays uncommitted and runs
  elsewhere).
"""

from __future__ import annotations

import asyncio
import base64
import logging
import random
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import orjson
from aiokafka import TopicPartition
from aiokafka.errors import KafkaError

from consumer.completions import Completed, Completions
from consumer.donestore import DoneStore
from consumer.metrics import JobMetrics
from consumer.offsets import OffsetTracker
from consumer.retry import Failure, RetryPolicy, decide
from jobstream.kafka import Partitioner
from jobstream.settings import WorkerSettings
from jobstream.status_publisher import StatusPublisher
from schemas import (
    HEADER_DUE,
    DeadLetter,
    DeadReason,
    JobEnvelope,
    JobSpec,
    JobState,
    Source,
    child_job_id,
    encode_dead_letter,
    encode_job,
    events,
    job_headers,
    now_ms,
)

if TYPE_CHECKING:
    from consumer.intake import Item

log = logging.getLogger("jobstream.worker")

Headers = list[tuple[str, bytes]]
Record = tuple[str, str, bytes, Headers]  # topic, key, value, headers
REPUBLISH_DELAY_S = 1.0
RETRY_PAUSE_S = 1.0


def child_envelope(parent: JobEnvelope, spec: JobSpec, index: int, result: Any, now: int) -> JobEnvelope:
    """The `index`-th follow-up of `parent`: the spec, given the parent's result as
    `payload.parent_result`, with a deterministic id, in the parent's trace."""
    return JobEnvelope.trusted(
        id=child_job_id(parent.id, index), type=spec.type, payload={**spec.payload, "parent_result": result},
        priority=spec.priority, attempt=1, max_attempts=spec.max_attempts, backoff=spec.backoff,
        timeout_s=spec.timeout_s, key=spec.key, idempotency_key=None, created_at=now, not_before=None,
        parent_id=parent.id, then=spec.then or [], replay_of=None, expires_at=spec.expiry_ms(now), errors=[],
        traceparent=parent.traceparent,
    )  # fmt: skip


class Outcomes:
    """Publishes the outcome of every record, routes failed attempts to a retry tier or the
    dead-letter topic, enqueues follow-ups. Owns the status publisher and the completions."""

    def __init__(
        self,
        settings: WorkerSettings,
        producer: Any,
        done: DoneStore,
        metrics: JobMetrics,
        worker_id: str,
        stopping: Callable[[], bool],
        rng: random.Random | None = None,
    ) -> None:
        self._topics = settings.topics
        self._producer = producer
        self._partitioner = Partitioner(producer)
        self._done = done
        self._metrics = metrics
        self._worker = worker_id
        self._stopping = stopping
        self._rng = rng or random.Random()
        self._policy = RetryPolicy.of(settings)
        self.completions: Completions[Item] = Completions(done, self._send_completed)
        self.status = StatusPublisher(
            producer, self._topics.status, settings.status_partitions, hold=self.completions.settle
        )

    async def flush(self) -> None:
        """Return once every completion so far is handed on and Kafka has acknowledged every
        status event sent."""
        await self.completions.flush()
        await self.status.flush()

    def event(self, job: JobEnvelope, state: JobState, at: int, **fields: Any) -> dict[str, Any]:
        """A status event about `job` from this worker."""
        return events.job_event(job, state, at, worker=self._worker, **fields)

    # -- no outcome yet: nothing waits for these ---------------------------------------

    def active(self, job: JobEnvelope, wait_ms: int | None = None) -> None:
        """`active`, with how long the job waited (from submit or due time to now) when known."""
        if wait_ms is None:
            self.status.publish(self.event(job, JobState.active, now_ms()))
        else:
            self.status.publish(self.event(job, JobState.active, now_ms(), wait_ms=wait_ms))

    def progress(self, job: JobEnvelope, percent: float, message: str | None) -> None:
        progress = {"percent": percent, "message": message}
        self.status.publish(self.event(job, JobState.progress, now_ms(), progress=progress))

    # -- status events only --------------------------------------------------------------

    def completed(self, item: Item, result: Any, children: list[str]) -> None:
        """Record the completion in Redis, then publish it (`Completions`)."""
        self._metrics.count(item.job.type, "completed")
        fields: dict[str, Any] = {"result": result}
        if children:
            fields["children"] = children
        self.completions.add(item, self.event(item.job, JobState.completed, now_ms(), **fields))

    def cancelled(self, item: Item) -> None:
        self._metrics.count(item.job.type, "cancelled")
        self._publish(item, self.event(item.job, JobState.cancelled, now_ms()), completed=False)

    def already_completed(self, item: Item, unconfirmed: bytes | None) -> None:
        """A redelivered job recorded as completed: skip it. If Kafka's acknowledgement of
        its completed event was never confirmed, its worker may have died before Kafka had
        it: send the recorded event again (a duplicate of an event Kafka has is harmless)."""
        self._metrics.count(item.job.type, "skipped")
        if unconfirmed is None:
            item.tracker.done(item.offset)
            return
        try:
            event = orjson.loads(unconfirmed)
        except orjson.JSONDecodeError:
            item.tracker.done(item.offset)
            return
        job = item.job
        log.info("job %s %s completed by a worker that died; sending its status again", job.id, job.type)
        self._publish(item, event, completed=True)

    def copy_skipped(self, item: Item) -> None:
        """A copy of a job that waited while the job ran, not run: the job's own outcome
        carries it on (its offset stays below the commit point until that outcome is in)."""
        self._metrics.count(item.job.type, "skipped")
        item.tracker.done(item.offset)

    def _send_completed(self, batch: list[Completed[Item]]) -> None:
        for item, event in batch:  # recorded in Redis (or Redis failed): now to Kafka
            self._publish(item, event, completed=True)

    def _publish(self, item: Item, event: dict[str, Any], completed: bool) -> None:
        """Publish the outcome; once Kafka has it, the record's offset may be committed."""
        job = item.job

        def acked(err: BaseException | None) -> None:
            if err is None:
                item.tracker.done(item.offset)
                if completed:
                    self._done.confirm(job.id)
            else:  # keep the offset pending and try again: an outcome is never dropped
                log.warning("status for job %s not acknowledged (%s); retrying", job.id, err)
                asyncio.get_running_loop().call_later(REPUBLISH_DELAY_S, self.status.publish, event, acked)

        self.status.publish(event, acked)

    # -- status events and records -------------------------------------------------------

    async def failed(self, item: Item, failure: Failure) -> None:
        """Route a failed attempt: to the tier `decide` picks, or to the dead-letter topic."""
        job = item.job
        self._metrics.count(job.type, "failed")
        log.info("job %s %s failed attempt %d: %s", job.id, job.type, job.attempt, failure.error["message"])
        now = now_ms()
        attempt_error = {**failure.error, "attempt": job.attempt, "worker": self._worker, "at": now}
        errors = [*job.errors, attempt_error]
        failed = self.event(job, JobState.failed, now, error=failure.error)
        decision = decide(job, item.spec, failure, self._policy, self._rng)
        if isinstance(decision, DeadReason):
            dead = DeadLetter(
                id=job.id, type=job.type, reason=decision, job=job.model_copy(update={"errors": errors}),
                errors=errors, source=_source(item), dead_at=now,
            )  # fmt: skip
            log.info("job %s %s dead after attempt %d: %s", job.id, job.type, job.attempt, decision.value)
            self._metrics.dead_letter(job.type, decision.value)
            said = [failed, self.event(job, JobState.dead, now, reason=decision.value, error=failure.error)]
            record = (self._topics.dlq, job.partition_key, encode_dead_letter(dead), job_headers(job))
        else:
            due = now + decision.delay_ms
            retry = job.model_copy(update={"attempt": job.attempt + 1, "errors": errors})
            retrying = self.event(
                job, JobState.retrying, now,
                error=failure.error, due_at=due, tier=decision.name, next_attempt=job.attempt + 1,
            )  # fmt: skip
            log.info("job %s %s retrying attempt %d in %s", job.id, job.type, job.attempt + 1, decision.name)
            headers = [*job_headers(retry), (HEADER_DUE, str(due).encode())]
            said = [failed, retrying]
            record = (self._topics.retry(decision.name), job.partition_key, encode_job(retry), headers)
        if await self._route(said, [record]):
            item.tracker.done(item.offset)

    async def expired(self, item: Item) -> None:
        """A job not started before its `expires_at`: dead, without running it."""
        job = item.job
        self._metrics.count(job.type, "expired")
        self._metrics.dead_letter(job.type, DeadReason.expired.value)
        now = now_ms()
        message = f"the job expired at {job.expires_at} before it started"
        dead = DeadLetter(
            id=job.id, type=job.type, reason=DeadReason.expired, job=job, errors=job.errors,
            source=_source(item), dead_at=now,
        )  # fmt: skip
        error = {"type": "Expired", "message": message}
        event = self.event(job, JobState.dead, now, reason=DeadReason.expired.value, error=error)
        record = (self._topics.dlq, job.partition_key, encode_dead_letter(dead), job_headers(job))
        if await self._route([event], [record]):
            item.tracker.done(item.offset)

    async def poison(self, tp: TopicPartition, record: Any, tracker: OffsetTracker, why: str) -> None:
        """Send a record that does not decode to the dead-letter topic, bytes and all."""
        self._metrics.count("", "poison")
        self._metrics.dead_letter("", DeadReason.poison.value)
        log.warning("poison record %s[%d]@%d: %s", tp.topic, tp.partition, record.offset, why)
        source = Source(topic=tp.topic, partition=tp.partition, offset=record.offset)
        error = {"attempt": 0, "type": "DecodeError", "message": why, "worker": self._worker, "at": now_ms()}
        dead = DeadLetter(
            id=f"poison:{source.topic}:{source.partition}:{source.offset}",
            reason=DeadReason.poison,
            raw=base64.b64encode(record.value or b"").decode(),
            errors=[error],
            source=source,
            dead_at=now_ms(),
        )
        if await self._route([], [(self._topics.dlq, dead.id, encode_dead_letter(dead), [])]):
            tracker.done(record.offset)

    async def follow_ups(self, parent: JobEnvelope, specs: list[JobSpec], result: Any) -> list[str] | None:
        """Enqueue a completed job's follow-ups (their `queued` events first); their ids, once
        Kafka has them all, or None if the worker stopped first (the parent then runs again,
        and enqueues the same ids)."""
        now = now_ms()
        children = [child_envelope(parent, spec, i, result, now) for i, spec in enumerate(specs)]
        # not `event`: a child's `queued` event, like the API's, comes from no worker
        queued = [events.queued(c, now) for c in children]
        records = [
            (self._topics.jobs(c.priority), c.partition_key, encode_job(c), job_headers(c)) for c in children
        ]
        if not await self._route(queued, records):
            return None
        return [c.id for c in children]

    async def _route(self, said: list[dict[str, Any]], records: list[Record]) -> bool:
        """Status events first (acknowledged), then the records; retried until Kafka takes
        them or the worker stops. True once Kafka has everything."""
        while True:
            try:
                if said:
                    await (await self.status.send_now(said))
                futures = []
                for topic, key, value, headers in records:
                    partition = await self._partitioner.partition(topic, key)
                    futures.append(
                        await self._producer.send(
                            topic, value, key=key.encode(), partition=partition, headers=headers
                        )
                    )
                await asyncio.gather(*futures)
                return True
            except KafkaError as exc:
                where = ", ".join(sorted({r[0] for r in records})) or "the status topic"
                if self._stopping():
                    log.warning("could not route to %s before stopping: %s; left for redelivery", where, exc)
                    return False
                log.warning("could not route to %s, retrying in %.0fs: %s", where, RETRY_PAUSE_S, exc)
                await asyncio.sleep(RETRY_PAUSE_S)


def _source(item: Item) -> Source:
    return Source(topic=item.tp.topic, partition=item.tp.partition, offset=item.offset)
