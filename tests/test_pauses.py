"""Pausing partitions: full buffers, and retry tiers parked while they hold nothing to fetch.

Pure: the consumer and the dispatch are stand-ins with the calls `Pauses` makes. The
worker's tests run the same code against the real broker (a retry after the tiers were
parked, in tests/test_failures.py).
"""

from __future__ import annotations

from collections.abc import Hashable

from aiokafka import TopicPartition
from aiokafka.errors import KafkaConnectionError

from consumer.pauses import Pauses, check_interval_s

TIER = "p.retry.1s"
JOBS = "p.jobs.normal"


class Consumer:
    """An aiokafka consumer's pause/resume, positions, highwaters and end offsets."""

    def __init__(self, tps: list[TopicPartition]) -> None:
        self.assigned = set(tps)
        self.paused: set[TopicPartition] = set()
        self.positions = dict.fromkeys(tps, 0)
        self.highwaters: dict[TopicPartition, int | None] = dict.fromkeys(tps, None)
        self.ends = dict.fromkeys(tps, 0)
        self.end_requests = 0
        self.broker_down = False

    def assignment(self) -> set[TopicPartition]:
        return set(self.assigned)

    def pause(self, *tps: TopicPartition) -> None:
        self.paused.update(tps)

    def resume(self, *tps: TopicPartition) -> None:
        assert set(tps) <= self.assigned
        self.paused.difference_update(tps)

    def highwater(self, tp: TopicPartition) -> int | None:
        return self.highwaters[tp]

    async def position(self, tp: TopicPartition) -> int:
        return self.positions[tp]

    async def end_offsets(self, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        self.end_requests += 1
        if self.broker_down:
            raise KafkaConnectionError("down")
        return {tp: self.ends[tp] for tp in tps}

    def fetched(self, tp: TopicPartition, upto: int) -> None:
        """A fetch answered `upto` as the highwater and the worker took it all."""
        self.highwaters[tp] = self.positions[tp] = self.ends[tp] = upto


class Dispatch:
    """The buffer side: which partitions are full, and what a change pauses or resumes."""

    def __init__(self) -> None:
        self.full: set[Hashable] = set()
        self.changes: tuple[list[Hashable], list[Hashable]] = ([], [])

    @property
    def paused(self) -> frozenset[Hashable]:
        return frozenset(self.full)

    def pause_changes(self, tps: set[Hashable]) -> tuple[list[Hashable], list[Hashable]]:
        return self.changes


def setup() -> tuple[Pauses, Consumer, Dispatch, TopicPartition, TopicPartition, TopicPartition]:
    tier0, tier1, jobs0 = TopicPartition(TIER, 0), TopicPartition(TIER, 1), TopicPartition(JOBS, 0)
    consumer, dispatch = Consumer([tier0, tier1, jobs0]), Dispatch()
    pauses = Pauses(consumer, dispatch, [TIER])  # type: ignore[arg-type]
    return pauses, consumer, dispatch, tier0, tier1, jobs0


async def test_a_tier_read_to_its_end_is_parked_and_unparked_when_it_gets_records() -> None:
    pauses, consumer, _, tier0, tier1, jobs0 = setup()
    await pauses.park_idle()
    assert consumer.paused == set() and consumer.end_requests == 0  # nothing fetched yet: unknown
    consumer.fetched(tier0, 5)
    consumer.fetched(jobs0, 7)
    consumer.highwaters[tier1], consumer.positions[tier1] = 3, 2  # one record not taken yet
    await pauses.park_idle()
    assert consumer.paused == {tier0} and pauses.parked == {tier0}  # never a job topic
    await pauses.park_idle()
    assert consumer.paused == {tier0}  # nothing new: stays parked, one request a check
    consumer.ends[tier0] = 6  # a retry record written to it
    await pauses.park_idle()
    assert consumer.paused == set() and pauses.parked == set()


async def test_an_unparked_tier_stays_unparked_until_a_fetch_took_its_records() -> None:
    """Unparked, a tier waits for the consumer's next fetch (which may be a long poll away):
    a check before that, with the highwater of the old fetch, must not park it again."""
    pauses, consumer, _, tier0, _, _ = setup()
    consumer.fetched(tier0, 5)
    await pauses.park_idle()
    consumer.ends[tier0] = 6
    await pauses.park_idle()
    assert tier0 not in consumer.paused
    await pauses.park_idle()  # no fetch yet: highwater and position still 5
    assert tier0 not in consumer.paused
    consumer.fetched(tier0, 6)  # fetched and taken
    await pauses.park_idle()
    assert tier0 in consumer.paused


async def test_a_full_buffer_and_a_parked_tier_each_keep_a_partition_paused() -> None:
    pauses, consumer, dispatch, tier0, _, _ = setup()
    consumer.fetched(tier0, 5)
    dispatch.full, dispatch.changes = {tier0}, ([tier0], [])
    pauses.buffer_changed({tier0})
    await pauses.park_idle()
    assert consumer.paused == {tier0} and pauses.parked == {tier0}
    consumer.ends[tier0] = 9
    await pauses.park_idle()  # unparked, but its buffer is still full
    assert consumer.paused == {tier0} and not pauses.parked
    dispatch.full, dispatch.changes = set(), ([], [tier0])
    pauses.buffer_changed({tier0})
    assert consumer.paused == set()
    # and the other way round: half drained while parked stays paused
    consumer.fetched(tier0, 9)
    await pauses.park_idle()
    pauses.buffer_changed({tier0})
    assert consumer.paused == {tier0}


async def test_without_end_offsets_every_parked_tier_is_fetched_again() -> None:
    pauses, consumer, _, tier0, tier1, _ = setup()
    consumer.fetched(tier0, 5)
    consumer.fetched(tier1, 5)
    await pauses.park_idle()
    assert consumer.paused == {tier0, tier1}
    consumer.broker_down = True
    await pauses.park_idle()  # the broker did not answer: the tiers are fetched meanwhile
    assert consumer.paused == set() and not pauses.parked


async def test_unpark_all_fetches_every_parked_tier_but_a_full_one() -> None:
    pauses, consumer, dispatch, tier0, tier1, _ = setup()
    consumer.fetched(tier0, 5)
    consumer.fetched(tier1, 5)
    await pauses.park_idle()
    dispatch.full = {tier1}
    pauses.unpark_all()
    assert not pauses.parked and consumer.paused == {tier1}


async def test_a_rebalance_forgets_parked_partitions() -> None:
    """Revoked and assigned again between two checks (never seen unassigned): aiokafka
    resumed it, and `forget` makes sure no stale park keeps the buffer from resuming it."""
    pauses, consumer, dispatch, tier0, _, _ = setup()
    consumer.fetched(tier0, 5)
    await pauses.park_idle()
    assert tier0 in pauses.parked
    consumer.paused.discard(tier0)  # the rebalance: aiokafka assigns afresh, unpaused
    pauses.forget({tier0})
    assert tier0 not in pauses.parked
    dispatch.full, dispatch.changes = {tier0}, ([tier0], [])
    pauses.buffer_changed({tier0})
    dispatch.full, dispatch.changes = set(), ([], [tier0])
    pauses.buffer_changed({tier0})  # half drained: resumed, nothing parked holds it
    assert tier0 not in consumer.paused


def test_checks_come_well_within_the_shortest_tier() -> None:
    assert check_interval_s(1_000) == 0.25
    assert check_interval_s(200) == 0.05
    assert check_interval_s(10) == 0.02
    assert check_interval_s(3_600_000) == 0.25
