"""Resume: give a client that comes back with a cursor every event it has not seen, once.

A cursor is the status topic's per-partition next offsets, the same on every gateway. What
this gateway's replay ring still holds is replayed from the ring; what it no longer holds,
or never held (the client comes from another replica, or from before a restart), is read
back from Kafka first. Every event the topic still retains after the cursor arrives, in
each partition's order, then the live stream: no gap, no duplicate.

How the two meet: the client is *paused* while it catches up (live frames skip it; they
are in the ring). Each step reads a bounded chunk, from Kafka while the ring lacks what
comes next, else from the ring, and queues it as one frame once the client has room. The
last step, when the ring holds the rest and it fits one frame, queues it and unpauses the
client in the same step of the event loop, so the next live batch follows it directly.
A client that resumes from a cursor the ring covers gets its replay in that first step,
without waiting, as before.

A cursor from a gateway whose feed was ahead of this one's waits until this feed has read
as far, so its live frames repeat nothing the client has seen.

Bounds: at most `READERS` clients read from Kafka at once (each with its own consumer, no
group); the others wait their turn, paused. A client that does not take a frame within
`DRAIN_TIMEOUT_S` is closed as too slow. A cursor older than the topic's retention resumes
from the oldest event retained. When Kafka does not answer for `STALL_S`, the client gets
an error frame (`replay_failed`) saying so and continues with the live stream; so does
one whose cursor this gateway's feed does not reach within `STALL_S` (a cursor from
another deployment, or Kafka down).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from gateway.client import Client
from gateway.cursor import encode_cursor
from gateway.errors import ProtocolError
from gateway.feed import decode_record
from gateway.hub import Hub
from gateway.protocol import error_frame, events_frame
from gateway.ring import Event, FeedRecord
from gateway.subscriptions import wants
from jobstream.kafka_security import kafka_options
from jobstream.settings import GatewaySettings

log = logging.getLogger("jobstream.gateway.resume")

FRAME_EVENTS = 5_000  # events a replay frame carries (a record is never split, so a few more)
READERS = 8
DRAIN_TIMEOUT_S = 30.0
STALL_S = 10.0
FETCH_TIMEOUT_MS = 500
RECORDS_PER_FETCH = 4  # status records hold up to 2,000 events each


class StatusReader:
    """Reads ranges of the status topic back, for one resuming client at a time.

    `read(start, until)` returns the records of each partition in `until` from `start` up
    to (not including) `until`, a bounded chunk per call, and the positions reached. It
    seeks only where a call starts somewhere else than the last one stopped.
    """

    def __init__(self, consumer: Any, topic: str) -> None:
        self._consumer = consumer
        self._topic = topic
        self._assigned: frozenset[int] = frozenset()
        self._at: dict[int, int] = {}  # the consumer's position per assigned partition

    async def read(
        self, start: Mapping[int, int], until: Mapping[int, int]
    ) -> tuple[list[FeedRecord], dict[int, int]]:
        """At least one record, or every partition at `until`, or `TimeoutError` after `STALL_S`
        without progress; stops after about `FRAME_EVENTS` events."""
        consumer, topic = self._consumer, self._topic
        tps = {p: TopicPartition(topic, p) for p in until}
        if frozenset(until) != self._assigned:
            consumer.assign(list(tps.values()))
            self._assigned, self._at = frozenset(until), {}
        for p, tp in tps.items():
            if self._at.get(p) != start[p]:
                consumer.seek(tp, start[p])
                self._at[p] = start[p]
        consumer.resume(*tps.values())
        records: list[FeedRecord] = []
        events = 0
        reached = {p: min(start[p], until[p]) for p in until}
        stalled_at = time.monotonic() + STALL_S
        while True:
            batch = await consumer.getmany(
                timeout_ms=0 if records else FETCH_TIMEOUT_MS, max_records=RECORDS_PER_FETCH
            )
            for tp, messages in batch.items():
                p = tp.partition
                for m in messages:
                    if m.offset >= until[p]:
                        break
                    got = decode_record(p, m.offset, m.value)
                    if got is not None:
                        records.append((p, m.offset, got))
                        events += len(got)
            moved = False
            for p, tp in tps.items():
                self._at[p] = await consumer.position(tp)
                at = min(self._at[p], until[p])
                if at != reached[p]:
                    reached[p], moved = at, True
                if at >= until[p]:
                    consumer.pause(tp)
            done = all(reached[p] >= until[p] for p in until)
            if done or events >= FRAME_EVENTS or (records and not batch):
                return records, reached
            if moved:
                stalled_at = time.monotonic() + STALL_S
            elif time.monotonic() > stalled_at:
                raise TimeoutError(f"the status topic gave nothing back for {STALL_S:g} s")


class Backfill:
    """Opens `StatusReader`s, at most `READERS` at once (the others wait)."""

    def __init__(self, settings: GatewaySettings, readers: int = READERS) -> None:
        self._settings = settings
        self._slots = asyncio.Semaphore(readers)

    @contextlib.asynccontextmanager
    async def reader(self) -> AsyncIterator[StatusReader]:
        s = self._settings
        async with self._slots:
            consumer = AIOKafkaConsumer(
                **kafka_options(s),
                group_id=None,
                enable_auto_commit=False,
                auto_offset_reset="earliest",  # a cursor older than retention: the oldest retained
                client_id=f"jobstream-gateway-resume-{s.topic_prefix}",
            )
            try:
                async with asyncio.timeout(STALL_S):
                    await consumer.start()
                yield StatusReader(consumer, s.topics.status)
            finally:
                await consumer.stop()


def take_frame(client: Client, records: list[FeedRecord], position: dict[int, int]) -> list[Event]:
    """The client's events in the first of the ring's records, until about `FRAME_EVENTS`;
    `position` moves past each record taken."""
    events: list[Event] = []
    for partition, offset, record_events in records:
        if len(events) >= FRAME_EVENTS:
            break
        events.extend(ev for ev in record_events if wants(client, ev))
        position[partition] = offset + 1
    return events


async def resume(hub: Hub, client: Client, cursor: Mapping[int, int], backfill: Backfill) -> None:
    """Replay what the client missed after `cursor`, then let live frames through.

    Raises `ProtocolError` for a cursor that lacks one of the topic's partitions. The
    caller has subscribed the client and set `client.paused` in the same step of the loop.
    """
    position = dict(cursor)
    read_back = hub.counts["events_read_back"]
    try:
        async with contextlib.AsyncExitStack() as stack:
            reader: StatusReader | None = None
            while not client.closing:
                gaps = hub.ring.gaps(position)
                if gaps is None:
                    raise ProtocolError(
                        "cursor lacks some of the status topic's partitions (another deployment's?); "
                        "subscribe without a cursor",
                        code="bad_cursor",
                    )
                if _behind(hub, position):
                    await _feed_moves(hub)
                    continue
                if not gaps and _finish(hub, client, position):
                    read_back = hub.counts["events_read_back"] - read_back
                    if read_back:
                        log.info("ws resumed client=%s from=%s read_back=%d now=%s",
                                 client.id, dict(cursor), read_back, hub.ring.positions)  # fmt: skip
                    return
                if gaps:
                    if reader is None:
                        reader = await stack.enter_async_context(backfill.reader())
                    records, reached = await reader.read(position, gaps)  # about one frame's worth
                    events = [ev for r in records for ev in r[2] if wants(client, ev)]
                    hub.counts["events_read_back"] += sum(len(r[2]) for r in records)
                    for p, at in reached.items():  # past every record read
                        position[p] = max(position[p], at)
                else:
                    events = take_frame(client, hub.ring.since(position) or [], position)
                if events:
                    frame = events_frame(events, encode_cursor(position))
                    if not await _send(hub, client, frame, len(events)):
                        return
    except (KafkaError, OSError, TimeoutError) as exc:
        log.warning("ws resume failed client=%s: %r", client.id, exc)
        hub.send(
            client,
            error_frame(
                f"events missed since your cursor could not be read back from Kafka ({exc}); "
                "live events follow: subscribe again with your last cursor to retry",
                code="replay_failed",
            ),
        )
    finally:
        client.paused = False


def _behind(hub: Hub, position: Mapping[int, int]) -> bool:
    """Whether the feed is not positioned yet, or has not read up to `position` somewhere:
    its live frames would repeat what the client saw from another gateway."""
    at = hub.ring.positions
    return not at or any(offset > at[p] for p, offset in position.items() if p in at)


async def _feed_moves(hub: Hub) -> None:
    try:
        async with asyncio.timeout(STALL_S):
            await hub.moved()
    except TimeoutError:
        raise TimeoutError(f"this gateway's feed did not reach your cursor within {STALL_S:g} s") from None


def _finish(hub: Hub, client: Client, position: dict[int, int]) -> bool:
    """When the ring holds the rest and it fits one frame and the client's queue: queue it
    and unpause the client, with no await in between. False (nothing done) otherwise."""
    records = hub.ring.since(position) or []
    events = [ev for r in records for ev in r[2] if wants(client, ev)]
    if len(events) > FRAME_EVENTS:
        return False
    if events:
        frame = events_frame(events, hub.cursor)
        if not hub.fits(client, frame, len(events)):
            return False
        hub.send(client, frame, len(events))
    client.paused = False
    return True


async def _send(hub: Hub, client: Client, frame: str, events: int) -> bool:
    """Queue a replay frame once the client has room for it; False when the client is gone
    (closed as too slow after `DRAIN_TIMEOUT_S`)."""
    if not hub.fits(client, frame, events):
        try:
            async with asyncio.timeout(DRAIN_TIMEOUT_S):
                if not await client.drained():
                    return False
        except TimeoutError:
            hub.remove(client)
            client.request_close(1008, f"too slow: took no replay frame for {DRAIN_TIMEOUT_S:g} s")
            hub.counts["slow_closed"] += 1
            return False
    return hub.send(client, frame, events)
