"""Where a failed attempt goes: a retry tier topic, or the dead-letter topic.

Every route publishes the job's status events first and waits for Kafka to have them,
then produces the record (retry or dead letter) and waits for that too; only then is the
source record's offset released for commit. So the status stream shows `failed` and
`retrying` before the next attempt's `active`, and a crash between the two steps
redelivers the attempt instead of losing it. A route that Kafka refuses is retried until
it succeeds or the worker stops (then the record stays uncommitted and runs elsewhere).
"""

from __future__ import annotations

import asyncio
import base64
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiokafka.errors import KafkaError

from consumer.app import HandlerSpec
from consumer.errors import NonRetryable
from consumer.retry import Tier, backoff_delay_ms, choose_tier, parse_tiers
from jobstream.kafka import Partitioner
from jobstream.settings import WorkerSettings
from jobstream.status import StatusPublisher
from schemas import (
    HEADER_DUE,
    Backoff,
    DeadLetter,
    DeadReason,
    JobEnvelope,
    JobSpec,
    Source,
    child_job_id,
    encode_dead_letter,
    encode_job,
    job_headers,
)

log = logging.getLogger("jobstream.worker")

Headers = list[tuple[str, bytes]]
Record = tuple[str, str, bytes, Headers]  # topic, key, value, headers
RETRY_PAUSE_S = 1.0
_DEFAULT_BACKOFF = Backoff()


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def child_envelope(parent: JobEnvelope, spec: JobSpec, index: int, result: Any, now: int) -> JobEnvelope:
    """The `index`-th follow-up of `parent`: the spec, given the parent's result as
    `payload.parent_result`, with a deterministic id, in the parent's trace."""
    return JobEnvelope.model_construct(
        id=child_job_id(parent.id, index), type=spec.type, payload={**spec.payload, "parent_result": result},
        priority=spec.priority, attempt=1, max_attempts=spec.max_attempts, backoff=spec.backoff,
        timeout_s=spec.timeout_s, key=spec.key, idempotency_key=None, created_at=now, not_before=None,
        parent_id=parent.id, then=spec.then or [], replay_of=None, expires_at=spec.expiry_ms(now), errors=[],
        traceparent=parent.traceparent,
    )  # fmt: skip


@dataclass(frozen=True, slots=True)
class Failure:
    """One failed attempt, as the runner saw it."""

    error: dict[str, Any]  # type, message, traceback
    exc: BaseException | None = None
    timed_out: bool = False


