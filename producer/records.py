"""`GET /jobs/{id}/record`: a job as it was submitted, payload included, read back from
where it waits or went.

Nothing on the submit path keeps a copy of a payload: the record on the job's priority
topic is the copy, and a delayed job's envelope waits in Redis until it is due. The
projection knows where to look (`priority`, `key` and `queued_at`, from the `queued`
event). The partition follows from the key, or the id, as the submitter chose it
(`schemas.partition_for`); the broker's time index gives the first offset at
`queued_at - SLACK_MS`; from there the reader scans forward until it meets the job's id,
a record stamped `SLACK_MS` after `queued_at`, the partition's end, or `MAX_SCAN`
records. Only records with the job's key (its id when it has none) are decoded.

It is a page for an operator, not a hot path: one consumer, one lookup at a time (a lock),
each bounded by `TIMEOUT_S`. A record older than the topic's retention is gone, and the
answer says so; so is one written before the topic got more partitions.
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

from jobstream.kafka import Partitioner
from jobstream.kafka_security import kafka_options
from jobstream.lifecycle import Lifecycle
from jobstream.settings import Settings
from scheduler import DelayStore
from schemas import Priority, partition_for

SLACK_MS = 5_000  # records are stamped when sent, a moment after `queued`; clocks differ a little
MAX_SCAN = 200_000  # records read at most for one lookup
TIMEOUT_S = 5.0
_FETCH = 2_000  # records per fetch


class JobRecords(Lifecycle):
    """A `jobstream.lifecycle.Service`: its consumer starts and stops with it."""

    def __init__(self, settings: Settings, partitioner: Partitioner, delays: DelayStore) -> None:
        super().__init__()
        self._topics = settings.topics
        self._partitioner = partitioner
        self._delays = delays
        self._consumer = AIOKafkaConsumer(
            **kafka_options(settings), group_id=None, enable_auto_commit=False, max_poll_records=_FETCH
        )
        self._lock = asyncio.Lock()

    async def _startup(self) -> None:
        await self._consumer.start()

    async def _shutdown(self) -> None:
        await self._consumer.stop()

    async def find(self, state: dict[str, Any]) -> dict[str, Any] | None:
        """The record of the job whose projected state is `state` (`GET /jobs/{id}`'s shape):
        `{"id", "source", "topic", "partition", "offset", "timestamp", "job"}`, or None when it
        is not where it should be. Raises `KafkaError`, `RedisError` or `TimeoutError`."""
        job_id = state["id"]
        if state.get("queued_at") is None:  # still delayed (or its `queued` not projected yet)
            raw = await self._delays.envelope(job_id)
            if raw is None:
                return None
            return {"id": job_id, "source": "delayed", "topic": None, "partition": None, "offset": None,
                    "timestamp": None, "job": orjson.loads(raw)}  # fmt: skip
        topic = self._topics.jobs(Priority(state.get("priority") or Priority.normal))
        key = (state.get("key") or job_id).encode()
        tp = TopicPartition(topic, partition_for(key.decode(), await self._partitioner.count(topic)))
        async with asyncio.timeout(TIMEOUT_S), self._lock:  # the wait for the lock counts too
            found = await self._scan(tp, key, job_id, int(state["queued_at"]))
        if found is None:
            return None
        offset, timestamp, value = found
        return {"id": job_id, "source": "kafka", "topic": topic, "partition": tp.partition, "offset": offset,
                "timestamp": timestamp, "job": value}  # fmt: skip

    async def _scan(
        self, tp: TopicPartition, key: bytes, job_id: str, queued_at: int
    ) -> tuple[int, int, dict[str, Any]] | None:
        consumer = self._consumer
        consumer.assign([tp])
        start = (await consumer.offsets_for_times({tp: max(0, queued_at - SLACK_MS)}))[tp]
        if start is None:  # no record that late: the job's was never written, or is gone
            return None
        end = (await consumer.end_offsets([tp]))[tp]
        consumer.seek(tp, start.offset)
        last = min(end, start.offset + MAX_SCAN)
        position = start.offset
        while position < last:
            batch = await consumer.getmany(tp, timeout_ms=int(TIMEOUT_S * 1000), max_records=_FETCH)
            for record in batch.get(tp, ()):
                position = record.offset + 1
                if record.timestamp > queued_at + SLACK_MS or record.offset >= last:
                    return None
                if record.key != key or record.value is None:
                    continue
                try:
                    value = orjson.loads(record.value)
                except orjson.JSONDecodeError:
                    continue  # a poison record with the same key
                if isinstance(value, dict) and value.get("id") == job_id:
                    return record.offset, record.timestamp, value
        return None
