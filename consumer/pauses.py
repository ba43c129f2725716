"""Which partitions the worker has paused, and why.

Two reasons pause a partition: its buffer of records not yet started is full (resumed
once half has drained), or it is a retry partition whose head is not due yet (resumed at
that moment by a timer; the consumer is rewound to the head, so the head is fetched
again). A partition is resumed only when no reason holds. Pause state is lost in a
rebalance; `adopt` re-applies the due-time pauses of partitions that come back.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Hashable
from typing import Any

from consumer.dispatch import Dispatch
from consumer.retry import DueClock
from schemas import HEADER_DUE


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def due_ms(headers: Any) -> int | None:
    """The `js-due-ms` header of a record, if it has a valid one."""
    for name, value in headers or ():
        if name == HEADER_DUE:
            try:
                return int(value)
            except ValueError:
                return None
    return None


class Pauses:
    def __init__(self, consumer: Any, dispatch: Dispatch[Any]) -> None:
        self._consumer = consumer
        self._dispatch = dispatch
        self._due = DueClock()
        self._timer: asyncio.TimerHandle | None = None

    def buffer_changed(self, tps: set[Hashable]) -> None:
        """Pause partitions whose buffer filled; resume those drained (if nothing else holds)."""
        pause, resume = self._dispatch.pause_changes(tps)
        assigned = self._consumer.assignment()
        if pause := [tp for tp in pause if tp in assigned]:
            self._consumer.pause(*pause)
        if resume := [tp for tp in resume if tp in assigned and not self._due.waiting(tp)]:
            self._consumer.resume(*resume)

    def due_records(self, tp: Hashable, records: list[Any], now_ms: int) -> list[Any]:
        """The records of a retry partition that are due. At the first that is not, pause the
        partition until it is and rewind to it: every record behind it falls due later."""
        for i, record in enumerate(records):
            if self._due.check(tp, due_ms(record.headers), now_ms) is not None:
                self._consumer.seek(tp, record.offset)
                self._consumer.pause(tp)
                self._schedule()
                return records[:i]
        return records

    def adopt(self, assigned: set[Hashable]) -> None:
        if waiting := [tp for tp in assigned if self._due.waiting(tp)]:
            self._consumer.pause(*waiting)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _schedule(self) -> None:
        wake = self._due.next_wake()
        if wake is None:
            return
        if self._timer is not None:
            self._timer.cancel()
        delay = max(0.0, (wake - _now_ms()) / 1000)
        self._timer = asyncio.get_running_loop().call_later(delay, self._wake)

    def _wake(self) -> None:
        self._timer = None
        assigned = self._consumer.assignment()
        full = self._dispatch.paused
        if ready := [tp for tp in self._due.expired(_now_ms()) if tp in assigned and tp not in full]:
            self._consumer.resume(*ready)
        self._schedule()
