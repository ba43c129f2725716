"""Submitting jobs: envelope, partition, produce, `queued` status, projection.

What a client can rely on:

- 202 (or a `queued` batch item) only after Kafka acknowledged the job record
  (`acks=all`, idempotent producer). A job is never acknowledged and then lost.
- Kafka known down (health monitor, or an earlier failed send): 503 with `Retry-After`
  before anything is sent. A send that fails or outlives `submit_timeout_s`: 503, and the
  job's `dead` event (reason `rejected`) follows its `queued` one on the status topic; the
  projection, written while the job was being sent, shows `queued` until the projector
  applies that event. Such a record may still reach Kafka later (aiokafka cannot recall
  it); a client that retries then creates a second job: at least once.
- Redis down: the job is already in Kafka, so the answer is still 202. Its `queued`
  event is on the status topic and the gateway's projector writes the state from there;
  only a lookup in the moment right after the submit may miss it. Refusing would make
  clients resubmit jobs that are in fact queued.

A job due later (`delay_ms`, `run_at`) goes to Redis instead (`producer.delayed`) and is
answered `scheduled`; in a mixed batch the immediate jobs are sent first.

The `queued` events are acknowledged before the jobs are sent, so on the status topic a
job's `queued` always comes before a worker's `active` (sent together, aiokafka may put
the job in an earlier produce request than its event: it drains one batch per partition
at a time). That costs one round trip per submit, not per job. A job whose `queued` event
is on the topic but which Kafka then refuses gets a `dead` event with the reason, so no
phantom job stays `queued`. Partitions are chosen here, `crc32(key) % partitions`,
because aiokafka's pure-Python murmur2 costs more than the rest of a send.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Sequence
from typing import Any, cast

from aiokafka.errors import KafkaError, KafkaTimeoutError

from jobstream.futures import describe
from jobstream.http_errors import ItemError, Unavailable
from jobstream.kafka import Partitioner
from jobstream.producer_guard import GuardedProducer, SendGroup, refused_record
from jobstream.settings import ApiSettings
from jobstream.stalls import Stalls, job_id_avoiding
from jobstream.status_publisher import StatusPublisher
from producer.delayed import DelayedJobs
from producer.groupcommit import GroupCommit
from producer.health import HealthMonitor
from producer.metrics import Metrics
from producer.results import Refused, SubmitResult, Submitted
from producer.trace import REQUEST_TRACEPARENT
from schemas import (
    JobEnvelope,
    JobSpec,
    Priority,
    encode_job,
    events,
    job_headers,
    new_job_id,
    now_ms,
    partition_for,
)

log = logging.getLogger("jobstream.producer.submit")


class Submitter:
    """Turns validated specs into acknowledged jobs; see the module docstring."""

    def __init__(
        self,
        settings: ApiSettings,
        producer: GuardedProducer,
        partitioner: Partitioner,
        publisher: StatusPublisher,
        writer: GroupCommit[dict[str, Any]],
        health: HealthMonitor,
        metrics: Metrics,
        delayed: DelayedJobs,
    ) -> None:
        self._delayed = delayed
        self._producer = producer
        self._publisher = publisher
        self._writer = writer
        self._health = health
        self._metrics = metrics
        self._topics = settings.topics
        self._timeout_s = settings.submit_timeout_s
        self._timeout_default = settings.default_timeout_s
        self._partitioner = partitioner
        self._stalls = Stalls(lambda: producer.current, settings.partition_stall_ms / 1000)
        self._status = (settings.topics.status, settings.status_partitions)
        self._background: set[asyncio.Future[None]] = set()  # projection writes under way

    async def submit_many(
        self, items: Sequence[JobSpec | ItemError], ids: Sequence[str | None] | None = None
    ) -> list[SubmitResult]:
        """Produce the specs among `items`, refuse the rest; one result per item, in order.

        `ids[i]`, when given and not None, is the id of item i's job (chosen up front by
        `producer.idempotency`); otherwise a new one is made.
        Raises `Unavailable` when Kafka is known down or acknowledged none of the jobs.
        """
        results: list[SubmitResult | None] = [None] * len(items)
        pending: list[tuple[int, JobEnvelope]] = []
        later: list[tuple[int, JobEnvelope]] = []  # delayed: stored in Redis (`producer.delayed`)
        now = now_ms()
        stuck = self._stalls.stuck()
        for i, item in enumerate(items):
            if isinstance(item, JobSpec):
                job_id = ids[i] if ids is not None else None
                if stuck and job_id is None and item.key is None:
                    job_id = self._id_avoiding(item, now, stuck)
                    if job_id is not None:
                        self._metrics.steered.inc()
                env = self._envelope(item, now, job_id)
                (pending if env.not_before is None else later).append((i, env))
            else:
                results[i] = Refused(item)
                self._metrics.count_rejected("invalid" if item.status == 422 else "too_large")
        if not pending:
            await self._later(later, results, now)
            return _filled(results)
        if not self._health.is_up("kafka"):
            self._metrics.count_rejected("kafka_down", len(pending))
            raise self._unavailable("Kafka is unreachable")
        deadline = asyncio.get_running_loop().time() + self._timeout_s
        queued = [events.queued(env, now) for _, env in pending]
        await self._queued_first(queued, deadline)
        # The projection is written while the jobs go out, not after: their `queued` events
        # are on the topic already, so this is what the projector would write anyway, and a
        # job Kafka then refuses gets its `dead` event there like any other.
        projected = asyncio.ensure_future(self._project(queued, deadline))
        self._background.add(projected)  # held until written: a refusal raised below leaves it running
        projected.add_done_callback(self._background.discard)
        try:
            group = await self._send_all([env for _, env in pending], deadline)
        except Unavailable as exc:
            for event in queued:
                self._publisher.publish(_refused(event, exc))
            raise
        await asyncio.wait([group.done], timeout=max(0.0, deadline - asyncio.get_running_loop().time()))
        by_priority: Counter[Priority] = Counter()  # the jobs Kafka acknowledged
        failure: BaseException | None = None  # of Kafka, not of a record it refused
        failed = 0
        for n, ((i, env), event) in enumerate(zip(pending, queued, strict=True)):
            err = group.errors[n] if group.settled(n) else TimeoutError("no acknowledgement in time")
            if err is None:
                results[i] = Submitted(env.id, "queued")
                by_priority[env.priority] += 1
                continue
            failed += 1
            if not refused_record(err):
                failure = err
            results[i] = Refused(_send_error(err), env.id)
            self._publisher.publish(_refused(event, err))
        for priority, count in by_priority.items():
            self._metrics.count_submitted(priority, count)
        if by_priority:
            self._health.note_ok("kafka")
        if failure is not None:
            self._note_failure(failure, failed)
            if not by_priority:
                raise self._unavailable(f"Kafka did not acknowledge the jobs: {describe(failure)}")
        await projected
        await self._later(later, results, now, others_accepted=True)
        return _filled(results)

    async def _later(
        self, later: list[tuple[int, JobEnvelope]], results: list[SubmitResult | None], now: int,
        *, others_accepted: bool = False,
    ) -> None:  # fmt: skip
        """Store the delayed jobs; when other jobs of the request were accepted, a failure is
        reported per item rather than raised."""
        if not later:
            return
        try:
            stored = await self._delayed.submit([env for _, env in later], now)
        except Unavailable as exc:
            if not others_accepted:
                raise
            for i, env in later:
                results[i] = Refused(ItemError(503, exc.detail), env.id)
            return
        for (i, _), result in zip(later, stored, strict=True):
            results[i] = result

    async def _queued_first(self, said: list[dict[str, Any]], deadline: float) -> None:
        """Put the `queued` events on the status topic; raise `Unavailable` if Kafka will not."""
        try:
            async with asyncio.timeout_at(deadline):
                await (await self._publisher.send_now(said))
        except (TimeoutError, KafkaError) as exc:
            self._note_failure(exc, len(said))
            raise self._unavailable(f"Kafka did not take the jobs: {describe(exc)}") from exc

    async def _send_all(self, envelopes: list[JobEnvelope], deadline: float) -> SendGroup:
        """Hand every record to the producer; the group settles once Kafka answered for each."""
        counts: dict[str, int] = {}
        records = []
        try:
            async with asyncio.timeout_at(deadline):
                for env in envelopes:
                    topic = self._topics.jobs(env.priority)
                    n = counts.get(topic) or await self._partitioner.count(topic)
                    counts[topic] = n
                    key = env.partition_key
                    records.append(
                        (topic, encode_job(env), key.encode(), partition_for(key, n), job_headers(env))
                    )
                return await self._producer.send_all(records)
        except (TimeoutError, KafkaError) as exc:
            # Nothing is answered as queued; records already handed over may still arrive.
            self._note_failure(exc, len(envelopes))
            raise self._unavailable(f"Kafka did not take the jobs: {describe(exc)}") from exc

    async def _project(self, said: list[dict[str, Any]], deadline: float) -> None:
        """Write the projection, bounded; never raises."""
        if not self._health.is_up("redis"):
            self._metrics.projection_errors.inc(len(said))
            return
        if (err := await self._writer.write_within(said, deadline)) is not None:
            self._metrics.projection_errors.inc(len(said))
            log.warning("projection write failed jobs=%d error=%s", len(said), describe(err))

    def _envelope(self, spec: JobSpec, now: int, job_id: str | None = None) -> JobEnvelope:
        # The spec is validated; constructing the envelope without a second validation
        # is the point (one pydantic pass per job).
        due = spec.due_ms(now)
        return JobEnvelope.trusted(
            id=job_id or new_job_id(now),
            type=spec.type,
            payload=spec.payload,
            priority=spec.priority,
            attempt=1,
            # unset stays unset: the worker applies the handler's setting, then its default
            max_attempts=spec.max_attempts,
            backoff=spec.backoff,
            timeout_s=spec.timeout_s if spec.timeout_s is not None else self._timeout_default,
            key=spec.key,
            idempotency_key=spec.idempotency_key,
            created_at=now,
            then=spec.then or [],
            not_before=due,
            expires_at=spec.expiry_ms(due or now),  # a delayed job's ttl_ms counts from its due time
            traceparent=REQUEST_TRACEPARENT.get(),
        )

    def _id_avoiding(self, spec: JobSpec, now: int, stuck: dict[str, frozenset[int]]) -> str | None:
        """An id for a keyless job that keeps it off the partitions stuck now (`jobstream.stalls`);
        None (any new id) when its topic's partition count is not known yet."""
        topic = self._topics.jobs(spec.priority)
        status, status_n = self._status
        n = self._partitioner.known(topic)
        if n is None:
            return None
        return job_id_avoiding(
            now, n, stuck.get(topic, frozenset()), status_n, stuck.get(status, frozenset())
        )

    def _note_failure(self, exc: BaseException, jobs: int) -> None:
        self._metrics.count_rejected("kafka_failed", jobs)
        # A timeout may only mean this process is saturated: the health monitor decides
        # from its checks; an error from the client itself means Kafka is unreachable.
        if not isinstance(exc, TimeoutError | KafkaTimeoutError) and getattr(exc, "retriable", False):
            self._health.mark_down("kafka", describe(exc))
        elif (problem := self._producer.problem) is not None:  # broke: being replaced
            self._health.mark_down("kafka", problem)
        log.warning("kafka send failed jobs=%d error=%s", jobs, describe(exc))

    def _unavailable(self, why: str) -> Unavailable:
        return Unavailable(
            "kafka",
            f"{why}; the job was not accepted, retry later",
            retry_after=self._health.retry_after_s,
        )


def _send_error(exc: BaseException) -> ItemError:
    if refused_record(exc):  # a client error: sending it again cannot help
        return ItemError(413, f"Kafka refused the job's record ({describe(exc)}): make the job smaller")
    return ItemError(503, f"Kafka did not acknowledge the job: {describe(exc)}")


def _filled(results: list[SubmitResult | None]) -> list[SubmitResult]:
    """`results` once every item has its result (each path above sets one per item)."""
    return cast(list[SubmitResult], results)


def _refused(queued: dict[str, Any], err: BaseException) -> dict[str, Any]:
    """The event that ends a job whose `queued` event Kafka took but whose record it did not."""
    message = f"the job was not accepted: Kafka did not acknowledge it ({describe(err)})"
    return events.rejected(queued, message, now_ms())
