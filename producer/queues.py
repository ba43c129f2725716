"""`GET /queues`: how much work waits where.

- each priority topic and retry tier: the workers' group lag (`depth`: records on the topic
  that the group has not committed past, which includes retries still waiting to fall
  due), summed over partitions, with the end offset beside it;
- delayed jobs in Redis: waiting, and claimed by a scheduler right now;
- dead letters: the ones indexed for browsing (`GET /dlq`), and the records on the topic.

One answer costs a few Kafka requests (end and start offsets in one consumer call each,
the group's committed offsets in one admin call) and one Redis pipeline. Answers are
cached for `CACHE_S` and concurrent requests share one refresh, so a dashboard polling
every second from many browsers costs Kafka nothing more.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError
from redis.exceptions import RedisError

from deadletters import DlqStore
from jobstream.http_errors import Unavailable
from jobstream.kafka import Partitioner
from jobstream.kafka_security import kafka_options
from jobstream.lifecycle import Lifecycle
from jobstream.settings import Settings
from scheduler import DelayStore
from schemas import Priority, now_ms

CACHE_S = 1.0
TIMEOUT_S = 5.0


class QueueStats(Lifecycle):
    """A `jobstream.lifecycle.Service`: its Kafka clients start with it, and stop with it."""

    def __init__(
        self, settings: Settings, partitioner: Partitioner, delays: DelayStore, dlq: DlqStore
    ) -> None:
        super().__init__()
        self._settings = settings
        self._partitioner = partitioner
        self._delays = delays
        self._dlq = dlq
        self._group = settings.topics.workers_group
        self._consumer = AIOKafkaConsumer(**kafka_options(settings), group_id=None, enable_auto_commit=False)
        self._admin = AIOKafkaAdminClient(**kafka_options(settings), request_timeout_ms=int(TIMEOUT_S * 1000))
        self._cached: tuple[float, dict[str, Any]] | None = None
        self._lock = asyncio.Lock()

    async def _startup(self) -> None:
        await self._consumer.start()
        await self._admin.start()  # if this raises, `async with` closes both

    async def _shutdown(self) -> None:
        try:
            await self._admin.close()
        finally:
            await self._consumer.stop()

    def _queues(self) -> list[tuple[str, str, str]]:
        """(kind, name, topic) of every queue, priority topics first (highest first)."""
        t = self._settings.topics
        out = [("priority", p.value, t.jobs(p)) for p in Priority.ordered()]
        out += [("retry", tier, t.retry(tier)) for tier in self._settings.retry_tier_names]
        return out

    async def snapshot(self) -> dict[str, Any]:
        """The answer of `GET /queues`; raises `Unavailable` naming Kafka or Redis."""
        async with self._lock:  # one refresh at a time; the others then find it cached
            cached = self._cached
            if cached is not None and time.monotonic() - cached[0] < CACHE_S:
                return cached[1]
            try:
                async with asyncio.timeout(TIMEOUT_S):
                    answer = await self._refresh()
            except RedisError as exc:
                raise Unavailable("redis", f"Redis did not answer: {exc}") from exc
            except (KafkaError, TimeoutError) as exc:
                raise Unavailable("kafka", f"Kafka did not report the queue depths: {exc!r}") from exc
            self._cached = (time.monotonic(), answer)
            return answer

    async def _refresh(self) -> dict[str, Any]:
        queues = self._queues()
        dlq_topic = self._settings.topics.dlq
        parts = {topic: await self._partitioner.count(topic) for _, _, topic in queues}
        parts[dlq_topic] = await self._partitioner.count(dlq_topic)
        tps = [TopicPartition(topic, p) for topic, n in parts.items() for p in range(n)]
        ends: dict[TopicPartition, int] = await self._consumer.end_offsets(tps)
        starts: dict[TopicPartition, int] = await self._consumer.beginning_offsets(tps)
        group_tps = [tp for tp in tps if tp.topic != dlq_topic]
        committed = await self._admin.list_consumer_group_offsets(self._group, partitions=group_tps)
        waiting, claimed = await self._delays.counts()
        indexed = await self._dlq.count()
        rows = []
        for kind, name, topic in queues:
            depth = end_total = 0
            for p in range(parts[topic]):
                tp = TopicPartition(topic, p)
                meta = committed.get(tp)
                done = meta.offset if meta is not None and meta.offset >= 0 else starts[tp]
                depth += max(0, ends[tp] - max(done, starts[tp]))
                end_total += ends[tp]
            rows.append({"kind": kind, "name": name, "topic": topic, "partitions": parts[topic],
                         "depth": depth, "end_offset": end_total})  # fmt: skip
        on_topic = sum(ends[tp] - starts[tp] for tp in tps if tp.topic == dlq_topic)
        return {
            "at": now_ms(),
            "group": self._group,
            "queues": rows,
            "delayed": {"waiting": waiting, "claimed": claimed},
            "dead_letters": {"indexed": indexed, "on_topic": on_topic},
        }
