"""The runner pool: `concurrency` tasks that take records from `Dispatch` and run them.

Guarantees:
- At most `concurrency` handlers run at once (one per runner task); an idle runner waits
  on a future of its own, woken only when records are there to take (`wake`): no polling.
- A retry record is held in `Dispatch` until its due time, with one timer for the next due
  time of all (`release`); a record waiting for its time or for a rate-limit token holds no
  runner.
- `drain` returns once the matching running jobs have ended; those still running after
  its timeout are aborted (cancelled, and left uncommitted for redelivery), and a handler
  that ignores cancellation is waited for 5 s more at most.
- A job cancelled through the control topic while it runs is aborted (`cancel_requested`).
- Copies of a job that waited behind it (`Dispatch.finished`) are handed to `on_copy`
  once it ended, never run.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

from consumer.dispatch import Dispatch
from consumer.intake import Item
from consumer.pauses import Pauses
from schemas import now_ms

log = logging.getLogger("jobstream.worker")


class Runners:
    """The runner tasks' shared state. `run()` is one runner; the worker spawns
    `concurrency` of them and keeps them."""

    def __init__(
        self,
        dispatch: Dispatch[Item],
        pauses: Pauses,
        execute: Callable[[Item], Awaitable[None]],
        buffer_per_partition: int,
        worker_id: str,
        on_copy: Callable[[Item], None],
        on_starved: Callable[[], None] | None = None,
    ) -> None:
        self._dispatch = dispatch
        self._pauses = pauses
        self._execute = execute
        self._resume_at = buffer_per_partition // 2
        self._id = worker_id
        self._on_starved = on_starved  # the rate limits, told that records wait for tokens
        self._on_copy = on_copy  # a copy of a job that ended: not run
        self.running: set[Item] = set()
        self._idle: list[asyncio.Future[None]] = []
        self._changed = asyncio.Event()  # a run ended: drains re-check
        self._due_timer: asyncio.TimerHandle | None = None

    def __len__(self) -> int:
        return len(self.running)

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        dispatch = self._dispatch
        while True:
            item = dispatch.take(time.monotonic() * 1000)
            if item is None:
                if self._on_starved is not None and dispatch.starved():
                    self._on_starved()
                fut = loop.create_future()
                self._idle.append(fut)
                await fut
                continue
            if dispatch.buffered(item.tp) <= self._resume_at:
                self._pauses.buffer_changed({item.tp})
            item.task = asyncio.current_task()
            self.running.add(item)
            try:
                await self._execute(item)
            finally:
                self.running.discard(item)
                item.task = None
                copies = dispatch.finished(item, time.monotonic() * 1000, ended=not item.aborted)
                for copy in copies:
                    log.info(
                        "job %s %s: a copy waited while it ran; not run again", copy.job.id, copy.job.type
                    )
                    self._on_copy(copy)
                if copies:
                    self._pauses.buffer_changed({copy.tp for copy in copies})
                self._changed.set()

    def wake(self, n: int) -> None:
        """Wake up to `n` idle runners."""
        while n > 0 and self._idle:
            fut = self._idle.pop()
            if not fut.done():
                fut.set_result(None)
                n -= 1

    def release(self) -> None:
        """Let held retry records that are due go on, wake runners, and set the timer for
        the next due time: no polling, and no handler slot held while a record waits."""
        self.stop_timer()
        nxt = self._dispatch.release(time.monotonic() * 1000, now_ms())
        self.wake(len(self._dispatch))
        if nxt is not None:
            delay = max(0.0, (nxt - now_ms()) / 1000)
            self._due_timer = asyncio.get_running_loop().call_later(delay, self.release)

    def stop_timer(self) -> None:
        if self._due_timer is not None:
            self._due_timer.cancel()
            self._due_timer = None

    async def drain(self, which: Callable[[Item], bool], timeout_s: float) -> None:
        """Wait for matching running jobs to end; abort those still running after `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        while any(which(i) for i in self.running):
            left = deadline - time.monotonic()
            if left <= 0:
                stuck = [i for i in self.running if which(i)]
                log.warning("worker %s: drain timeout, aborting %d jobs", self._id, len(stuck))
                for item in stuck:
                    self.abort(item)
                deadline = time.monotonic() + 5.0  # a handler that ignores cancellation
                timeout_s = 0
                if not stuck:
                    break
                continue
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), left)
            if timeout_s == 0 and time.monotonic() > deadline:
                break

    def abort(self, item: Item) -> None:
        """Cancel a running job; it is left uncommitted (or reported cancelled, when it was
        asked to be)."""
        if item.task is not None and not item.aborted:
            item.aborted = True
            item.task.cancel()

    def abort_all(self) -> None:
        for item in list(self.running):
            self.abort(item)

    def cancel_requested(self, job_id: str) -> None:
        for item in list(self.running):
            if item.job.id == job_id:
                log.info("job %s %s cancelled while running", job_id, item.job.type)
                self.abort(item)
