"""Pausing partitions: those whose buffer is full, and retry tiers with nothing to fetch.

**Full buffers.** A partition is paused when its records waiting to start (or waiting
for their due time) reach the buffer limit, and resumed once half of them have gone;
other partitions keep flowing.

**Idle retry tiers** (`park_idle`, every `check_s`). Every fetch names each partition the
worker owns, and aiokafka encodes and decodes each in Python, the broker reads each: a
worker owning a sixth of 30 retry-tier partitions named 5 usually empty ones beside 3 job
partitions in every fetch. So a tier partition read to its end (its position at the
highwater of the last fetch) is parked: paused until the broker's end offset for it,
asked for all parked partitions in one request per check, moves past its position. A
record in a tier waits the tier's delay before it is due, so a check well within the
shortest delay costs it no lateness (`check_interval_s`).

A partition paused for either reason stays paused until neither holds. Pause state is
lost in a rebalance, and so is the buffer of a revoked partition: a partition assigned
again starts unpaused, not parked, with an empty buffer (`forget`).
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Hashable, Iterable
from typing import Any

from aiokafka.errors import IllegalStateError, KafkaError

from consumer.dispatch import Dispatch

log = logging.getLogger("jobstream.worker")


def check_interval_s(shortest_tier_ms: int) -> float:
    """How often idle tiers are checked: a quarter of the shortest tier's delay, between
    20 ms and 250 ms."""
    return min(0.25, max(0.02, shortest_tier_ms / 4000))


class Pauses:
    def __init__(self, consumer: Any, dispatch: Dispatch[Any], tier_topics: Collection[str] = ()) -> None:
        self._consumer = consumer
        self._dispatch = dispatch
        self._tiers = frozenset(tier_topics)
        self.parked: set[Hashable] = set()
        self._ends: dict[Hashable, int] = {}  # the broker's end offsets last asked, per tier partition

    def buffer_changed(self, tps: set[Hashable]) -> None:
        """Pause partitions whose buffer filled; resume those half drained (unless parked)."""
        pause, resume = self._dispatch.pause_changes(tps)
        assigned = self._consumer.assignment()
        if pause := [tp for tp in pause if tp in assigned]:
            self._consumer.pause(*pause)
        if resume := [tp for tp in resume if tp in assigned and tp not in self.parked]:
            self._consumer.resume(*resume)

    def forget(self, tps: Iterable[Hashable]) -> None:
        """Assigned afresh or revoked: no longer parked (aiokafka forgot its pause too)."""
        for tp in tps:
            self.parked.discard(tp)
            self._ends.pop(tp, None)

    async def park_idle(self) -> None:
        """Park the tier partitions read to their end; unpark the parked ones that got
        records. One request to the broker (end offsets), none while nothing is parked."""
        consumer = self._consumer
        self.parked &= consumer.assignment()
        park = [
            tp
            for tp in consumer.assignment()
            if tp.topic in self._tiers and tp not in self.parked and await self._read_to_end(tp)
        ]
        if park:
            self.parked.update(park)
            consumer.pause(*park)
        if not self.parked:
            return
        parked = list(self.parked)
        try:
            ends = await consumer.end_offsets(parked)
        except KafkaError as exc:  # not known: fetch them all until the broker answers again
            log.warning("retry tiers: no end offsets (%s); fetching every tier meanwhile", exc)
            unpark = parked
        else:
            self._ends.update(ends)
            unpark = [tp for tp in parked if tp in ends and not await self._read_to_end(tp)]
        self._unpark(unpark)

    def unpark_all(self) -> None:
        """Fetch every tier again (the check itself failed: never leave one parked blind)."""
        self._unpark(list(self.parked))

    def _unpark(self, tps: list[Hashable]) -> None:
        self.parked.difference_update(tps)
        consumer = self._consumer
        assigned, full = consumer.assignment(), self._dispatch.paused
        if resume := [tp for tp in tps if tp in assigned and tp not in full]:
            consumer.resume(*resume)

    async def _read_to_end(self, tp: Any) -> bool:
        """Whether this worker has taken every record of `tp` up to the newest end it knows
        (the highwater of the last fetch, or the end offset last asked: a partition just
        unparked stays unparked until a fetch took what the broker said it had); False when
        unknown or no longer assigned."""
        consumer = self._consumer
        if tp not in consumer.assignment():
            return False
        high = consumer.highwater(tp)
        end = max(-1 if high is None else high, self._ends.get(tp, -1))
        if end < 0:
            return False
        try:
            return bool(await consumer.position(tp) >= end)
        except IllegalStateError:  # revoked meanwhile
            return False
