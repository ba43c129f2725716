"""Group commit: many concurrent writers, one flush.

Callers hand items to `GroupCommit.write()` and get a future. A single background task
takes everything pending, passes it to the flush function in one call (for the
projection: one pipelined Redis round trip), and resolves every caller's future with the
outcome. While a flush is in flight new items accumulate, so under load the batch grows
by itself and the cost per item falls; idle, an item is flushed on the next loop turn.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from typing import Generic, Protocol, TypeVar

from jobstream.futures import observe
from jobstream.lifecycle import Lifecycle

log = logging.getLogger("jobstream.producer.groupcommit")

T = TypeVar("T")


class Flush(Protocol[T]):
    """Writes a batch of items; raising fails every write in the batch."""

    async def __call__(self, items: list[T], /) -> None: ...


class GroupCommitClosed(RuntimeError):
    """`write()` was called after `close()`."""


class GroupCommit(Lifecycle, Generic[T]):
    """Coalesces `write()`s into flushes of at most `max_items` items (a call's items are
    never split). A `jobstream.lifecycle.Service`: `close()` stops accepting writes and
    flushes what is pending (each flush as bounded as the flush function)."""

    def __init__(self, flush: Flush[T], *, max_items: int = 10_000, name: str = "group-commit") -> None:
        super().__init__()
        self._flush = flush
        self._max_items = max_items
        self._name = name
        self._pending: list[tuple[Sequence[T], asyncio.Future[None]]] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.flushes = 0  # how many flushes ran: lets tests see that writes were coalesced

    async def _startup(self) -> None:
        self._task = asyncio.create_task(self._run(), name=self._name)

    def write(self, items: Sequence[T]) -> asyncio.Future[None]:
        """Queue `items`; the future resolves once the flush holding them has finished."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        fut.add_done_callback(observe)
        if self._closing:
            fut.set_exception(GroupCommitClosed(f"{self._name} is closed"))
            return fut
        if not items:
            fut.set_result(None)
            return fut
        self._pending.append((items, fut))
        self._wake.set()
        return fut

    async def write_within(
        self, items: Sequence[T], deadline: float, at_least_s: float = 1.0
    ) -> BaseException | None:
        """`write()` and wait until `deadline` (loop time), but at least `at_least_s`; None once
        written, else why not (`TimeoutError` if not yet). Never raises: for callers whose
        answer does not depend on the write (a projection the projector writes anyway)."""
        write = self.write(items)
        await asyncio.wait([write], timeout=max(at_least_s, deadline - asyncio.get_running_loop().time()))
        if not write.done():
            return TimeoutError("not written in time")
        return asyncio.CancelledError() if write.cancelled() else write.exception()

    @property
    def pending(self) -> int:
        """Writes waiting for a flush."""
        return len(self._pending)

    async def _shutdown(self) -> None:
        """Stop accepting writes, flush what is pending, stop the task."""
        self._wake.set()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        while self._pending:  # never started, or the task was cancelled mid-way
            await self._flush_some()

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._pending:
                await self._flush_some()
            if self._closing:
                return

    async def _flush_some(self) -> None:
        take = 0
        count = 0
        for items, _ in self._pending:
            if take and count + len(items) > self._max_items:
                break
            take += 1
            count += len(items)
        batch, self._pending = self._pending[:take], self._pending[take:]
        flat: list[T] = [item for items, _ in batch for item in items]
        try:
            await self._flush(flat)
        except asyncio.CancelledError:
            self._fail(batch, GroupCommitClosed(f"{self._name} was cancelled"))
            raise
        except Exception as exc:
            self._fail(batch, exc)
        else:
            for _, fut in batch:
                if not fut.done():
                    fut.set_result(None)
        finally:
            self.flushes += 1

    @staticmethod
    def _fail(batch: list[tuple[Sequence[T], asyncio.Future[None]]], exc: BaseException) -> None:
        for _, fut in batch:
            if not fut.done():
                fut.set_exception(exc)
