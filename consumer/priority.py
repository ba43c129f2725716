"""Which buffered record starts next: priority with aging.

Records wait in one FIFO queue per priority. The head of each queue competes with an
effective rank: its priority's rank (high 0, normal 1, low 2) minus one for every
`aging_ms` it has waited. The lowest effective rank starts first, and on a tie the
higher priority does. So a steady stream of high never starves low: a low record that
waited two aging periods competes as high. Selection is O(1). Pure: time is passed in.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")

LEVELS = 3


class PrioritySelector(Generic[T]):
    """FIFO per priority level, selected by effective rank (see the module docstring)."""

    __slots__ = ("_aging_ms", "_queues", "_size")

    def __init__(self, aging_ms: float) -> None:
        if aging_ms <= 0:
            raise ValueError("aging_ms must be positive")
        self._aging_ms = aging_ms
        self._queues: tuple[deque[tuple[float, T]], ...] = tuple(deque() for _ in range(LEVELS))
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def push(self, level: int, item: T, now_ms: float) -> None:
        self._queues[level].append((now_ms, item))
        self._size += 1

    def pop(self, now_ms: float) -> T | None:
        """Remove and return the record that starts next, or None when empty."""
        best_level = -1
        best_rank = 0.0
        aging = self._aging_ms
        for level, queue in enumerate(self._queues):
            if queue:
                rank = level - (now_ms - queue[0][0]) // aging
                if best_level < 0 or rank < best_rank:
                    best_level, best_rank = level, rank
        if best_level < 0:
            return None
        self._size -= 1
        return self._queues[best_level].popleft()[1]

    def remove_if(self, predicate: Callable[[T], bool]) -> list[T]:
        """Remove and return every item for which `predicate(item)` is true (e.g. on revoke)."""
        removed: list[T] = []
        for queue in self._queues:
            kept: deque[tuple[float, T]] = deque()
            for entry in queue:
                if predicate(entry[1]):
                    removed.append(entry[1])
                else:
                    kept.append(entry)
            queue.clear()
            queue.extend(kept)
        self._size -= len(removed)
        return removed

    def __iter__(self) -> Iterator[T]:
        for queue in self._queues:
            for _, item in queue:
                yield item
