"""The partitions a worker owns, and committing their offsets.

Each owned partition has an `OffsetTracker` (the commit point is below the lowest record
whose outcome Kafka has not acknowledged) and the end offset it had when assigned: only
records below it can have been delivered before (to a worker that died, or to this one
before a restart), so only those need the completed-id check and the steady state makes
no Redis round trip per batch.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiokafka import TopicPartition
from aiokafka.errors import CommitFailedError, KafkaError

from consumer.offsets import OffsetTracker

log = logging.getLogger("jobstream.worker")

UNKNOWN_END = 2**62  # no end offset known: every record gets the completed-id check


class Assignment:
    """The partitions this worker owns: their trackers, their end offsets when assigned,
    and committing their commit points (one commit at a time)."""

    def __init__(self, consumer: Any, worker_id: str) -> None:
        self._consumer = consumer
        self._id = worker_id
        self.trackers: dict[TopicPartition, OffsetTracker] = {}
        self.seen_below: dict[TopicPartition, int] = {}
        self._lock = asyncio.Lock()

    def __len__(self) -> int:
        return len(self.trackers)

    async def adopt(self, assigned: set[TopicPartition]) -> None:
        for tp in assigned:
            self.trackers.setdefault(tp, OffsetTracker())
        try:
            ends = await asyncio.wait_for(self._consumer.end_offsets(list(assigned)), 10)
            self.seen_below.update(ends)
        except (KafkaError, TimeoutError) as exc:
            log.warning("worker %s: no end offsets (%s); checking every record", self._id, exc)
            self.seen_below.update(dict.fromkeys(assigned, UNKNOWN_END))

    def forget(self, revoked: set[TopicPartition]) -> None:
        for tp in revoked:
            self.trackers.pop(tp, None)
            self.seen_below.pop(tp, None)

    async def commit_every(self, interval_s: float) -> None:
        while True:
            await asyncio.sleep(interval_s)
            await self.commit()

    async def commit(self, only: set[TopicPartition] | None = None) -> None:
        """Commit each (or each of `only`) partition's commit point, where it moved."""
        async with self._lock:
            offsets: dict[TopicPartition, int] = {}
            for tp, tracker in self.trackers.items():
                if only is None or tp in only:
                    point = tracker.commit_point()
                    if point is not None:
                        offsets[tp] = point
            if not offsets:
                return
            try:
                await self._consumer.commit(offsets)
            except CommitFailedError as exc:
                log.warning("worker %s: commit failed after a rebalance: %s", self._id, exc)
                return
            except (KafkaError, AssertionError) as exc:
                log.warning("worker %s: commit failed, will retry: %s", self._id, exc)
                return
            for tp, point in offsets.items():
                if (kept := self.trackers.get(tp)) is not None:
                    kept.committed(point)
