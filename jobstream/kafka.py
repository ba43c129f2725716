"""Kafka clients as every jobstream process configures them, and topic creation."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewPartitions, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import TopicAlreadyExistsError

from jobstream.kafka_security import kafka_options
from jobstream.producer_guard import GuardedProducer
from jobstream.settings import Settings, min_insync_for
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
            **kafka_options(settings),
            enable_idempotence=True,
            acks="all",
            linger_ms=linger_ms,
            max_batch_size=512 * 1024,
            max_request_size=8 * 1024 * 1024,
            request_timeout_ms=request_timeout_ms,
            metadata_max_age_ms=settings.metadata_max_age_ms,  # partitions added: keys hash over all
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

    def known(self, topic: str) -> int | None:
        """The cached count, without waiting (None before the first `count`)."""
        return self._counts.get(topic)

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


@contextlib.asynccontextmanager
async def admin_client(settings: Settings, **extra: Any) -> AsyncIterator[AIOKafkaAdminClient]:
    """A started admin client (`extra`: more aiokafka options), closed on exit (also when its
    start fails or is cancelled: a half-started client leaks its sockets)."""
    admin = AIOKafkaAdminClient(**kafka_options(settings), **extra)
    try:
        await admin.start()
        yield admin
    finally:
        await admin.close()


def topic_specs(settings: Settings, replication: int, min_insync: int) -> list[NewTopic]:
    t, n = settings.topics, replication

    def configs(**extra: str) -> dict[str, str]:
        return {"min.insync.replicas": str(min_insync), **extra}

    specs = [NewTopic(name, settings.partitions, n, topic_configs=configs()) for name in t.job_topics]
    specs.extend(
        NewTopic(t.retry(tier), settings.partitions, n, topic_configs=configs())
        for tier in settings.retry_tier_names
    )
    specs.append(NewTopic(t.status, settings.status_partitions, n, topic_configs=configs()))
    dlq_configs = configs(**{"retention.ms": str(DLQ_RETENTION_MS)})
    specs.append(NewTopic(t.dlq, settings.partitions, n, topic_configs=dlq_configs))
    control_configs = configs(**{"retention.ms": str(CONTROL_RETENTION_MS)})
    specs.append(NewTopic(t.control, 1, n, topic_configs=control_configs))
    return specs


class TopicsError(RuntimeError):
    """The topics cannot be what the settings ask for; the message says what to change."""


def replication_for(settings: Settings, brokers: int) -> tuple[int, int]:
    """The replication factor and `min.insync.replicas` the topics get on a cluster of
    `brokers`: the settings', else min(3, brokers) and `min_insync_for` it."""
    replication = settings.replication_factor or min(3, brokers)
    if replication > brokers:
        raise TopicsError(
            f"JOBSTREAM_REPLICATION_FACTOR={replication} but the cluster at "
            f"{settings.kafka_bootstrap_servers} has {brokers} broker(s): lower it, or add brokers"
        )
    min_insync = settings.min_insync_replicas or min_insync_for(replication)
    if min_insync > replication:
        raise TopicsError(
            f"JOBSTREAM_MIN_INSYNC_REPLICAS={min_insync} is more than the replication factor "
            f"({replication}): no write could ever succeed; lower it"
        )
    return replication, min_insync


async def _wait_for_leaders(settings: Settings, names: list[str], timeout_s: float = 60.0) -> None:
    """New partitions answer NotLeaderForPartition until the broker has taken leadership,
    which comes after the metadata already names a leader; a ListOffsets request is served
    only by a ready leader, so wait for one to succeed on every new partition."""
    consumer = AIOKafkaConsumer(**kafka_options(settings), group_id=None)
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
    """Create every topic the deployment needs, replicated as `replication_for` says, and
    return the names created. An existing topic whose replication or `min.insync.replicas`
    differs from that is not silently kept: `TopicsError` names each, with the command that
    fixes it (after the missing topics were created)."""
    async with admin_client(settings) as admin:
        brokers = len((await admin.describe_cluster())["brokers"])
        replication, min_insync = replication_for(settings, brokers)
        log.info(
            "topics: replication %d, min.insync.replicas %d, %d broker(s)", replication, min_insync, brokers
        )
        specs = topic_specs(settings, replication, min_insync)
        existing = set(await admin.list_topics())
        missing = [s for s in specs if s.name not in existing]
        if missing:
            with contextlib.suppress(TopicAlreadyExistsError):  # another process raced us
                await admin.create_topics(missing)
            await _wait_for_leaders(settings, [s.name for s in missing])
        kept = [s.name for s in specs if s.name in existing]
        if kept and (problems := await _differences(admin, settings, kept, replication, min_insync)):
            raise TopicsError("\n".join(problems))
        return [s.name for s in missing]


async def grow_partitions(settings: Settings, count: int) -> list[str]:
    """Give the job topics, the retry tiers and the dead-letter topic `count` partitions;
    returns the names grown. Running workers take the new partitions at their next metadata
    refresh (`metadata_max_age_ms`), and the API's keys then hash over all of them: a key's
    jobs before and after the change may be on different partitions, so in-order runs per
    key hold only from then on. Kafka cannot take partitions away: fewer is a `TopicsError`."""
    t = settings.topics
    names = [*t.job_topics, *(t.retry(tier) for tier in settings.retry_tier_names), t.dlq]
    async with admin_client(settings) as admin:
        have = {topic["topic"]: len(topic["partitions"]) for topic in await admin.describe_topics(names)}
        if fewer := [f"{name} has {n}" for name, n in have.items() if n > count]:
            raise TopicsError(f"Kafka cannot take partitions away, asked {count}: {', '.join(fewer)}")
        grow = {name: NewPartitions(count) for name, n in have.items() if n < count}
        if grow:
            await admin.create_partitions(grow)
            await _wait_for_leaders(settings, list(grow))
        return list(grow)


async def _differences(
    admin: AIOKafkaAdminClient, settings: Settings, names: list[str], replication: int, min_insync: int
) -> list[str]:
    """What differs between the existing topics `names` and the replication asked for, each
    with the command (Kafka's own tools) that changes it."""
    out = []
    bootstrap = settings.kafka_bootstrap_servers
    for topic in await admin.describe_topics(names):
        have = {len(p["replicas"]) for p in topic["partitions"]}
        if have != {replication}:
            shown = "/".join(str(n) for n in sorted(have))
            out.append(
                f"topic {topic['topic']} has replication {shown}, asked {replication}: Kafka keeps "
                f"a topic's replication as created; raise it with `kafka-reassign-partitions.sh "
                f"--bootstrap-server {bootstrap} --generate` then `--execute` (a plan naming "
                f"{replication} brokers per partition), or set JOBSTREAM_REPLICATION_FACTOR="
                f"{min(have)} to keep it"
            )
    resources = [ConfigResource(ConfigResourceType.TOPIC, name) for name in names]
    for response in await admin.describe_configs(resources):
        for result in response.resources:
            _code, _message, _type, name, entries = result[:5]
            value = next((e[1] for e in entries if e[0] == "min.insync.replicas"), None)
            if value is not None and int(value) != min_insync:
                out.append(
                    f"topic {name} has min.insync.replicas={value}, asked {min_insync}: "
                    f"`kafka-configs.sh --bootstrap-server {bootstrap} --alter --entity-type topics "
                    f"--entity-name {name} --add-config min.insync.replicas={min_insync}`, or set "
                    f"JOBSTREAM_MIN_INSYNC_REPLICAS={value} to keep it"
                )
    return out


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
