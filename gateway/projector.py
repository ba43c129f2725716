"""The projector: keeps each job's latest state in Redis from the status topic.

One consumer group (`<prefix>.projector`) across all gateway replicas, so each record is
projected by one of them. Per fetched batch: decode every record once, apply all events
with one `Projection.apply` (it coalesces per job and pipelines), then commit. Offsets are
committed only after Redis has the batch: while Redis is down the same batch is retried
with capped backoff, and the projector recovers by itself when Redis is back. Applying a
batch twice is harmless (the projection never moves a job backwards).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError
from redis.asyncio import Redis
from redis.exceptions import DataError, RedisError

from gateway.feed import status_partitions
from jobstream.kafka import start_consumer, stop_task
from jobstream.projection import Projection
from jobstream.settings import GatewaySettings
from schemas import DecodeError, decode_status_batch

log = logging.getLogger("jobstream.gateway.projector")

FETCH_TIMEOUT_MS = 500
MAX_RECORDS = 5_000
BACKOFF_FIRST_S = 0.1
BACKOFF_MAX_S = 5.0


class Projector:
    """Consumes the status topic in the projector group; an async context manager.

    `close()` is idempotent, returns once the consumer has left the group, and never
    commits a batch Redis has not taken.
    """

    def __init__(self, settings: GatewaySettings, redis: Redis) -> None:
        self._settings = settings
        self._topic = settings.topics.status
        self._projection = Projection(redis, settings.redis_prefix, settings.state_ttl_s)
        self._consumer: Any = None
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self._stop = asyncio.Event()
        self.applied = 0  # events applied since start, for tests and metrics
        self.redis_down = False

    async def __aenter__(self) -> Projector:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def start(self) -> None:
        """Join the group in the background (retrying while Kafka is unreachable)."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="gateway-projector")

    async def _open(self) -> Any:
        """Join the group; retry until the topic exists and Kafka answers, or until closed."""

        def make() -> Any:
            return AIOKafkaConsumer(
                self._topic,
                bootstrap_servers=self._settings.kafka_bootstrap_servers,
                group_id=self._settings.topics.projector_group,
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                client_id=f"jobstream-projector-{self._settings.topic_prefix}",
            )

        # the topic is checked first: a consumer subscribed to a missing topic logs every 100 ms
        consumer = await start_consumer(
            make, self._stop, "projector", ready=lambda: status_partitions(self._settings)
        )
        if consumer is not None:
            group = self._settings.topics.projector_group
            log.info("projector started topic=%s group=%s", self._topic, group)
        return consumer

    async def close(self) -> None:
        """Stop after the batch in hand (uncommitted if Redis did not take it). Idempotent."""
        if self._closed:
            return
        self._closed = True
        await stop_task(self._task, self._stop)
        if self._consumer is not None:
            await self._consumer.stop()
        log.info("projector stopped topic=%s", self._topic)

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
                log.exception("projector fetch failed topic=%s", self._topic)
                await asyncio.sleep(BACKOFF_MAX_S)
                continue
            if not batch:
                continue
            events, offsets = self._decode(batch)
            if not await self._apply(events):
                return  # closing before Redis took the batch: left uncommitted
            try:
                await consumer.commit(offsets)
            except KafkaError as exc:  # rebalanced away: the new owner re-applies, harmlessly
                log.warning("projector commit failed: %r", exc)

    def _decode(self, batch: dict[TopicPartition, list[Any]]) -> tuple[list[dict[str, Any]], dict[Any, int]]:
        events: list[dict[str, Any]] = []
        offsets: dict[Any, int] = {}
        for tp, messages in batch.items():
            for m in messages:
                try:
                    decoded = decode_status_batch(m.value)
                except DecodeError as exc:
                    log.warning(
                        "status record skipped topic=%s partition=%d offset=%d: %s",
                        tp.topic,
                        tp.partition,
                        m.offset,
                        exc,
                    )
                    continue
                for ev in decoded:
                    if _projectable(ev):
                        events.append(ev)
                    else:
                        log.warning(
                            "status event skipped topic=%s partition=%d offset=%d job=%s: bad fields",
                            tp.topic,
                            tp.partition,
                            m.offset,
                            ev.get("job_id"),
                        )
            offsets[tp] = messages[-1].offset + 1
        return events, offsets

    async def _apply(self, events: list[dict[str, Any]]) -> bool:
        """Apply until Redis takes the batch (or on a non-retryable error, dropping it): True;
        False if asked to stop first."""
        delay = BACKOFF_FIRST_S
        while True:
            try:
                await self._projection.apply(events)
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as exc:
                if isinstance(exc, DataError):  # our bytes, not Redis: retrying cannot help
                    log.error("projector batch dropped events=%d: %r", len(events), exc)
                    return True
                self.redis_down = True
                if self._stop.is_set():
                    return False
                log.warning("projector redis unavailable, retry in %.1fs: %r", delay, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, BACKOFF_MAX_S)
                continue
            except Exception:
                log.exception("projector batch dropped events=%d", len(events))
                return True
            if self.redis_down:
                log.info("projector redis back")
                self.redis_down = False
            self.applied += len(events)
            return True


def _projectable(ev: dict[str, Any]) -> bool:
    """The fields `Projection.apply` relies on have the types it expects."""
    return (
        isinstance(ev.get("at"), int)
        and isinstance(ev.get("attempt", 1), int | None)
        and isinstance(ev.get("created_at"), int | None)
        and isinstance(ev.get("type", ""), str)
        and isinstance(ev.get("parent_id"), str | None)
    )
