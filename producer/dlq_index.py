"""The dead-letter indexer: keeps `DlqStore` in step with the dead-letter topic.

One consumer group (`<prefix>.dlq-indexer`) across all API replicas, reading from the
earliest retained record, so each record is indexed by one of them. Per fetched batch:
decode every record, write them all with one pipelined `DlqStore.add`, then commit.
Offsets are committed only after Redis has the batch: while Redis is down the same batch
is retried with capped backoff, and the indexer recovers by itself when it is back.
Indexing a record twice is harmless. A record that does not decode is logged with its
topic, partition and offset and skipped: it cannot be replayed, and stopping on it
would hide every record behind it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError
from redis.exceptions import DataError, RedisError

from jobstream.kafka import start_consumer, stop_task
from jobstream.settings import Settings
from producer.dlq_store import DlqStore
from schemas import DecodeError, decode_dead_letter

log = logging.getLogger("jobstream.producer.dlq_index")

FETCH_TIMEOUT_MS = 500
MAX_RECORDS = 2_000
BACKOFF_FIRST_S = 0.1
BACKOFF_MAX_S = 5.0


def indexer_group(settings: Settings) -> str:
    return f"{settings.topic_prefix}.dlq-indexer"


class DlqIndexer:
    """Consumes the dead-letter topic into the index; an async context manager.

    `close()` is idempotent, returns once the consumer has left the group, and never
    commits a batch Redis has not taken.
    """

    def __init__(self, settings: Settings, store: DlqStore) -> None:
        self._settings = settings
        self._topic = settings.topics.dlq
        self._store = store
        self._consumer: Any = None
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self._stop = asyncio.Event()
        self.indexed = 0  # records written since start, for tests and logs
        self.skipped = 0  # records that did not decode
        self.redis_down = False

    async def __aenter__(self) -> DlqIndexer:
        self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def start(self) -> None:
        """Join the group in the background (retrying while Kafka or the topic is missing)."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="dlq-indexer")

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        await stop_task(self._task, self._stop)
        if self._consumer is not None:
            await self._consumer.stop()
        log.info("dlq indexer stopped topic=%s", self._topic)

    async def _open(self) -> Any:
        def make() -> Any:
            return AIOKafkaConsumer(
                self._topic,
                bootstrap_servers=self._settings.kafka_bootstrap_servers,
                group_id=indexer_group(self._settings),
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                client_id=f"jobstream-dlq-indexer-{self._settings.topic_prefix}",
            )

        # the topic is checked first: a consumer subscribed to a missing topic logs every 100 ms
        consumer = await start_consumer(make, self._stop, "dlq indexer", ready=self._topic_exists)
        if consumer is not None:
            log.info("dlq indexer started topic=%s group=%s", self._topic, indexer_group(self._settings))
        return consumer

    async def _topic_exists(self) -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=self._settings.kafka_bootstrap_servers)
        try:  # closed even when cancelled mid-start: a half-started client leaks its sockets
            await admin.start()
            described: list[dict[str, Any]] = await admin.describe_topics([self._topic])
        finally:
            await admin.close()
        if not any(d["topic"] == self._topic and d["partitions"] for d in described):
            raise LookupError(f"topic {self._topic} does not exist yet; run `jobstream topics`")

    async def _run(self) -> None:
        self._consumer = consumer = await self._open()
        if consumer is None:
            return
        while not self._stop.is_set():
            try:
                batch = await consumer.getmany(timeout_ms=FETCH_TIMEOUT_MS, max_records=MAX_RECORDS)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("dlq indexer fetch failed topic=%s", self._topic)
                await asyncio.sleep(BACKOFF_MAX_S)
                continue
            if not batch:
                continue
            records, offsets = self._decode(batch)
            if not await self._write(records):
                return  # stopping before Redis took the batch: leave it uncommitted
            try:
                await consumer.commit(offsets)
            except KafkaError as exc:  # rebalanced away: the new owner indexes again, harmlessly
                log.warning("dlq indexer commit failed: %r", exc)

    def _decode(
        self, batch: dict[TopicPartition, list[Any]]
    ) -> tuple[list[tuple[str, int, bytes]], dict[TopicPartition, int]]:
        records: list[tuple[str, int, bytes]] = []
        offsets: dict[TopicPartition, int] = {}
        for tp, messages in batch.items():
            for m in messages:
                try:
                    dead = decode_dead_letter(m.value)
                except DecodeError as exc:
                    self.skipped += 1
                    log.warning(
                        "dead letter skipped topic=%s partition=%d offset=%d: %s",
                        tp.topic,
                        tp.partition,
                        m.offset,
                        exc,
                    )
                    continue
                records.append((dead.id, dead.dead_at, m.value))
            offsets[tp] = messages[-1].offset + 1
        return records, offsets

    async def _write(self, records: list[tuple[str, int, bytes]]) -> bool:
        """Write until Redis takes the batch (or on a non-retryable error, dropping it): True;
        False if asked to stop first."""
        if not records:
            return True
        delay = BACKOFF_FIRST_S
        while True:
            try:
                await self._store.add(records, time.time_ns() // 1_000_000)
            except (RedisError, OSError) as exc:
                if isinstance(exc, DataError):  # our bytes, not Redis: retrying cannot help
                    log.error("dlq index batch dropped records=%d: %r", len(records), exc)
                    return True
                self.redis_down = True
                if self._stop.is_set():
                    return False
                log.warning("dlq indexer redis unavailable, retry in %.1fs: %r", delay, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, BACKOFF_MAX_S)
                continue
            except Exception:
                log.exception("dlq index batch dropped records=%d", len(records))
                return True
            if self.redis_down:
                log.info("dlq indexer redis back")
                self.redis_down = False
            self.indexed += len(records)
            return True
