"""Cancel requests, read by every worker from the control topic.

Every worker reads the whole control topic (no group), from its start, and remembers the
ids asked to be cancelled for `REMEMBER_S`; the topic keeps records a day. The worker
skips a cancelled job when it reaches it and cancels it if it is running. Checking a job
costs a set lookup: no round trip per job.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from jobstream.kafka_security import kafka_options
from jobstream.lifecycle import Lifecycle
from jobstream.settings import Settings
from schemas import decode_cancel

log = logging.getLogger("jobstream.worker")

REMEMBER_S = 86_400
MAX_REMEMBERED = 1_000_000


class CancelRequests(Lifecycle):
    """The set of job ids asked to be cancelled; `on_cancel(id)` runs for each new request.

    A `jobstream.lifecycle.Service`: `start()` reads the control topic from its beginning in
    the background; `close()` stops reading (within about 10 s)."""

    def __init__(self, settings: Settings, on_cancel: Callable[[str], None]) -> None:
        super().__init__()
        self._settings = settings
        self._on_cancel = on_cancel
        self._ids: OrderedDict[str, float] = OrderedDict()
        self._task: asyncio.Task[None] | None = None
        self._consumer: Any = None

    def __contains__(self, job_id: str) -> bool:
        return job_id in self._ids

    def add(self, job_id: str) -> None:
        now = time.monotonic()
        self._ids[job_id] = now
        self._ids.move_to_end(job_id)
        while self._ids and (
            len(self._ids) > MAX_REMEMBERED or next(iter(self._ids.values())) < now - REMEMBER_S
        ):
            self._ids.popitem(last=False)

    async def _startup(self) -> None:
        topic = self._settings.topics.control
        self._consumer = AIOKafkaConsumer(
            **kafka_options(self._settings), group_id=None, enable_auto_commit=False
        )
        await self._consumer.start()
        parts = self._consumer.partitions_for_topic(topic) or {0}
        tps = [TopicPartition(topic, p) for p in parts]
        self._consumer.assign(tps)
        await self._consumer.seek_to_beginning(*tps)
        self._task = asyncio.create_task(self._run(), name="cancel-requests")

    async def _shutdown(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._consumer is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._consumer.stop(), 10)
            self._consumer = None

    async def _run(self) -> None:
        while True:
            try:
                batches = await self._consumer.getmany(timeout_ms=500)
            except KafkaError as exc:
                log.warning("control topic: fetch failed, retrying: %s", exc)
                await asyncio.sleep(1)
                continue
            for records in batches.values():
                for record in records:
                    job_id = decode_cancel(record.value)
                    if job_id is None:
                        log.warning("control record @%d is not a cancel request; skipped", record.offset)
                        continue
                    if job_id not in self._ids:
                        self.add(job_id)
                        self._on_cancel(job_id)
