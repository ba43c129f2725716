"""Pausing partitions whose buffer is full.

A partition is paused when its records waiting to start (or waiting for their due time)
reach the buffer limit, and resumed once half of them have gone; other partitions keep
flowing. Pause state is lost in a rebalance, and so is the buffer of a revoked partition:
a partition assigned again starts unpaused with an empty buffer.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

from consumer.dispatch import Dispatch


class Pauses:
    def __init__(self, consumer: Any, dispatch: Dispatch[Any]) -> None:
        self._consumer = consumer
        self._dispatch = dispatch

    def buffer_changed(self, tps: set[Hashable]) -> None:
        """Pause partitions whose buffer filled; resume those half drained."""
        pause, resume = self._dispatch.pause_changes(tps)
        assigned = self._consumer.assignment()
        if pause := [tp for tp in pause if tp in assigned]:
            self._consumer.pause(*pause)
        if resume := [tp for tp in resume if tp in assigned]:
            self._consumer.resume(*resume)