class Router:
    def __init__(
        self,
        settings: WorkerSettings,
        producer: Any,
        status: StatusPublisher,
        worker_id: str,
        stopping: Callable[[], bool],
        rng: random.Random | None = None,
    ) -> None:
        self._settings = settings
        self._topics = settings.topics
        self._producer = producer
        self._partitioner = Partitioner(producer)
        self._status = status
        self._worker = worker_id
        self._stopping = stopping
        self._rng = rng or random.Random()
        self.tiers: tuple[Tier, ...] = parse_tiers(settings.retry_tiers)

    def decide(self, job: JobEnvelope, spec: HandlerSpec | None, failure: Failure) -> DeadReason | None:
        """None to retry; else why the job is dead."""
        if spec is None:
            return DeadReason.unknown_type
        exc = failure.exc
        if isinstance(exc, NonRetryable) or (exc is not None and isinstance(exc, spec.non_retryable)):
            return DeadReason.non_retryable
        if job.attempt >= self.max_attempts(job, spec):
            return DeadReason.timeout if failure.timed_out else DeadReason.exhausted
        return None

    def max_attempts(self, job: JobEnvelope, spec: HandlerSpec | None) -> int:
        if job.max_attempts is not None:
            return job.max_attempts
        if spec is not None and spec.max_attempts is not None:
            return spec.max_attempts
        return self._settings.default_max_attempts

    async def failed(
        self, job: JobEnvelope, spec: HandlerSpec | None, failure: Failure, source: Source
    ) -> bool:
        """Route a failed attempt. True once it is in Kafka (the offset may be committed)."""
        now = _now_ms()
        attempt_error = {**failure.error, "attempt": job.attempt, "worker": self._worker, "at": now}
        errors = [*job.errors, attempt_error]
        failed = self._event(job, "failed", now, error=failure.error)
        reason = self.decide(job, spec, failure)
        if reason is not None:
            dead = DeadLetter(
                id=job.id, type=job.type, reason=reason, job=job.model_copy(update={"errors": errors}),
                errors=errors, source=source, dead_at=now,
            )  # fmt: skip
            log.info("job %s %s dead after attempt %d: %s", job.id, job.type, job.attempt, reason.value)
            return await self._route(
                [failed, self._event(job, "dead", now, reason=reason.value, error=failure.error)],
                self._topics.dlq, job.partition_key, encode_dead_letter(dead), job_headers(job),
            )  # fmt: skip
        backoff = job.backoff or (spec.backoff if spec is not None else None) or _DEFAULT_BACKOFF
        tier = choose_tier(backoff_delay_ms(backoff, job.attempt, self._rng), self.tiers)
        due = now + tier.delay_ms
        retry = job.model_copy(update={"attempt": job.attempt + 1, "errors": errors})
        retrying = self._event(
            job,
            "retrying",
            now,
            error=failure.error,
            due_at=due,
            tier=tier.name,
            next_attempt=job.attempt + 1,
        )
        log.info("job %s %s retrying attempt %d in %s", job.id, job.type, job.attempt + 1, tier.name)
        headers = [*job_headers(retry), (HEADER_DUE, str(due).encode())]
        return await self._route(
            [failed, retrying], self._topics.retry(tier.name), job.partition_key, encode_job(retry), headers
        )

    async def expired(self, job: JobEnvelope, source: Source) -> bool:
        """A job not started before its `expires_at`: dead, without running it."""
        now = _now_ms()
        message = f"the job expired at {job.expires_at} before it started"
        dead = DeadLetter(
            id=job.id, type=job.type, reason=DeadReason.expired, job=job, errors=job.errors, source=source,
            dead_at=now,
        )  # fmt: skip
        error = {"type": "Expired", "message": message}
        event = self._event(job, "dead", now, reason=DeadReason.expired.value, error=error)
        value = encode_dead_letter(dead)
        return await self._route([event], self._topics.dlq, job.partition_key, value, job_headers(job))

    async def follow_ups(self, parent: JobEnvelope, specs: list[JobSpec], result: Any) -> list[str] | None:
        """Enqueue a completed job's follow-ups (their `queued` events first); their ids, once
        Kafka has them all, or None if the worker stopped first (the parent then runs again,
        and enqueues the same ids)."""
        now = _now_ms()
        children = [child_envelope(parent, spec, i, result, now) for i, spec in enumerate(specs)]
        events = [{"job_id": c.id, "type": c.type, "state": "queued", "attempt": 1, "at": now,
                   "priority": c.priority.value, "parent_id": parent.id} for c in children]  # fmt: skip
        records = [
            (self._topics.jobs(c.priority), c.partition_key, encode_job(c), job_headers(c)) for c in children
        ]
        if not await self._route_many(events, records):
            return None
        return [c.id for c in children]

    async def poison(self, value: bytes | None, source: Source, why: str) -> bool:
        """Send a record that does not decode to the dead-letter topic, bytes and all."""
        dead = DeadLetter(
            id=f"poison:{source.topic}:{source.partition}:{source.offset}",
            reason=DeadReason.poison,
            raw=base64.b64encode(value or b"").decode(),
            errors=[
                {"attempt": 0, "type": "DecodeError", "message": why, "worker": self._worker, "at": _now_ms()}
            ],
            source=source,
            dead_at=_now_ms(),
        )
        return await self._route([], self._topics.dlq, dead.id, encode_dead_letter(dead), [])

    def _event(self, job: JobEnvelope, state: str, at: int, **fields: Any) -> dict[str, Any]:
        event = {"job_id": job.id, "type": job.type, "state": state, "attempt": job.attempt, "at": at,
                 "worker": self._worker, **fields}  # fmt: skip
        if job.parent_id is not None:
            event["parent_id"] = job.parent_id
        return event

    async def _route(
        self, events: list[dict[str, Any]], topic: str, key: str, value: bytes, headers: Headers
    ) -> bool:
        return await self._route_many(events, [(topic, key, value, headers)])

    async def _route_many(self, events: list[dict[str, Any]], records: list[Record]) -> bool:
        """Status events first (acknowledged), then the records; retried until Kafka takes
        them or the worker stops. True once Kafka has everything."""
        while True:
            try:
                if events:
                    await (await self._status.send_now(events))
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
