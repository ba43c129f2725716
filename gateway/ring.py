"""The replay ring: the status records the feed read most recently, for resume and snapshots.

Pure and synchronous; the hub calls it from the event loop only, so a subscription, its
replay and the next live batch never interleave.

Guarantees and limits:
- It holds whole records, oldest first, and evicts the oldest once it holds more than
  `max_events` events; one record is never split.
- `since(cursor)` returns every held record at or after the cursor, or None when the ring
  no longer holds something the cursor has not seen (the cursor is older than the
  window, or misses one of the ring's partitions; extra partitions are ignored). It cannot tell
  whether a cursor from another deployment or a future position is meaningful: offsets
  beyond the feed's position simply replay nothing.
- `gaps(cursor)` names what `since` lacks: per partition, the offset the ring holds from.
  What lies between the cursor and there is read back from Kafka (`gateway.resume`).
- The ring starts empty at the feed's start position: a cursor written by an earlier
  process (or another replica) has a gap up to that position.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

Event = dict[str, Any]
FeedRecord = tuple[int, int, list[Event]]  # partition, offset, events

REPLAY_EVENTS = 200_000


class ReplayRing:
    """A bounded window over the feed, with the feed's position and a per-job index."""

    def __init__(self, max_events: int = REPLAY_EVENTS) -> None:
        self.max_events = max_events
        self._records: deque[FeedRecord] = deque()
        self._size = 0
        # partition -> next offset the feed will read
        self.positions: dict[int, int] = {}
        # partition -> lowest offset still replayable (everything from it on is held)
        self._floor: dict[int, int] = {}
        # job id -> its held events, oldest first; evicted together with their record
        self._by_job: dict[str, list[Event]] = {}

    def __len__(self) -> int:
        """Events held."""
        return self._size

    def start(self, positions: Mapping[int, int]) -> None:
        """Begin (or restart) at the feed's start position; drops everything held."""
        self._records.clear()
        self._by_job.clear()
        self._size = 0
        self.positions = dict(positions)
        self._floor = dict(positions)

    def extend(self, records: Iterable[FeedRecord], positions: Mapping[int, int]) -> None:
        """Add the records of one feed batch and take the feed's position after it."""
        by_job = self._by_job
        for record in records:
            self._records.append(record)
            events = record[2]
            self._size += len(events)
            for ev in events:
                held = by_job.get(ev["job_id"])
                if held is None:
                    by_job[ev["job_id"]] = [ev]
                else:
                    held.append(ev)
        self.positions.update(positions)
        while self._size > self.max_events and self._records:
            self._evict()

    def _evict(self) -> None:
        partition, offset, events = self._records.popleft()
        self._size -= len(events)
        self._floor[partition] = offset + 1
        by_job = self._by_job
        for ev in events:
            held = by_job[ev["job_id"]]
            if len(held) == 1:
                del by_job[ev["job_id"]]
            else:
                del held[0]  # a job's events leave in the order they came

    def gaps(self, cursor: Mapping[int, int]) -> dict[int, int] | None:
        """`{partition: offset the ring holds from}` for each partition where the cursor is
        older than that; `{}` when `since(cursor)` has it all; None when the cursor lacks
        one of the ring's partitions."""
        gaps: dict[int, int] = {}
        for partition, floor in self._floor.items():
            at = cursor.get(partition)
            if at is None:
                return None
            if at < floor:
                gaps[partition] = floor
        return gaps

    def since(self, cursor: Mapping[int, int]) -> list[FeedRecord] | None:
        """Held records the cursor has not seen, in feed order; None if some are lost."""
        for partition, floor in self._floor.items():
            at = cursor.get(partition)
            if at is None or at < floor:
                return None
        return [r for r in self._records if r[1] >= cursor[r[0]]]

    def for_jobs(self, job_ids: Iterable[str]) -> Iterator[Event]:
        """Held events of these jobs, each job's in order."""
        by_job = self._by_job
        for job_id in job_ids:
            yield from by_job.get(job_id, ())
