"""Kafka clients as every jobstream process configures them, and topic creation."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from jobstream.producer_guard import GuardedProducer
from jobstream.settings import Settings
from schemas import partition_for

log = logging.getLogger("jobstream.kafka")

DLQ_RETENTION_MS = 14 * 86_400_000
CONTROL_RETENTION_MS = 86_400_000  # cancel requests: workers read the whole topic at start


def make_producer(
    settings: Settings, *, linger_ms: int = 2, request_timeout_ms: int = 30_000, name: str = "producer"
) -> GuardedProducer:
    """An idempotent producer (acks=all) that replaces itself when it breaks
    (`jobstream.producer_guard`). `request_timeout_ms` also bounds how long a record may wait
    in the buffer while the broker is unreachable before its send fails."""

    def build() -> Any:
        return AIOKafkaProducer(
            bootstrap_servers=settings.kafka_bootstrap_servers,
            enable_idempotence=True,
            acks="all",
            linger_ms=linger_ms,
            max_batch_size=512 * 1024,
            max_request_size=8 * 1024 * 1024,
            request_timeout_ms=request_timeout_ms,
            client_id=f"jobstream-{settings.topic_prefix}",
        )

    return GuardedProducer(build, name=name)


class Partitioner:
    """Partition numbers for job-topic records: `partition_for(key, count)`, with each
    topic's partition count cached (see `schemas.partition_for` for why not aiokafka's)."""

    def __init__(self, producer: Any) -> None:
        self._producer = producer
        self._counts: dict[str, int] = {}

    async def count(self, topic: str) -> int:
        n = self._counts.get(topic)
        if n is None:
            n = self._counts[topic] = len(await self._producer.partitions_for(topic))
        return n

    async def partition(self, topic: str, key: str) -> int:
        return partition_for(key, await self.count(topic))

    def refresh(self) -> None:
        """Re-read the cached counts from the producer's metadata (topics can grow)."""
        cluster = self._producer.client.cluster
        for topic in list(self._counts):
            parts = cluster.partitions_for_topic(topic)
            if parts:
                self._counts[topic] = len(parts)


async def start_consumer(
    make: Callable[[], Any],
    stop: asyncio.Event,
    what: str,
    *,
    ready: Callable[[], Awaitable[Any]] | None = None,
) -> Any | None:
    """Start the consumer `make()` builds, retrying with capped backoff while Kafka (or, by
    `ready()`, its topic) is missing; None once `stop` is set. Asking to stop never cancels
    a start half-way: a client cancelled inside `start()` leaks its sockets."""
    delay = 0.1
    while not stop.is_set():
        consumer = None
        try:
            if ready is not None:
                await ready()
            consumer = make()
            await consumer.start()
            return consumer
        except BaseException as exc:
            if consumer is not None:
                await consumer.stop()
            if not isinstance(exc, Exception):
                raise
            log.warning("%s cannot start, retry in %.1fs: %s", what, delay, exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)
            delay = min(delay * 2, 5.0)
    return None


async def stop_task(task: asyncio.Task[Any] | None, stop: asyncio.Event, timeout_s: float = 10.0) -> None:
    """Ask a consumer loop to end at its next safe point (`stop`), wait for it, and cancel
    it only if it has not ended within `timeout_s`."""
    stop.set()
    if task is None:
        return
    try:
        await asyncio.wait_for(asyncio.shield(task), timeout_s)
    except TimeoutError:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def topic_specs(settings: Settings) -> list[NewTopic]:
    t = settings.topics
    specs = [NewTopic(name, settings.partitions, 1) for name in t.job_topics]
    specs.extend(NewTopic(t.retry(tier), settings.partitions, 1) for tier in settings.retry_tier_names)
    specs.append(NewTopic(t.status, settings.status_partitions, 1))
    specs.append(
        NewTopic(t.dlq, settings.partitions, 1, topic_configs={"retention.ms": str(DLQ_RETENTION_MS)})
    )
    specs.append(NewTopic(t.control, 1, 1, topic_configs={"retention.ms": str(CONTROL_RETENTION_MS)}))
    return specs


async def _wait_for_leaders(settings: Settings, names: list[str], timeout_s: float = 60.0) -> None:
    """New partitions answer NotLeaderForPartition until the broker has taken leadership,
    which comes after the metadata already names a leader; a ListOffsets request is served
    only by a ready leader, so wait for one to succeed on every new partition."""
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap_servers, group_id=None)
    await consumer.start()
    try:
        async with asyncio.timeout(timeout_s):
            tps: list[TopicPartition] = []
            for name in names:
                while not (parts := consumer.partitions_for_topic(name)):
                    await consumer._client.force_metadata_update()  # the topic is new to this client
                tps.extend(TopicPartition(name, p) for p in parts)
            await consumer.end_offsets(tps)
    finally:
        await consumer.stop()


async def ensure_topics(settings: Settings) -> list[str]:
    """Create every topic the deployment needs; existing ones are left as they are.
    Returns the names created."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [s for s in topic_specs(settings) if s.name not in existing]
        if missing:
            with contextlib.suppress(TopicAlreadyExistsError):  # another process raced us
                await admin.create_topics(missing)
            await _wait_for_leaders(settings, [s.name for s in missing])
        return [s.name for s in missing]
    finally:
        await admin.close()


async def open_producers(
    stack: contextlib.AsyncExitStack, settings: Settings, *, linger_ms: int, request_timeout_ms: int
) -> tuple[Any, Any]:
    """Two started producers, stopped when `stack` closes: one for job records, one for status
    events; for `jobstream scheduler`, which publishes a batch's `queued` events while the
    records of the batch before are still going out: aiokafka keeps one produce request in
    flight per producer and broker, so on a shared producer the events would wait behind a
    burst of records. The API makes the other choice (one producer, `producer.runtime`): its
    submits are many and small, and there one producer lets a job ride in the same request
    as later submits' events, where two doubled the requests (docs/BENCHMARKS.md)."""
    out = []
    for name in ("jobs-producer", "status-producer"):
        producer = make_producer(
            settings, linger_ms=linger_ms, request_timeout_ms=request_timeout_ms, name=name
        )
        await producer.start()
        stack.push_async_callback(producer.close)
        out.append(producer)
    return out[0], out[1]
