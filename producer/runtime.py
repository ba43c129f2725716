"""What the app holds while it runs, opened and closed by its lifespan.

`open_runtime()` opens, in order, the Kafka producer, Redis, the status publisher, the
projection's group-commit writer, the health monitor, the dead letters (their indexer and
replayer: `deadletters.open_dead_letters`) and the delay scheduler (`scheduler.Scheduler`,
with `settings.scheduler`), and closes them in reverse: the scheduler stops claiming and
settles its batches, running replays are cancelled (and record so), the indexer leaves its
group, the monitor stops, pending projection writes and status events are flushed, then
Redis and the producer close. Routes reach the parts through the `Annotated` aliases at the
bottom of this module (the dead-letter routes through the lifespan state's `dead_letters`);
nothing here lives at module level.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated, Any, cast

from fastapi import Depends, Request
from redis.asyncio import BlockingConnectionPool, Redis

from deadletters import DeadLetters, open_dead_letters
from jobstream.kafka import Partitioner, make_producer
from jobstream.projection import Projection
from jobstream.settings import ApiSettings
from jobstream.status_publisher import StatusPublisher
from producer.delayed import DelayedJobs
from producer.groupcommit import GroupCommit
from producer.health import HealthMonitor, kafka_check, redis_check
from producer.idempotency import Deduplicator
from producer.job_checks import Limits
from producer.metrics import Metrics
from producer.queues import QueueStats
from producer.records import JobRecords
from producer.submit import Submitter
from scheduler import DelayStore, Scheduler
from scheduler.fire import BatchFirer
from scheduler.recurring import ScheduleStore, schedule_loop

log = logging.getLogger("jobstream.producer")

HEALTH_INTERVAL_S = 1.0
HEALTH_TIMEOUT_S = 1.0
REDIS_TIMEOUT_S = 2.0
REDIS_MAX_CONNECTIONS = 64


@dataclass(frozen=True, slots=True)
class Runtime:
    """The app's long-lived parts. Built only by `open_runtime()`."""

    settings: ApiSettings
    metrics: Metrics
    producer: Any
    redis: Redis
    projection: Projection
    health: HealthMonitor
    submitter: Submitter
    deduplicator: Deduplicator  # the submitter behind idempotency keys (`producer.idempotency`)
    dead_letters: DeadLetters  # index, indexer, replayer (`deadletters.service`)
    delayed: DelayedJobs
    queues: QueueStats
    records: JobRecords  # `GET /jobs/{id}/record`
    schedules: ScheduleStore  # recurring schedules (`producer.schedules`)
    firer: BatchFirer  # what `POST /schedules/{name}/run` fires through
    limits: Limits  # what every submitted job is checked against (`producer.job_checks`)
    scheduler: Scheduler | None = None  # with `settings.scheduler`: fires delayed jobs
    recurring: Scheduler | None = None  # with `settings.scheduler`: fires schedules' occurrences


@contextlib.asynccontextmanager
async def open_runtime(settings: ApiSettings, metrics: Metrics) -> AsyncIterator[Runtime]:
    """Open every client; fails (and closes what it opened) if Kafka cannot be bootstrapped."""
    async with contextlib.AsyncExitStack() as stack:
        # One producer for job records and status events: a submit waits for its `queued`
        # event's ack before producing the job, and sharing lets that job ride in the same
        # request as later submits' events (two producers doubled the requests and Kafka's
        # CPU at the same rate: docs/BENCHMARKS.md)
        producer = make_producer(
            settings,
            linger_ms=settings.linger_ms,
            request_timeout_ms=int(settings.submit_timeout_s * 1000),
        )
        await producer.start()
        stack.push_async_callback(producer.close)
        # A blocking pool: a burst of lookups waits for a connection instead of failing
        # with "Too many connections" (the default pool's answer).
        pool = BlockingConnectionPool.from_url(
            settings.redis_url,
            max_connections=REDIS_MAX_CONNECTIONS,
            timeout=REDIS_TIMEOUT_S,
            socket_timeout=REDIS_TIMEOUT_S,
            socket_connect_timeout=REDIS_TIMEOUT_S,
        )
        redis = Redis.from_pool(pool)
        stack.push_async_callback(redis.aclose)
        publisher = await stack.enter_async_context(
            StatusPublisher(producer, settings.topics.status, settings.status_partitions)
        )
        projection = Projection(redis, settings.redis_prefix, settings.state_ttl_s)
        writer: GroupCommit[dict[str, Any]] = await stack.enter_async_context(
            GroupCommit(projection.apply, name="projection-writer")
        )
        partitioner = Partitioner(producer)
        check_kafka = kafka_check(producer)

        async def kafka_and_partitions() -> None:
            await check_kafka()
            partitioner.refresh()

        health = HealthMonitor(
            {"kafka": kafka_and_partitions, "redis": redis_check(redis)},
            interval_s=HEALTH_INTERVAL_S,
            timeout_s=HEALTH_TIMEOUT_S,
        )
        delay_store = DelayStore(redis, settings.redis_prefix)
        delayed = DelayedJobs(delay_store, publisher, writer, health, metrics, settings.submit_timeout_s)
        submitter = Submitter(settings, producer, partitioner, publisher, writer, health, metrics, delayed)
        deduplicator = Deduplicator(submitter, redis, health, settings)
        await stack.enter_async_context(health)
        for topic in settings.topics.job_topics:  # warm the partition cache; misses retry lazily
            try:
                await partitioner.count(topic)
            except Exception as exc:
                log.warning("no partitions yet topic=%s error=%r", topic, exc)
        dead_letters = await stack.enter_async_context(
            open_dead_letters(settings, redis, producer, publisher, partitioner, health)
        )
        queues = await stack.enter_async_context(
            QueueStats(settings, partitioner, delay_store, dead_letters.store)
        )
        records = await stack.enter_async_context(JobRecords(settings, partitioner, delay_store))
        schedules = ScheduleStore(redis, settings.redis_prefix)
        firer = BatchFirer(producer, partitioner, publisher, settings.topics, settings.submit_timeout_s)
        scheduler = recurring = None
        if settings.scheduler:  # closed before the publisher and the producer they use
            scheduler = await stack.enter_async_context(
                Scheduler.from_settings(settings, delay_store, producer, partitioner, publisher)
            )
            recurring = await stack.enter_async_context(
                schedule_loop(settings, schedules, producer, partitioner, publisher)
            )
            metrics.watch_scheduler(scheduler, recurring)
        log.info("producer api ready prefix=%s health=%s", settings.topic_prefix, health.report())
        yield Runtime(
            settings, metrics, producer, redis, projection, health, submitter, deduplicator, dead_letters,
            delayed, queues, records, schedules, firer,
            Limits(settings.max_payload_bytes, settings.max_record_bytes), scheduler, recurring,
        )  # fmt: skip


async def _runtime(request: Request) -> Runtime:
    return cast(Runtime, request.state.runtime)


RuntimeDep = Annotated[Runtime, Depends(_runtime)]


async def _projection(runtime: RuntimeDep) -> Projection:
    return runtime.projection


async def _health(runtime: RuntimeDep) -> HealthMonitor:
    return runtime.health


async def _metrics(runtime: RuntimeDep) -> Metrics:
    return runtime.metrics


ProjectionDep = Annotated[Projection, Depends(_projection)]
HealthDep = Annotated[HealthMonitor, Depends(_health)]
MetricsDep = Annotated[Metrics, Depends(_metrics)]
