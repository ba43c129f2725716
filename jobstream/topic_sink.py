"""A topic kept in Redis by one consumer group: the projector (`jobstream.projector`) and
the dead-letter indexer (`deadletters.index`).

Per fetched batch: decode every record (one that does not decode is logged with its
topic, partition and offset and skipped: stopping on it would hide every record behind
it) and write the batch with one call. Offsets are committed only after Redis took the
batch, at most once per `commit_interval_s` and when stopping: while Redis is down the
same batch is retried with capped backoff, and the sink recovers by itself when Redis is
back. After a crash or a rebalance up to that interval is written again, so writing a
batch twice must be harmless.
The sink joins its group once the topic exists, retrying with capped backoff until then.
"""

from __future__ import annotations

import asyncio
import logging
from abc import ABC, abstractmethod
from typing import Any, Generic, TypeVar

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError
from redis.exceptions import DataError, RedisError

from jobstream.kafka import admin_client, start_consumer, stop_task
from jobstream.kafka_security import kafka_options
from jobstream.lifecycle import Lifecycle
from jobstream.settings import Settings
from schemas import DecodeError

log = logging.getLogger("jobstream.sink")

FETCH_TIMEOUT_MS = 500
# A commit per fetched batch was one request per fetch (at 50 jobs/s the gateway committed
# 52 times a second); a batch written twice after a crash or a rebalance is harmless.
COMMIT_INTERVAL_S = 1.0
# The broker holds a fetch until this much has gathered or this long has passed: a fetch
# per record (two or three per job on the status topic) cost the broker and this process
# more than the writes; the projection may trail the live feed by this much.
FETCH_GATHER_MS = 100
FETCH_GATHER_BYTES = 1 << 20
BACKOFF_FIRST_S = 0.1
BACKOFF_MAX_S = 5.0

T = TypeVar("T")


class TopicSink(Lifecycle, ABC, Generic[T]):
    """Consumes `topic` in `group` into Redis in the background; a `jobstream.lifecycle.Service`.

    `start()` joins the group in the background (retrying while Kafka or the topic is
    missing). `close()` stops after the batch in hand (uncommitted if Redis did not take
    it: never commits a batch Redis has not taken), and returns once the consumer has left
    the group. `name` names the logs, the task and the client.
    """

    def __init__(
        self, settings: Settings, topic: str, group: str, name: str, *, max_records: int,
        commit_interval_s: float = COMMIT_INTERVAL_S,
    ) -> None:  # fmt: skip
        super().__init__()
        self._commit_interval_s = commit_interval_s
        self._settings = settings
        self._topic = topic
        self._group = group
        self._name = name
        self._max_records = max_records
        self._consumer: Any = None
        self._task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()
        self.written = 0  # items Redis took since start, for tests and logs
        self.skipped = 0  # records that did not decode
        self.redis_down = False

    @abstractmethod
    def decode(self, tp: TopicPartition, record: Any) -> list[T]:
        """The items of one record; raise `DecodeError` to skip it."""

    @abstractmethod
    async def write(self, items: list[T]) -> None:
        """Write a batch to Redis in one call."""

    async def _startup(self) -> None:
        self._task = asyncio.create_task(self._run(), name=self._name)

    async def _shutdown(self) -> None:
        await stop_task(self._task, self._stop)
        if self._consumer is not None:
            await self._consumer.stop()
        log.info("%s stopped topic=%s", self._name, self._topic)

    async def _open(self) -> Any:
        def make() -> Any:
            return AIOKafkaConsumer(
                self._topic,
                **kafka_options(self._settings),
                group_id=self._group,
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                client_id=f"jobstream-{self._name}-{self._settings.topic_prefix}",
                fetch_max_wait_ms=FETCH_GATHER_MS,
                fetch_min_bytes=FETCH_GATHER_BYTES,
            )

        # Waits for the topic first: a consumer of a missing one logs every 100 ms.
        consumer = await start_consumer(make, self._stop, self._name, ready=self._topic_exists)
        if consumer is not None:
            log.info("%s started topic=%s group=%s", self._name, self._topic, self._group)
        return consumer

    async def _topic_exists(self) -> None:
        """Raises `LookupError` until the topic exists (with partitions)."""
        async with admin_client(self._settings) as admin:
            described: list[dict[str, Any]] = await admin.describe_topics([self._topic])
        if not any(d["topic"] == self._topic and d["partitions"] for d in described):
            raise LookupError(f"topic {self._topic} does not exist yet; run `jobstream topics`")

    async def _run(self) -> None:
        self._consumer = consumer = await self._open()
        if consumer is None:
            return
        loop = asyncio.get_running_loop()
        written: dict[TopicPartition, int] = {}  # taken by Redis, not committed yet
        due = loop.time() + self._commit_interval_s
        try:
            while not self._stop.is_set():
                if written and loop.time() >= due:
                    await self._commit(written)
                    written, due = {}, loop.time() + self._commit_interval_s
                try:
                    batch = await consumer.getmany(timeout_ms=FETCH_TIMEOUT_MS, max_records=self._max_records)
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception("%s fetch failed topic=%s", self._name, self._topic)
                    await asyncio.sleep(BACKOFF_MAX_S)
                    continue
                if not batch:
                    continue
                items, offsets = self._decode_all(batch)
                if not await self._write_until_taken(items):
                    return  # stopping before Redis took the batch: left uncommitted
                written.update(offsets)
        finally:
            if written:
                await self._commit(written)

    async def _commit(self, offsets: dict[TopicPartition, int]) -> None:
        try:
            await self._consumer.commit(offsets)
        except KafkaError as exc:  # rebalanced away: the new owner writes again, harmlessly
            log.warning("%s commit failed: %r", self._name, exc)

    def _decode_all(
        self, batch: dict[TopicPartition, list[Any]]
    ) -> tuple[list[T], dict[TopicPartition, int]]:
        items: list[T] = []
        offsets: dict[TopicPartition, int] = {}
        for tp, records in batch.items():
            for r in records:
                try:
                    items.extend(self.decode(tp, r))
                except DecodeError as exc:
                    self.skipped += 1
                    log.warning("%s skipped topic=%s partition=%d offset=%d: %s",
                                self._name, tp.topic, tp.partition, r.offset, exc)  # fmt: skip
            offsets[tp] = records[-1].offset + 1
        return items, offsets

    async def _write_until_taken(self, items: list[T]) -> bool:
        """Write until Redis takes the batch (or on a non-retryable error, dropping it): True;
        False if asked to stop first."""
        if not items:
            return True
        delay = BACKOFF_FIRST_S
        while True:
            try:
                await self.write(items)
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as exc:
                if isinstance(exc, DataError):  # our bytes, not Redis: retrying cannot help
                    log.error("%s batch dropped items=%d: %r", self._name, len(items), exc)
                    return True
                self.redis_down = True
                if self._stop.is_set():
                    return False
                log.warning("%s: redis unavailable, retry in %.1fs: %r", self._name, delay, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, BACKOFF_MAX_S)
                continue
            except Exception:
                log.exception("%s batch dropped items=%d", self._name, len(items))
                return True
            if self.redis_down:
                log.info("%s: redis back", self._name)
                self.redis_down = False
            self.written += len(items)
            return True
