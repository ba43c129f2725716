"""Publishing status events, coalesced.

Events are buffered and flushed as one record per status partition (a JSON array), so a
burst of thousands of state changes costs a handful of Kafka sends. A job's events always
go to the same partition (`schemas.partition_for` of the job id), so they keep their order.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from jobstream.futures import observe
from jobstream.lifecycle import Lifecycle
from schemas import encode_status_batch, partition_for

log = logging.getLogger("jobstream.status_publisher")

Callback = Callable[[BaseException | None], None]

MAX_EVENTS_PER_RECORD = 2_000


class StatusPublisher(Lifecycle):
    """Buffers events and flushes them in the background; a `jobstream.lifecycle.Service`.

    `publish()` never waits. Its callback runs once the record holding the event is
    acknowledged by Kafka (with None) or has failed (with the error).

    `hold`, when given, is awaited before each background flush: events about to be
    published (a worker's completions being recorded in Redis) then join the flush instead
    of waiting a whole Kafka round trip behind it (the producer has one request in flight
    per broker). It must return within a few milliseconds.

    `close()` flushes, and returns within about `close_timeout_s` even if Kafka never
    answers: a shutdown must not hang on it (records still unacknowledged are then up to
    the producer's own timeout).
    """

    def __init__(
        self,
        producer: Any,
        topic: str,
        partitions: int,
        hold: Callable[[], Awaitable[None]] | None = None,
        *,
        close_timeout_s: float = 15.0,
    ) -> None:
        super().__init__()
        self._close_timeout_s = close_timeout_s
        self._producer = producer
        self._topic = topic
        self._partitions = partitions
        self._hold = hold
        self._buffer: list[tuple[dict[str, Any], Callback | None]] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._inflight = 0  # records handed to the producer and not settled yet
        self._drained = asyncio.Event()  # set while `_inflight` is 0
        self._drained.set()

    async def _startup(self) -> None:
        self._task = asyncio.create_task(self._run(), name="status-publisher")

    def publish(self, event: dict[str, Any], callback: Callback | None = None) -> None:
        self._buffer.append((event, callback))
        self._wake.set()

    async def send_now(self, events: list[dict[str, Any]]) -> asyncio.Future[None]:
        """Hand `events` (behind anything buffered) to the producer now; the future resolves
        when Kafka has all of them, or fails with the first error.

        Why now: the callers wait for this future before producing the job or retry record
        the events announce (so no worker's event can overtake them), and a wait must not
        include the coalescing delay.
        """
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        fut.add_done_callback(observe)
        left = len(events)

        def done(err: BaseException | None) -> None:
            nonlocal left
            left -= 1
            if fut.done():
                return
            if err is not None:
                fut.set_exception(err)
            elif left == 0:
                fut.set_result(None)

        if not events:
            fut.set_result(None)
        self._buffer.extend((e, done) for e in events)
        await self._send_buffered()
        return fut

    async def flush(self) -> None:
        """Send what is buffered and wait until Kafka has acknowledged everything sent."""
        await self._send_buffered()
        await self._drained.wait()

    async def _shutdown(self) -> None:
        """Flush, then stop the background task (bounded by `close_timeout_s`)."""
        self._wake.set()
        try:
            async with asyncio.timeout(self._close_timeout_s):
                if self._task is not None:
                    # not cancelled: a cancel between taking the buffer and sending it would lose it
                    with contextlib.suppress(Exception):
                        await asyncio.shield(self._task)
                await self.flush()
        except TimeoutError:
            log.warning("status publisher closed with %d records unacknowledged", self._inflight)

    async def _run(self) -> None:
        while not self._closing:
            await self._wake.wait()
            self._wake.clear()
            await asyncio.sleep(0)  # let the events of this loop turn join the flush
            try:
                if self._hold is not None:
                    await self._hold()
                await self._send_buffered()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("status flush failed")

    async def _send_buffered(self) -> None:
        if not self._buffer:
            return
        batch, self._buffer = self._buffer, []
        by_partition: dict[int, list[tuple[dict[str, Any], Callback | None]]] = {}
        n = self._partitions
        for item in batch:
            by_partition.setdefault(partition_for(item[0]["job_id"], n), []).append(item)
        for partition, items in by_partition.items():
            for i in range(0, len(items), MAX_EVENTS_PER_RECORD):
                chunk = items[i : i + MAX_EVENTS_PER_RECORD]
                value = encode_status_batch([e for e, _ in chunk])
                callbacks = [cb for _, cb in chunk if cb is not None]
                settled = self._settled(callbacks)
                self._inflight += 1
                self._drained.clear()
                try:
                    await self._producer.send_notify(settled, self._topic, value, partition=partition)
                except Exception as exc:
                    settled(exc)

    def _settled(self, callbacks: list[Callback]) -> Callback:
        """What runs when a record is acknowledged or failed: in that very loop step (no
        future), so a caller waiting on `send_now` sends its job records in time for the
        producer's next request."""

        def done(err: BaseException | None) -> None:
            self._inflight -= 1
            if not self._inflight:
                self._drained.set()
            for cb in callbacks:
                try:
                    cb(err)
                except Exception:
                    log.exception("status callback failed")

        return done
