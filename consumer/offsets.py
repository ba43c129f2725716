"""Which offset of a partition is safe to commit.

A worker runs the records of a partition out of order (priority, concurrency), so it may
commit only up to the lowest record whose outcome is not yet acknowledged by Kafka.
`OffsetTracker` is pure: it is told what was taken and what is done, and answers the
commit point. Adding and finishing are O(1); advancing is amortised O(1).
"""

from __future__ import annotations

from collections import deque


class OffsetTracker:
    """The commit point of one partition.

    Offsets must be added in increasing order (the order Kafka delivers them). An offset
    is done once its outcome is acknowledged; the commit point is the lowest offset not
    done, or one past the highest offset added when every offset is done.
    """

    __slots__ = ("_committed", "_next", "_open", "_pending")

    def __init__(self) -> None:
        # Offsets added, in order, from the lowest one not done (the head is always open).
        self._pending: deque[int] = deque()
        self._open: set[int] = set()  # added and not done
        self._next: int | None = None  # one past the highest offset added
        self._committed: int | None = None

    def add(self, offset: int) -> None:
        if self._next is not None and offset < self._next:
            raise ValueError(f"offset {offset} added after {self._next - 1}: offsets must increase")
        self._pending.append(offset)
        self._open.add(offset)
        self._next = offset + 1

    def done(self, offset: int) -> None:
        """Mark an added offset as finished. Marking an unknown or finished offset is a no-op."""
        open_ = self._open
        if offset not in open_:
            return
        open_.discard(offset)
        pending = self._pending
        while pending and pending[0] not in open_:
            pending.popleft()

    @property
    def in_flight(self) -> int:
        """Offsets added and not yet done."""
        return len(self._open)

    def commit_point(self) -> int | None:
        """The offset to commit now (the next one to read), or None when nothing changed."""
        if self._pending:
            point = self._pending[0]
        elif self._next is not None:
            point = self._next
        else:
            return None
        if point == self._committed:
            return None
        return point

    def committed(self, point: int) -> None:
        """Record that `point` was committed."""
        self._committed = point
