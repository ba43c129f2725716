"""Completed outcomes on their way out: recorded in Redis first, then sent to Kafka.

A job's `completed` status is handed on (to the status publisher) only once Redis holds
its record, id and event (`DoneStore.record`). So whenever a worker dies, every completed
event that Kafka may hold belongs to a recorded job: a successor that is redelivered the
job skips it, and sends the event again when the record was never confirmed (the dead
worker may have died before Kafka had it). A job completes at most once while Redis is
reachable.

Guarantees and costs:
- one pipelined write per event-loop turn for all the completions of that turn, so the
  hot path gains no round trip per job, only the latency of one Redis write before a
  completed status is sent; writes overlap (up to `max_writes`); the status publisher
  waits for the writes under way before it flushes (`settle`), so a short job's `active`
  and `completed` events still share one record;
- `add` never waits; `flush` returns once everything added before it has been handed on;
- Redis failing, or slower than `timeout_s`: the batch is handed on unrecorded (logged),
  so completions never stall; the job may then run again after a kill (at-least-once).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any, Generic, TypeVar

import orjson
from redis.exceptions import RedisError

from consumer.donestore import DoneStore
from jobstream.lifecycle import Lifecycle

log = logging.getLogger("jobstream.worker")

T = TypeVar("T")
Completed = tuple[T, dict[str, Any]]  # what the caller keys it by, and the completed event


class Completions(Lifecycle, Generic[T]):
    """Records completed events in Redis, then hands them to `send`. A
    `jobstream.lifecycle.Service` with nothing to start: `close()` hands on what is queued
    (each write bounded by `timeout_s`)."""

    def __init__(
        self,
        done: DoneStore,
        send: Callable[[list[Completed[T]]], None],
        timeout_s: float = 1.0,
        max_writes: int = 4,
    ) -> None:
        super().__init__()
        self._done = done
        self._send = send
        self._timeout_s = timeout_s
        self._max_writes = max_writes
        self._pending: list[Completed[T]] = []
        self._scheduled = False  # a write will take `_pending` at its first step
        self._writes: set[asyncio.Task[None]] = set()
        self._warned_at = 0.0

    def add(self, key: T, event: dict[str, Any]) -> None:
        """Queue a completed event (it must carry `job_id`); never waits. The completions of
        one event-loop turn share one write, which does not wait for earlier writes (up to
        `max_writes` at once), so a slow reply does not hold later completions back."""
        self._pending.append((key, event))
        self._schedule()

    async def flush(self) -> None:
        """Return once every completion added so far has been handed to `send`."""
        while self._pending or self._writes:
            self._schedule()
            await asyncio.gather(*self._writes)

    async def settle(self, timeout_s: float = 0.01) -> None:
        """Wait for the writes under way now (not for later ones), at most `timeout_s`: the
        status publisher's `hold`, so a job's `completed` event joins the flush that carries
        its `active` event when the job ran within a Redis round trip. A slow Redis delays
        each flush by `timeout_s` at most."""
        if self._writes:
            await asyncio.wait(list(self._writes), timeout=timeout_s)

    async def _shutdown(self) -> None:
        await self.flush()

    def _schedule(self) -> None:
        if self._scheduled or not self._pending or len(self._writes) >= self._max_writes:
            return
        self._scheduled = True
        task = asyncio.create_task(self._write(), name="record-completions")
        self._writes.add(task)
        task.add_done_callback(self._written)

    def _written(self, task: asyncio.Task[None]) -> None:
        self._writes.discard(task)
        self._schedule()  # what gathered while every write slot was busy

    async def _write(self) -> None:
        self._scheduled = False
        batch, self._pending = self._pending, []
        if batch:
            await self._record(batch)
            self._send(batch)

    async def _record(self, batch: list[Completed[T]]) -> None:
        events = {event["job_id"]: orjson.dumps(event) for _, event in batch}
        try:
            # awaited in this task, not a task of its own: the write goes out in this very
            # step (no extra event-loop turn while the completions are unrecorded)
            async with asyncio.timeout(self._timeout_s):
                await self._done.record(events)
        except TimeoutError:
            self._warn(f"recording {len(events)} completions took over {self._timeout_s}s; sent unrecorded")
        except (RedisError, OSError) as exc:
            self._warn(f"could not record {len(events)} completions; sent unrecorded: {exc}")
        except Exception:  # never hold completions back
            log.exception("recording %d completions failed; sent unrecorded", len(events))

    def _warn(self, msg: str) -> None:
        now = time.monotonic()
        if now - self._warned_at > 10:
            self._warned_at = now
            log.warning(msg)
