"""A producer that Kafka has broken is replaced, and nothing it held is dropped silently."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import NewTopic
from aiokafka.errors import KafkaError, MessageSizeTooLargeError

from jobstream.cli import procs
from jobstream.kafka import admin_client, make_producer
from jobstream.producer_guard import (
    BATCH_RUN,
    GuardedProducer,
    ProducerReplaced,
    ProducerUnavailable,
    SendGroup,
    SendRecord,
)
from jobstream.settings import Settings
from producer.health import kafka_check
from schemas import Priority
from tests.conftest import MS
from tests.helpers import read_topic

SMALL_TOPIC_MAX = 2_000  # bytes: the topic's max.message.bytes, so the broker refuses more


async def small_topic(settings: Settings) -> str:
    """A one-partition topic whose broker-side record limit is tiny."""
    name = f"{settings.topic_prefix}.small"
    async with admin_client(settings) as admin:
        await admin.create_topics(
            [NewTopic(name, 1, 1, topic_configs={"max.message.bytes": str(SMALL_TOPIC_MAX)})]
        )
    return name


def raw_producer(settings: Settings, port: int | None = None) -> Any:
    bootstrap = f"127.0.0.1:{port}" if port is not None else settings.kafka_bootstrap_servers
    return AIOKafkaProducer(
        bootstrap_servers=bootstrap, enable_idempotence=True, linger_ms=0, request_timeout_ms=2_000
    )


async def send_all_settled(settings: Settings, records: Sequence[SendRecord]) -> tuple[SendGroup, int]:
    """`send_all` on a new guarded producer, once every record settled; the group and how
    many times the producer was replaced meanwhile."""
    producer = make_producer(settings, linger_ms=0)
    await producer.start()
    try:
        group = await producer.send_all(records)
        async with asyncio.timeout(30_000 * MS):
            await group.done
        return group, producer.replacements
    finally:
        await producer.close()


async def test_a_record_kafka_refuses_fails_alone(settings: Settings) -> None:
    """A record the broker refuses, handed over with 20 small ones for the same partition
    (some in its batch, some behind it): only it fails; the others land, in order."""
    topic = await small_topic(settings)
    producer = make_producer(settings, linger_ms=0)
    await producer.start()
    try:
        await (await producer.send(topic, b"before", partition=0))
        big = await producer.send(topic, b"x" * (4 * SMALL_TOPIC_MAX), partition=0)
        small = [await producer.send(topic, f"after {i}".encode(), partition=0) for i in range(20)]
        async with asyncio.timeout(30_000 * MS):
            with pytest.raises(MessageSizeTooLargeError):
                await big
            await asyncio.gather(*small)  # unguarded, these fail: too large, or OutOfOrderSequenceNumber
        await (await producer.send(topic, b"later", partition=0))
        assert producer.replacements >= 1 and producer.problem is None
    finally:
        await producer.close()
    values = [r.value.decode() for r in await read_topic(settings, topic, 22)]
    assert values == ["before", *(f"after {i}" for i in range(20)), "later"]


async def test_send_all_batches_a_partitions_run_and_a_refused_record_fails_alone(settings: Settings) -> None:
    """`send_all` puts a partition's long run in batches of its own; the broker refuses the
    batch holding one record too large: only that record fails, the rest land in order."""
    topic = await small_topic(settings)
    n = 2 * BATCH_RUN
    values = [b"x" * (4 * SMALL_TOPIC_MAX) if i == 5 else f"small {i}".encode() for i in range(n)]
    group, _ = await send_all_settled(settings, [(topic, v, None, 0, None) for v in values])
    assert isinstance(group.errors[5], MessageSizeTooLargeError)
    assert [e for i, e in enumerate(group.errors) if i != 5] == [None] * (n - 1)
    landed = [r.value for r in await read_topic(settings, topic, n - 1)]
    assert landed == [v for i, v in enumerate(values) if i != 5]


async def test_send_all_splits_a_run_longer_than_a_batch(settings: Settings) -> None:
    """A run over the producer's batch size (512 KiB) goes in several batches: all of it
    lands, in order, beside a short run to another partition."""
    topic = settings.topics.jobs(Priority.low)
    long_run = [(topic, f"{i:06d}".encode() * 200, None, 0, None) for i in range(600)]  # 1.2 KB each
    short_run = [(topic, f"other {i}".encode(), None, 1, None) for i in range(3)]
    group, _ = await send_all_settled(settings, long_run[:300] + short_run + long_run[300:])
    assert set(group.errors) == {None}
    landed = await read_topic(settings, topic, len(long_run) + len(short_run))
    assert [r.value for r in landed if r.partition == 0] == [v for _, v, *_ in long_run]
    assert [r.value for r in landed if r.partition == 1] == [v for _, v, *_ in short_run]


async def test_send_all_refuses_a_record_over_max_request_size_in_a_run_without_sending_it(
    settings: Settings,
) -> None:
    """A record over the producer's max_request_size (8 MiB) amid a long run is refused by
    the client, alone; the producer is not replaced and the others land in order."""
    topic = settings.topics.jobs(Priority.high)
    values = [b"x" * (9 * 1024 * 1024) if i == 7 else f"r {i}".encode() for i in range(2 * BATCH_RUN)]
    group, replacements = await send_all_settled(settings, [(topic, v, None, 2, None) for v in values])
    assert replacements == 0
    assert isinstance(group.errors[7], MessageSizeTooLargeError)
    assert [e for i, e in enumerate(group.errors) if i != 7] == [None] * (len(values) - 1)
    landed = [r.value for r in await read_topic(settings, topic, len(values) - 1) if r.partition == 2]
    assert landed == [v for i, v in enumerate(values) if i != 7]


async def test_a_dead_sender_is_replaced(settings: Settings) -> None:
    """A producer whose sender task died is noticed by the watchdog and replaced."""
    producer = GuardedProducer(lambda: raw_producer(settings), watch_interval_s=0.05)
    await producer.start()
    try:
        topic = settings.topics.jobs(Priority.normal)
        broken: Any = producer._current
        broken._sender.sender_task.cancel()  # what an unexpected error in aiokafka's sender does
        async with asyncio.timeout(30_000 * MS):
            with pytest.raises(ProducerReplaced):  # held by the dead sender, failed back: not dropped
                await (await producer.send(topic, b"held", partition=0))
            await (await producer.send(topic, b"after", partition=0))
        assert producer.replacements == 1
    finally:
        await producer.close()


async def test_a_broken_producer_that_cannot_be_replaced_is_reported(settings: Settings) -> None:
    """Broken and no new producer can start: sends fail within the wait, and the check names why."""
    topic = await small_topic(settings)
    dead_port = procs.free_port()
    built = 0

    def factory() -> Any:
        nonlocal built
        built += 1
        return raw_producer(settings, None if built == 1 else dead_port)

    producer = GuardedProducer(factory, wait_s=0.5)
    await producer.start()
    check = kafka_check(producer)
    try:
        await check()
        with pytest.raises(ProducerUnavailable, match="MessageSizeTooLarge"):  # not sent again alone
            await (await producer.send(topic, b"x" * (4 * SMALL_TOPIC_MAX), partition=0))
        with pytest.raises(ProducerUnavailable, match="broke"):
            await producer.send(topic, b"small", partition=0)
        with pytest.raises(ConnectionError, match="MessageSizeTooLarge"):
            await check()
        assert isinstance(ProducerUnavailable("x"), KafkaError)  # callers' `except KafkaError` catch it
    finally:
        await producer.close()


class StuckProducer:
    """Stands in for an aiokafka producer that takes records and never gets them
    acknowledged while its cluster answers metadata requests: "stuck failing"."""

    def __init__(self) -> None:
        self.held: list[asyncio.Future[Any]] = []
        self.client = self
        self._message_accumulator = self
        self._batches: dict[str, list[Any]] = {}
        self._pending_batches: set[Any] = set()

    async def force_metadata_update(self) -> bool:
        return True

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass

    async def flush(self) -> None:
        await asyncio.Event().wait()  # what it holds never settles

    async def send(self, *args: Any, **kwargs: Any) -> asyncio.Future[Any]:
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.held.append(fut)
        return fut

    def fail_all(self, exc: BaseException) -> None:
        for fut in self.held:
            if not fut.done():
                fut.set_exception(exc)


async def test_a_producer_stuck_while_the_cluster_answers_is_replaced_and_fails_back() -> None:
    """Records waiting past `stuck_after_s` with no acknowledgement while metadata answers:
    the producer is replaced, and the record it held fails back to its caller (not dropped)."""
    built: list[StuckProducer] = []

    def factory() -> StuckProducer:
        built.append(StuckProducer())
        return built[-1]

    producer = GuardedProducer(factory, stuck_after_s=0.4, watch_interval_s=0.05, grace_s=0.1)
    await producer.start()
    try:
        held = await producer.send("t", b"held")
        async with asyncio.timeout(30_000 * MS):
            with pytest.raises(ProducerReplaced):
                await held
            await producer.send("t", b"after")  # waits for the replacement, goes to it
        assert producer.replacements == 1 and len(built) == 2 and len(built[1].held) == 1
        assert producer.problem is None
    finally:
        await producer.close()


async def test_a_record_kafka_refuses_fails_alone_through_send_notify(settings: Settings) -> None:
    """The status publisher's path (`send_notify`): the refused record's callback gets the
    refusal, every other callback gets None once its record landed, in order."""
    topic = await small_topic(settings)
    producer = make_producer(settings, linger_ms=0)
    await producer.start()
    outcomes: dict[str, BaseException | None] = {}
    all_settled = asyncio.Event()
    names = ["before", "big", *(f"after {i}" for i in range(20))]

    def settled(name: str) -> Any:
        def callback(err: BaseException | None) -> None:
            assert name not in outcomes, f"{name} settled twice"
            outcomes[name] = err
            if len(outcomes) == len(names):
                all_settled.set()

        return callback

    try:
        for name in names:
            value = b"x" * (4 * SMALL_TOPIC_MAX) if name == "big" else name.encode()
            await producer.send_notify(settled(name), topic, value, partition=0)
        async with asyncio.timeout(30_000 * MS):
            await all_settled.wait()
    finally:
        await producer.close()
    assert isinstance(outcomes.pop("big"), MessageSizeTooLargeError)
    assert set(outcomes.values()) == {None}
    values = [r.value.decode() for r in await read_topic(settings, topic, 21)]
    assert values == [n for n in names if n != "big"]
