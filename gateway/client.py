"""One WebSocket client: a bounded queue of frames and the one task that sends them.

The hub pushes ready-made frames synchronously; the sender task writes them in order. The
hub never waits for a client: a client whose queue would hold more than the hub's bounds
(events, and characters of every frame queued: events, snapshots, replies, errors) is
closed (1008) by the hub instead (the websockets broadcast pattern). The client keeps the
two counts, in O(1) per frame; a frame is counted from `push` until it is written.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections import deque
from collections.abc import Callable

from starlette.websockets import WebSocket

log = logging.getLogger("jobstream.gateway.client")

CLOSE_TIMEOUT_S = 5.0  # how long a close frame may wait behind a full socket buffer

_ids = itertools.count(1)


class Client:
    """A connected client and its subscription; a `jobstream.lifecycle.Service`.

    `push()` never waits. `request_close()` is idempotent: it stops the sender, drops what
    is queued, and sends one close frame (bounded by `CLOSE_TIMEOUT_S`). `close()` ends
    the client without a close frame (the peer is gone) and returns once the sender task
    has finished.
    """

    __slots__ = (
        "_closed",
        "_closer",
        "_frames",
        "_idle",
        "_sender",
        "_wake",
        "_ws",
        "all",
        "close_code",
        "id",
        "jobs",
        "paused",
        "pending",
        "pending_chars",
        "sees",
        "types",
    )

    def __init__(self, ws: WebSocket) -> None:
        self.id = next(_ids)
        self._ws = ws
        self.jobs: set[str] = set()
        self.types: set[str] = set()
        self.all = False
        self.sees: Callable[[str], bool] | None = None  # the job types its API key may see; None: all
        self.pending = 0  # events queued or being written
        self.pending_chars = 0  # characters of the frames queued or being written
        self.close_code: int | None = None
        # True while a resume replays what the client missed: live frames skip it meanwhile
        # (they stay in the ring, which the resume reads last)
        self.paused = False
        self._frames: deque[tuple[str, int]] = deque()
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()  # set while every queued frame is written
        self._idle.set()
        self._closed = asyncio.Event()
        self._sender: asyncio.Task[None] | None = None
        self._closer: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        return f"<Client {self.id}>"

    async def __aenter__(self) -> Client:
        await self.start()
        return self

    async def start(self) -> None:
        """Start the sender task. Does nothing if started or closed before."""
        if self._sender is None and not self.closing:
            self._sender = asyncio.create_task(self._send_loop(), name=f"ws-sender-{self.id}")

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def closing(self) -> bool:
        return self.close_code is not None or self._closed.is_set()

    def push(self, frame: str, events: int = 0) -> None:
        """Queue a frame carrying `events` events (0 for control frames); never waits."""
        if self.closing:
            return
        self._frames.append((frame, events))
        self.pending += events
        self.pending_chars += len(frame)
        self._idle.clear()
        self._wake.set()

    def request_close(self, code: int, reason: str) -> None:
        """Close with a close frame, in the background. Idempotent; never waits."""
        if self.closing:
            return
        self.close_code = code
        self._frames.clear()
        self.pending = self.pending_chars = 0
        self._closer = asyncio.create_task(self._close_ws(code, reason), name=f"ws-closer-{self.id}")

    async def wait_closed(self) -> None:
        """Return once the client is closed (by `request_close` or `close`)."""
        await self._closed.wait()

    async def drained(self) -> bool:
        """Wait until every queued frame is written: True, or False once the client is closing."""
        if self._idle.is_set() or self.closing:
            return not self.closing
        idle = asyncio.ensure_future(self._idle.wait())
        closed = asyncio.ensure_future(self._closed.wait())
        try:
            await asyncio.wait({idle, closed}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            idle.cancel()
            closed.cancel()
        return not self.closing

    async def close(self) -> None:
        """End the client: stop the sender (and a pending close frame). Idempotent."""
        if self._closer is not None:
            await self._closer  # let an asked-for close frame go out first
        await self._stop_sender()
        self._frames.clear()
        self._closed.set()

    async def _stop_sender(self) -> None:
        task, self._sender = self._sender, None
        if task is not None and not task.done():
            task.cancel()
        if task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _close_ws(self, code: int, reason: str) -> None:
        # The sender may be stuck writing to a peer that does not read: cancel it first,
        # a frame is either fully handed to the transport or not at all.
        await self._stop_sender()
        try:
            async with asyncio.timeout(CLOSE_TIMEOUT_S):
                await self._ws.close(code, reason)
        except TimeoutError:
            log.info("ws close timed out client=%s code=%s", self.id, code)
        except Exception as exc:  # the peer left first: nothing to close
            log.debug("ws close failed client=%s: %r", self.id, exc)
        finally:
            self._closed.set()

    async def _send_loop(self) -> None:
        frames = self._frames
        try:
            while True:
                while frames:
                    frame, events = frames.popleft()
                    await self._ws.send_text(frame)
                    # Counted until written, so a peer that does not read keeps its backlog.
                    self.pending -= events
                    self.pending_chars -= len(frame)
                self._wake.clear()
                self._idle.set()
                await self._wake.wait()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # peer gone mid-write: the client is over
            log.debug("ws send failed client=%s: %r", self.id, exc)
            self._frames.clear()
            self._closed.set()
