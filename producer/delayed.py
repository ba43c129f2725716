"""The API side of delayed jobs (`delay_ms`, `run_at`): store them, cancel them.

A delayed submit, like an immediate one, puts its status event on the status topic
first (`scheduled`, with `due_at` and `run_at`), so a job's `scheduled` always precedes
the `queued` the scheduler publishes when it fires it, however short the delay. Then one
MULTI round trip stores the whole request's jobs in Redis (`DelayStore.add`); only then
is the job answered `scheduled`. Redis down: 503 naming redis, and the `scheduled`
events already published are followed by `dead` (reason `rejected`), so no phantom job
stays scheduled. Kafka down: 503 naming kafka, as for any submit.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiokafka.errors import KafkaError
from redis.exceptions import RedisError

from jobstream.futures import describe
from jobstream.http_errors import Unavailable
from jobstream.status_publisher import StatusPublisher
from producer.groupcommit import GroupCommit
from producer.health import HealthMonitor
from producer.metrics import Metrics
from producer.results import Submitted
from scheduler import CANCELLED, DelayStore
from schemas import JobEnvelope, events, now_ms

log = logging.getLogger("jobstream.producer.delayed")


class DelayedJobs:
    """Stores delayed jobs and cancels them before they fire."""

    def __init__(
        self,
        store: DelayStore,
        publisher: StatusPublisher,
        writer: GroupCommit[dict[str, Any]],
        health: HealthMonitor,
        metrics: Metrics,
        timeout_s: float,
    ) -> None:
        self.store = store
        self._publisher = publisher
        self._writer = writer
        self._health = health
        self._metrics = metrics
        self._timeout_s = timeout_s

    async def submit(self, later: list[JobEnvelope], now: int) -> list[Submitted]:
        """Store the jobs; their results, in order. Raises `Unavailable` if none is stored."""
        for service in ("redis", "kafka"):
            if not self._health.is_up(service):
                self._metrics.count_rejected(f"{service}_down", len(later))
                raise self._unavailable(service, f"{service.capitalize()} is unreachable")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._timeout_s
        said = [events.scheduled(env, now) for env in later]
        try:
            async with asyncio.timeout_at(deadline):
                await (await self._publisher.send_now(said))
        except (TimeoutError, KafkaError) as exc:
            self._metrics.count_rejected("kafka_failed", len(later))
            raise self._unavailable("kafka", f"Kafka did not take the jobs: {exc!r}") from exc
        try:
            async with asyncio.timeout_at(deadline):
                await self.store.add(later)
        except (TimeoutError, RedisError, OSError) as exc:
            self._metrics.count_rejected("redis_failed", len(later))
            if not isinstance(exc, TimeoutError):
                self._health.mark_down("redis", repr(exc))
            log.warning("redis did not take delayed jobs jobs=%d error=%r", len(later), exc)
            for event in said:
                self._publisher.publish(_rejected(event, exc))
            raise self._unavailable("redis", f"Redis did not take the jobs: {exc!r}") from exc
        self._health.note_ok("redis")
        stored = []
        for env, event in zip(later, said, strict=True):
            stored.append(Submitted(env.id, "scheduled", event["run_at"]))
            self._metrics.count_submitted(env.priority)
        await self._project(said, deadline)
        return stored

    async def cancel(self, job_id: str, job_type: str) -> int:
        """Remove a delayed job from Redis for good, wherever it is: `CANCELLED` (it was
        waiting: it will never fire), `CANCELLED_WHILE_CLAIMED` (a scheduler holds it: it is
        never claimed again, but it may be on its way to Kafka right now, so cancel it
        through the control topic too) or 0 (not in Redis). Publishes `cancelled` when it
        removed the job: a claimed job that never fires would otherwise never end."""
        try:
            async with asyncio.timeout(self._timeout_s):
                outcome = await self.store.cancel(job_id)
        except (TimeoutError, RedisError, OSError) as exc:
            raise self._unavailable("redis", f"Redis did not answer the cancel: {exc!r}") from exc
        if not outcome:
            return 0
        why = "cancelled before due" if outcome == CANCELLED else "cancelled while being fired"
        event = events.cancelled(job_id, job_type, now_ms(), why)
        try:
            async with asyncio.timeout(self._timeout_s):
                await (await self._publisher.send_now([event]))
        except (TimeoutError, KafkaError) as exc:  # removed either way; the projection says so
            log.warning("cancelled event not published job=%s error=%r", job_id, exc)
        loop = asyncio.get_running_loop()
        await self._project([event], loop.time() + self._timeout_s)
        return outcome

    async def _project(self, said: list[dict[str, Any]], deadline: float) -> None:
        """Write the projection, bounded; never raises (the projector writes it anyway)."""
        if (err := await self._writer.write_within(said, deadline)) is not None:
            self._metrics.projection_errors.inc(len(said))
            log.warning("projection write failed jobs=%d error=%s", len(said), describe(err))

    def _unavailable(self, service: str, why: str) -> Unavailable:
        return Unavailable(
            service, f"{why}; the job was not accepted, retry later", retry_after=self._health.retry_after_s
        )


def _rejected(event: dict[str, Any], err: BaseException) -> dict[str, Any]:
    return events.rejected(event, f"the job was not accepted: Redis did not store it ({err!r})", now_ms())
