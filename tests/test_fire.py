"""Firing a claimed batch (`scheduler.fire.BatchFirer`): its resend logic, pure.

The producer, partitioner and status publisher here are fakes that record what they are
handed; they stand for the guarded producer's contract (a record settles acknowledged, or
failed with why), not for Kafka. What Kafka itself does is in tests/test_scheduler.py.
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson

from jobstream.producer_guard import ProducerReplaced, SendGroup
from scheduler.fire import BatchFirer
from schemas import Topics, now_ms


class FakeProducer:
    """Fails every record of its first `failing` hand-overs (a producer that broke); then
    acknowledges."""

    def __init__(self, failing: int) -> None:
        self.failing = failing
        self.handed: list[list[bytes]] = []

    async def send_all(self, records: list[tuple[str, bytes, bytes | None, int | None, Any]]) -> SendGroup:
        self.handed.append([value for _, value, _, _, _ in records])
        group = SendGroup(asyncio.get_running_loop(), len(records))
        fail = len(self.handed) <= self.failing
        for i in range(len(records)):
            group._settle(i, ProducerReplaced("the producer broke") if fail else None)
        return group


class FakePartitioner:
    async def count(self, topic: str) -> int:
        return 3


class FakePublisher:
    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    async def send_now(self, events: list[dict[str, Any]]) -> asyncio.Future[None]:
        self.events.extend(events)
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        fut.set_result(None)
        return fut


def _batch(n: int) -> list[bytes]:
    due = now_ms() - 1
    return [
        orjson.dumps({"id": f"j{i}", "type": "t", "priority": "normal", "not_before": due}) for i in range(n)
    ]


def _firer(producer: FakeProducer, publisher: FakePublisher, timeout_s: float = 5.0) -> BatchFirer:
    return BatchFirer(producer, FakePartitioner(), publisher, Topics("t"), timeout_s)  # type: ignore[arg-type]


async def test_records_a_broken_producer_failed_are_sent_again_in_order() -> None:
    """Every record of a batch failed by a producer that broke is handed over again, in its
    first order, and counts as fired once acknowledged: nothing is lost."""
    raw = _batch(5)
    producer, publisher = FakeProducer(failing=2), FakePublisher()
    fired = await _firer(producer, publisher).fire(raw, now_ms())
    assert fired == [f"j{i}" for i in range(5)]
    assert producer.handed == [raw, raw, raw]
    assert [e["job_id"] for e in publisher.events] == [f"j{i}" for i in range(5)]  # queued once each


async def test_records_never_acknowledged_are_not_reported_fired() -> None:
    """Records still failing when the deadline passes are not in the result, so they stay
    claimed in Redis and fire again after the lease."""
    producer, publisher = FakeProducer(failing=10**6), FakePublisher()
    fired = await _firer(producer, publisher, timeout_s=0.2).fire(_batch(3), now_ms())
    assert fired == []
    assert len(producer.handed) >= 2  # it did try again
