"""Fan-out: deliver each feed batch to the clients whose subscription matches.

Which client wants which event is `gateway.subscriptions` (pure, one matching rule); the
hub keeps the delivery: the clients, their bounded queues (events and bytes), the frames
and the replay. Each client frame is serialized once with orjson (one call for the whole
frame, several times cheaper than an event at a time), and clients that want everything
share one frame.

Nothing here awaits: a batch is routed, and a subscription is added, as one step of the
event loop. A client resuming from a cursor is paused meanwhile (`gateway.resume`
replays what it missed, then lets the live frames through).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable, Mapping
from typing import Any

from gateway.client import CLOSE_TIMEOUT_S, Client
from gateway.cursor import encode_cursor
from gateway.protocol import Selection, events_frame
from gateway.ring import Event, FeedRecord, ReplayRing
from gateway.subscriptions import Subscriptions
from jobstream.lifecycle import Lifecycle
from schemas import state_rank

log = logging.getLogger("jobstream.gateway.hub")

SHUTDOWN_CODE = 1001
SHUTDOWN_REASON = "server shutting down"


class Hub(Lifecycle):
    """The clients, their subscriptions, and the replay ring; a `jobstream.lifecycle.Service`
    with nothing to start (the feed positions it: `start_at`). `close()` closes every client
    with 1001 "server shutting down" (bounded by the clients' close timeout)."""

    def __init__(self, queue_max: int, queue_bytes: int = 8 << 20, ring: ReplayRing | None = None) -> None:
        super().__init__()
        self.queue_max = queue_max  # events a client may have queued
        self.queue_bytes = queue_bytes  # characters of frames (of any kind) a client may have queued
        self.ring = ring if ring is not None else ReplayRing()
        self.closing = False
        self._clients: set[Client] = set()
        self.subscriptions: Subscriptions[Client] = Subscriptions()
        self._cursor = encode_cursor(self.ring.positions)
        self._waiters: list[asyncio.Future[None]] = []  # `moved()` callers
        # for /metrics: events read from the feed; live frames and events sent; slow clients closed
        # and clients closed for sending too fast; events read back from Kafka for resuming clients
        self.counts = {
            "events_in": 0,
            "frames_out": 0,
            "events_out": 0,
            "slow_closed": 0,
            "flood_closed": 0,
            "events_read_back": 0,
        }

    def __len__(self) -> int:
        return len(self._clients)

    async def _shutdown(self) -> None:
        await self.close_all(SHUTDOWN_CODE, SHUTDOWN_REASON)

    @property
    def cursor(self) -> str:
        """The feed's position after the last routed batch."""
        return self._cursor

    def start_at(self, positions: Mapping[int, int]) -> None:
        """Take the feed's start position (the ring starts empty there)."""
        self.ring.start(positions)
        self._cursor = encode_cursor(self.ring.positions)
        self._wake_waiters()

    async def moved(self) -> None:
        """Return once the feed is positioned again or routes its next batch."""
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        await waiter

    def _wake_waiters(self) -> None:
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    # -- clients and subscriptions ------------------------------------------------

    def add(self, client: Client) -> None:
        self._clients.add(client)

    def remove(self, client: Client) -> None:
        """Forget a client and all its subscriptions. Idempotent."""
        self._clients.discard(client)
        self.subscriptions.forget(client)

    def drop(self, client: Client, reason: str) -> None:
        """Forget a client that sends too fast and close it with 1008 `reason`. Idempotent."""
        if client in self._clients:
            self.counts["flood_closed"] += 1
        self.remove(client)
        client.request_close(1008, reason)

    def subscribe(self, client: Client, sel: Selection) -> None:
        """Add to a connected client's subscription; raises `ProtocolError` past the per-client cap."""
        if client in self._clients:
            self.subscriptions.subscribe(client, sel)

    # -- live routing ---------------------------------------------------------------

    def dispatch(self, records: list[FeedRecord], positions: Mapping[int, int]) -> None:
        """Route one feed batch: at most one frame per client, its matching events in order."""
        self.ring.extend(records, positions)
        self._cursor = encode_cursor(self.ring.positions)
        if self._waiters:
            self._wake_waiters()
        if not self._clients:
            self.counts["events_in"] += sum(len(record[2]) for record in records)
            return
        events = [ev for record in records for ev in record[2]]
        self.counts["events_in"] += len(events)
        if not events:
            return
        subs = self.subscriptions
        if subs.everyone:
            frame = events_frame(events, self._cursor)
            for client in list(subs.everyone):
                self._live(client, frame, len(events))
        for client, matched in subs.match(events).items():
            self._live(client, events_frame(matched, self._cursor), len(matched))

    def _live(self, client: Client, frame: str, events: int) -> None:
        if client.paused:  # catching up (`gateway.resume`): it reads these from the ring later
            return
        if self.send(client, frame, events):
            self.counts["frames_out"] += 1
            self.counts["events_out"] += events

    def send(self, client: Client, frame: str, events: int = 0) -> bool:
        """Queue `frame` (holding `events` events) for `client`; every frame goes through here.

        A client whose queue would pass `queue_max` events or `queue_bytes` characters is
        removed and closed with 1008 instead, and False is returned. A frame always fits an
        empty queue, so one large batch never closes a client that keeps up; a backlog does.
        """
        if client.closing:
            return False
        if not self.fits(client, frame, events):
            if client.pending + events > self.queue_max:
                reason = f"too slow: fell more than {self.queue_max} events behind"
            else:
                reason = f"too slow: more than {self.queue_bytes} bytes queued"
            log.warning(
                "ws client too slow, closing client=%s backlog=%d chars=%d",
                client.id,
                client.pending,
                client.pending_chars,
            )
            self.remove(client)
            client.request_close(1008, reason)
            self.counts["slow_closed"] += 1
            return False
        client.push(frame, events)
        return True

    def fits(self, client: Client, frame: str, events: int = 0) -> bool:
        """Whether `send` would queue `frame` rather than close the client."""
        if not client.pending_chars:
            return True  # a frame always fits an empty queue
        within_events = client.pending + events <= self.queue_max
        return within_events and client.pending_chars + len(frame) <= self.queue_bytes

    # -- snapshots ----------------------------------------------------------------------

    def recent(self, client: Client, job_ids: Iterable[str], min_rank: Mapping[str, int]) -> None:
        """Queue the ring's events of these jobs not older than their snapshot's rank.

        Closes the window between the projection (read a moment ago) and the live feed.
        """
        events = [
            ev
            for ev in self.ring.for_jobs(job_ids)
            if state_rank(ev["state"], _attempt(ev)) >= min_rank.get(ev["job_id"], -1)
            and (client.sees is None or client.sees(ev.get("type") or ""))
        ]
        if events:
            self.send(client, events_frame(events, self._cursor), len(events))

    async def close_all(self, code: int, reason: str) -> None:
        """Close every client with `code`; refuse new ones. Returns when all are closed
        (or after the close timeout). Idempotent."""
        self.closing = True
        clients = list(self._clients)
        for client in clients:
            self.remove(client)
            client.request_close(code, reason)
        if clients:
            log.info("ws closing clients=%d code=%d", len(clients), code)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(CLOSE_TIMEOUT_S + 1):
                    await asyncio.gather(*(c.wait_closed() for c in clients))


def _attempt(ev: Event) -> int:
    value: Any = ev.get("attempt")
    return value if isinstance(value, int) else 1
