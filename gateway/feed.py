"""The feed: reads the status topic from its end, with no consumer group, into the hub.

Every gateway replica reads every partition (manual assignment, nothing committed), so
each one sees every event. Each record is decoded once; a record that does not decode is
logged with its coordinates and skipped, never fatal.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from gateway.errors import StatusTopicMissing
from gateway.hub import Hub
from gateway.ring import Event, FeedRecord
from jobstream.kafka import admin_client
from jobstream.kafka_security import kafka_options
from jobstream.lifecycle import Lifecycle
from jobstream.settings import GatewaySettings
from schemas import DecodeError, decode_status_batch

log = logging.getLogger("jobstream.gateway.feed")

FETCH_TIMEOUT_MS = 500
MAX_RECORDS = 5_000  # records, each a JSON array of up to a few thousand events
ERROR_PAUSE_S = 1.0
RETRY_FIRST_S = 0.5
RETRY_MAX_S = 5.0
READY_TIMEOUT_S = 2.0


async def status_partitions(settings: GatewaySettings) -> list[int]:
    """The status topic's partitions, from the broker; raises `StatusTopicMissing`."""
    topic = settings.topics.status
    async with admin_client(settings) as admin:
        described: list[dict[str, Any]] = await admin.describe_topics([topic])
    partitions = sorted(p["partition"] for d in described if d["topic"] == topic for p in d["partitions"])
    if not partitions:
        raise StatusTopicMissing(f"status topic {topic} has no partitions; run `jobstream topics` first")
    return partitions


def decode_record(partition: int, offset: int, value: bytes | None) -> list[Event] | None:
    """A status record's events, or None (logged with its coordinates) when it does not decode."""
    try:
        return decode_status_batch(value)
    except DecodeError as exc:
        log.warning("status record skipped partition=%d offset=%d: %s", partition, offset, exc)
        return None


class Feed(Lifecycle):
    """Tails the status topic from where it ends once positioned; a `jobstream.lifecycle.Service`.

    Guarantees: batches reach `hub.dispatch` in fetch order, each partition's records in
    offset order. Partitions are the ones the topic has when the feed is positioned
    (partitions added later are not read until a restart). `close()` returns once the
    consumer has stopped.
    """

    def __init__(self, settings: GatewaySettings, hub: Hub) -> None:
        super().__init__()
        self._settings = settings
        self._hub = hub
        self._topic = settings.topics.status
        self._consumer: Any = None
        self._task: asyncio.Task[None] | None = None
        self._positioned = asyncio.Event()

    async def _startup(self) -> None:
        """Start reading in the background; `wait_positioned()` tells when it is at the end."""
        self._task = asyncio.create_task(self._run(), name="gateway-feed")

    async def wait_positioned(self, timeout_s: float) -> bool:
        """Wait until the feed is assigned and at the topic's end; False after `timeout_s`."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                await self._positioned.wait()
        return self._positioned.is_set()

    async def _open(self) -> None:
        """Connect, assign every partition, seek to the end; retry until it works, so a
        gateway started before Kafka or the topics recovers without a restart."""
        delay = RETRY_FIRST_S
        while True:
            try:
                consumer, positions = await self._connect()
                break
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("feed cannot start topic=%s, retry in %.1fs: %s", self._topic, delay, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX_S)
        self._consumer = consumer
        self._hub.start_at(positions)
        self._positioned.set()
        log.info("feed started topic=%s positions=%s", self._topic, positions)

    async def _connect(self) -> tuple[Any, dict[int, int]]:
        partitions = await status_partitions(self._settings)
        consumer = AIOKafkaConsumer(
            **kafka_options(self._settings),
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="latest",
            client_id=f"jobstream-gateway-{self._settings.topic_prefix}",
        )
        try:
            await consumer.start()
            tps = [TopicPartition(self._topic, p) for p in partitions]
            consumer.assign(tps)
            await consumer.seek_to_end(*tps)
            positions = {tp.partition: await consumer.position(tp) for tp in tps}
        except BaseException:
            await consumer.stop()
            raise
        return consumer, positions

    async def _shutdown(self) -> None:
        """Stop fetching and stop the consumer."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._consumer is not None:
            await self._consumer.stop()
        log.info("feed stopped topic=%s", self._topic)

    async def ready(self) -> bool:
        """True when partitions are assigned and the broker answers a metadata request."""
        consumer = self._consumer
        if consumer is None or self._closing or not consumer.assignment():
            return False
        try:
            async with asyncio.timeout(READY_TIMEOUT_S):
                await consumer.topics()
        except Exception:
            return False
        return True

    async def _run(self) -> None:
        await self._open()
        consumer = self._consumer
        while True:
            try:
                batch = await consumer.getmany(timeout_ms=FETCH_TIMEOUT_MS, max_records=MAX_RECORDS)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("feed fetch failed topic=%s", self._topic)
                await asyncio.sleep(ERROR_PAUSE_S)
                continue
            if batch:
                self._handle(batch)

    def _handle(self, batch: dict[TopicPartition, list[Any]]) -> None:
        records: list[FeedRecord] = []
        positions: dict[int, int] = {}
        for tp, messages in batch.items():
            partition = tp.partition
            for m in messages:
                events = decode_record(partition, m.offset, m.value)
                if events is not None:
                    records.append((partition, m.offset, events))
            positions[partition] = messages[-1].offset + 1
        try:
            self._hub.dispatch(records, positions)
        except Exception:  # a bug in routing must not stop the feed for everyone
            log.exception("feed dispatch failed records=%d", len(records))
