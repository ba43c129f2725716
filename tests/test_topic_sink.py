"""`jobstream.topic_sink`: offsets are committed once a second and when stopping, and only
for batches the store took, so a sink stopped while its store is down loses nothing."""

from __future__ import annotations

import asyncio
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from redis.exceptions import ConnectionError as RedisConnectionError

from jobstream.settings import Settings
from jobstream.topic_sink import TopicSink
from schemas import Priority
from tests.helpers import eventually, produce_jobs


class ListSink(TopicSink[bytes]):
    """Keeps record values in a list; `down` makes each write fail as an unreachable Redis."""

    def __init__(
        self, settings: Settings, group: str, kept: list[bytes], commit_interval_s: float = 60
    ) -> None:
        super().__init__(
            settings, settings.topics.jobs(Priority.normal), group, "test-sink", max_records=100,
            commit_interval_s=commit_interval_s,
        )  # fmt: skip
        self.kept = kept
        self.down = False

    def decode(self, tp: TopicPartition, record: Any) -> list[bytes]:
        return [record.value]

    async def write(self, items: list[bytes]) -> None:
        if self.down:
            raise RedisConnectionError("down for the test")
        self.kept.extend(items)


async def _committed(settings: Settings, group: str) -> int:
    """Offsets the group committed, summed over the topic's partitions."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap_servers, group_id=group, enable_auto_commit=False
    )
    await consumer.start()
    try:
        topic = settings.topics.jobs(Priority.normal)
        found = [await consumer.committed(TopicPartition(topic, p)) for p in range(settings.partitions)]
        return sum(n or 0 for n in found)
    finally:
        await consumer.stop()


async def test_a_sink_stopped_with_its_store_down_commits_what_was_taken_and_loses_nothing(
    settings: Settings,
) -> None:
    group = f"{settings.topic_prefix}.test-sink"
    kept: list[bytes] = []
    first, later = [f"a{i}".encode() for i in range(3)], [f"b{i}".encode() for i in range(2)]
    # an interval longer than the test: only the commit at stop can happen
    async with ListSink(settings, group, kept) as sink:
        await produce_jobs(settings, [], raw=first)
        await eventually(lambda: sink.written == 3, "the first records taken")
        sink.down = True
        await produce_jobs(settings, [], raw=later)
        await eventually(lambda: sink.redis_down, "the sink to hold a batch it cannot write")
    assert sorted(kept) == first
    assert await _committed(settings, group) == 3  # at stop, well within the interval

    again: list[bytes] = []
    async with ListSink(settings, group, again) as sink:
        await eventually(lambda: sink.written == 2, "the held records taken after a restart")
    assert sorted(again) == later  # none lost, none of the committed ones written again
    assert await _committed(settings, group) == 5


async def test_a_running_sink_commits_once_its_interval_has_passed(settings: Settings) -> None:
    """While it runs (not only at stop): what Redis took is committed within about an interval."""
    group = f"{settings.topic_prefix}.test-sink-timed"
    kept: list[bytes] = []
    async with ListSink(settings, group, kept, commit_interval_s=0.2):
        await produce_jobs(settings, [], raw=[b"x", b"y"])
        committed = 0
        async with asyncio.timeout(30):
            while committed < 2:
                committed = await _committed(settings, group)
                await asyncio.sleep(0.1)
    assert sorted(kept) == [b"x", b"y"]
