"""The gateway: cursor codec and ring (pure), hub routing (fake socket), and the real app
served by uvicorn against the real broker and Redis."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, cast

import httpx
import orjson
import pytest
import uvicorn
from fastapi import FastAPI
from prometheus_client.parser import text_string_to_metric_families
from starlette.websockets import WebSocket
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.typing import Origin

from gateway import MAX_MESSAGE_BYTES, create_app
from gateway import resume as resume_module
from gateway.client import Client
from gateway.cursor import decode_cursor, encode_cursor
from gateway.errors import ProtocolError
from gateway.hub import Hub
from gateway.protocol import Selection, error_frame
from gateway.ring import ReplayRing
from gateway.service import Gateway
from jobstream.cli.procs import free_port
from jobstream.cursor import CursorError
from jobstream.kafka import make_producer
from jobstream.serving import server_options
from jobstream.settings import GatewaySettings, Settings
from jobstream.status_publisher import StatusPublisher
from jobstream.throttle import Throttle
from tests.conftest import MS
from tests.helpers import eventually

S = 1000 * MS  # one second, scaled like every timeout of the suite


def event(
    job_id: str, state: str, *, type_: str = "demo.echo", attempt: int = 1, **extra: Any
) -> dict[str, Any]:
    return {
        "job_id": job_id,
        "type": type_,
        "state": state,
        "attempt": attempt,
        "at": int(time.time() * 1000),
        **extra,
    }


# -- pure: cursor codec -------------------------------------------------------------------


def test_cursor_round_trips() -> None:
    """decode(encode(p)) == p, including empty, sparse and 64-bit positions."""
    for positions in ({}, {0: 0}, {0: 5, 1: 0, 2: 1 << 40}, {3: 7, 900: (1 << 63) - 1}):
        assert decode_cursor(encode_cursor(positions)) == positions


def test_cursor_is_url_safe_and_compact() -> None:
    """A cursor uses only URL-safe characters and stays short for a few partitions."""
    text = encode_cursor({p: 123_456_789 + p for p in range(6)})
    assert set(text) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
    assert len(text) < 48


@pytest.mark.parametrize("bad", ["", "x", "2AQA", "1!!!", "1AQ", "1AQAAA", "1" + "_" * 30])
def test_cursor_rejects_garbage(bad: str) -> None:
    """Anything encode_cursor did not write raises CursorError (a ValueError)."""
    with pytest.raises(CursorError):
        decode_cursor(bad)


def test_cursor_rejects_negative() -> None:
    """Negative partitions or offsets cannot be encoded."""
    with pytest.raises(ValueError):
        encode_cursor({0: -1})


# -- pure: replay ring --------------------------------------------------------------------


def test_ring_replays_after_cursor_and_expires_evicted() -> None:
    """since() returns records at or after the cursor, None once some were evicted."""
    ring = ReplayRing(max_events=3)
    ring.start({0: 10, 1: 5})
    a, b, c, d, e = (event(f"j{i}", "queued") for i in range(5))
    ring.extend([(0, 10, [a]), (1, 5, [b, c])], {0: 11, 1: 6})
    assert ring.since({0: 10, 1: 5}) == [(0, 10, [a]), (1, 5, [b, c])]
    assert ring.since({0: 11, 1: 5}) == [(1, 5, [b, c])]
    assert ring.since({0: 10}) is None  # a partition missing from the cursor
    ring.extend([(0, 11, [d, e])], {0: 12})
    assert len(ring) == 2
    assert ring.since({0: 10, 1: 6}) is None
    assert ring.since({0: 11, 1: 6}) == [(0, 11, [d, e])]
    assert list(ring.for_jobs(["j0", "j3", "j4"])) == [d, e]
    assert ring.positions == {0: 12, 1: 6}


# -- pure: the request throttle ----------------------------------------------------------


def test_throttle_allows_a_burst_then_the_rate() -> None:
    """A full bucket takes `burst` messages at once, then one per 1/rate seconds."""
    bucket = Throttle(rate=2.0, burst=3, now=100.0)
    assert [bucket.take(100.0) for _ in range(4)] == [True, True, True, False]
    assert not bucket.take(100.4)
    assert bucket.take(100.5)
    assert not bucket.take(100.5)
    assert [bucket.take(1_000.0) for _ in range(4)] == [True, True, True, False]  # refills up to burst
    assert bucket.wait_s() == 0.5  # the next token, at 2 a second
    assert bucket.take(1_000.0 + bucket.wait_s())


# -- hub routing, with a fake socket --------------------------------------------------------


class FakeSocket:
    def __init__(self) -> None:
        self.frames: list[dict[str, Any]] = []
        self.closed: tuple[int, str] | None = None

    async def send_text(self, text: str) -> None:
        self.frames.append(orjson.loads(text))

    async def close(self, code: int, reason: str) -> None:
        self.closed = (code, reason)


class StuckSocket(FakeSocket):
    """A peer that never reads: a send never completes."""

    async def send_text(self, text: str) -> None:
        await asyncio.Event().wait()


async def test_hub_routes_one_frame_per_client_without_duplicates() -> None:
    """Job, type and all subscriptions each get one frame per batch with only their events."""
    hub = Hub(queue_max=100)
    hub.start_at({0: 0})
    sockets = [FakeSocket() for _ in range(4)]
    async with contextlib.AsyncExitStack() as stack:
        a, b, c, d = [await stack.enter_async_context(Client(cast(WebSocket, s))) for s in sockets]
        for client in (a, b, c, d):
            hub.add(client)
        hub.subscribe(a, Selection(jobs=["j1"], types=["t1"]))
        hub.subscribe(b, Selection(all=True, jobs=["j1"]))
        hub.subscribe(c, Selection(types=["t2"]))
        hub.subscribe(d, Selection(types=["t9"]))
        evs = [
            event("j1", "queued", type_="t1"),
            event("j2", "queued", type_="t1"),
            event("j3", "x", type_="t2"),
        ]
        hub.dispatch([(0, 0, evs)], {0: 1})
        await eventually(lambda: all(s.frames for s in sockets[:3]), "frames")
        cursor = encode_cursor({0: 1})
        assert sockets[0].frames == [{"events": evs[:2], "cursor": cursor}]
        assert sockets[1].frames == [{"events": evs, "cursor": cursor}]
        assert sockets[2].frames == [{"events": evs[2:], "cursor": cursor}]
        assert sockets[3].frames == []


async def test_hub_closes_client_past_queue_max() -> None:
    """A client whose backlog would pass queue_max is closed with 1008; others keep going."""
    hub = Hub(queue_max=3)
    hub.start_at({0: 0})
    stuck, ok = StuckSocket(), FakeSocket()
    async with Client(cast(WebSocket, stuck)) as slow, Client(cast(WebSocket, ok)) as fast:
        for client in (slow, fast):
            hub.add(client)
            hub.subscribe(client, Selection(all=True))

        def frames(n: int) -> Callable[[], bool]:
            return lambda: len(ok.frames) == n

        for offset in range(3):
            hub.dispatch([(0, offset, [event("j", "queued"), event("j", "active")])], {0: offset + 1})
            await eventually(frames(offset + 1), "the fast client's frame")
        await slow.wait_closed()
        assert stuck.closed == (1008, "too slow: fell more than 3 events behind")
        assert len(hub) == 1


async def test_hub_counts_every_frame_toward_the_byte_budget() -> None:
    """Control frames (error, subscribed, snapshot) count toward a client's byte budget as
    events do: a client that never reads is closed with 1008 once its queue passes it."""
    hub = Hub(queue_max=1_000, queue_bytes=1_000)
    hub.start_at({0: 0})
    stuck = StuckSocket()
    async with Client(cast(WebSocket, stuck)) as client:
        hub.add(client)
        frame = error_frame("bad message (not json); send a subscribe")
        sent = 0
        while hub.send(client, frame):
            sent += 1
            assert sent * len(frame) <= 2_000, "the budget never closed the client"
        await client.wait_closed()
        assert stuck.closed == (1008, "too slow: more than 1000 bytes queued")
        assert len(hub) == 0 and hub.counts["slow_closed"] == 1


async def test_hub_byte_budget_bounds_big_events() -> None:
    """A few big events pass the byte budget long before the event count: the client is closed."""
    hub = Hub(queue_max=1_000, queue_bytes=50_000)
    hub.start_at({0: 0})
    stuck = StuckSocket()
    async with Client(cast(WebSocket, stuck)) as client:
        hub.add(client)
        hub.subscribe(client, Selection(all=True))
        for offset in range(3):
            hub.dispatch(
                [(0, offset, [event(f"b{offset}", "completed", result="x" * 30_000)])], {0: offset + 1}
            )
        await client.wait_closed()
        assert stuck.closed == (1008, "too slow: more than 50000 bytes queued")


def start_resume(hub: Hub, client: Client, cursor: dict[int, int]) -> asyncio.Task[None]:
    """Subscribe `client` to everything and resume it from `cursor`, as a session does."""
    hub.add(client)
    hub.subscribe(client, Selection(all=True))
    client.paused = True
    backfill = resume_module.Backfill(GatewaySettings())  # not used: the ring holds everything
    return asyncio.create_task(resume_module.resume(hub, client, cursor, backfill))


class GatedSocket(FakeSocket):
    """A peer that reads only while its gate is open."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()

    async def send_text(self, text: str) -> None:
        await self.gate.wait()
        await super().send_text(text)


async def test_resume_replays_in_frames_while_live_frames_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    """A resuming client is paused: what arrives live meanwhile reaches it from the ring after
    its replay, in order, once; each replay frame carries the cursor after its last record."""
    monkeypatch.setattr(resume_module, "FRAME_EVENTS", 2)
    hub = Hub(queue_max=3)
    hub.start_at({0: 0, 1: 0})
    e = [event(f"j{i}", "queued") for i in range(8)]
    hub.dispatch([(0, 0, e[0:2]), (1, 0, e[2:3]), (0, 1, e[3:5])], {0: 2, 1: 1})
    sock = GatedSocket()
    async with Client(cast(WebSocket, sock)) as client:
        resuming = start_resume(hub, client, {0: 0, 1: 0})
        await eventually(lambda: client.pending == 2, "the first replay frame queued")
        hub.dispatch([(0, 2, e[5:6])], {0: 3})  # live, while the client is paused
        assert client.pending == 2 and not resuming.done()
        sock.gate.set()
        await resuming
        assert not client.paused
        hub.dispatch([(1, 1, e[6:8])], {1: 2})
        await eventually(lambda: len(sock.frames) == 4, "three replay frames and one live one")
    assert sock.frames == [
        {"events": e[0:2], "cursor": encode_cursor({0: 1, 1: 0})},
        {"events": e[2:5], "cursor": encode_cursor({0: 2, 1: 1})},
        {"events": e[5:6], "cursor": encode_cursor({0: 3, 1: 1})},
        {"events": e[6:8], "cursor": encode_cursor({0: 3, 1: 2})},
    ]


async def test_resume_waits_for_the_feed_to_reach_a_cursor_ahead_of_it() -> None:
    """A cursor from a gateway whose feed was further on: live frames wait until this feed
    has passed it, so nothing the client saw elsewhere reaches it twice."""
    hub = Hub(queue_max=100)
    hub.start_at({0: 0})
    hub.dispatch([(0, 0, [event("a", "queued")])], {0: 1})
    sock = FakeSocket()
    async with Client(cast(WebSocket, sock)) as client:
        resuming = start_resume(hub, client, {0: 3})
        await asyncio.sleep(0)
        hub.dispatch([(0, 1, [event("b", "queued")])], {0: 2})  # seen on the other gateway
        await asyncio.sleep(0)
        assert client.paused and not resuming.done()
        hub.dispatch([(0, 2, [event("c", "queued")])], {0: 3})  # seen there too
        await resuming
        hub.dispatch([(0, 3, [event("d", "queued")])], {0: 4})
        await eventually(lambda: len(sock.frames) == 1, "the live frame after the cursor")
    assert strip(sock.frames[0]["events"]) == [("d", "queued")]


# -- the real app ----------------------------------------------------------------------------


class Running:
    def __init__(self, app: FastAPI, server: uvicorn.Server, port: int) -> None:
        self.app, self.server, self.port = app, server, port
        self.http = f"http://127.0.0.1:{port}"
        self.ws = f"ws://127.0.0.1:{port}/ws"

    @property
    def gateway(self) -> Gateway:
        gw: Gateway = self.app.state.gateway
        return gw


@contextlib.asynccontextmanager
async def running_gateway(settings: GatewaySettings) -> AsyncIterator[Running]:
    """Serve create_app(settings) with uvicorn in this event loop, as `jobstream gateway`
    does (`server_options`), until the block ends."""
    app = create_app(settings)
    port = free_port()
    options = server_options(settings, port=port, log_level="warning", ws_max_size=MAX_MESSAGE_BYTES)
    config = uvicorn.Config(app, **options)
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        await eventually(lambda: server.started or task.done(), "the gateway to start", 60 * S)
        if task.done():
            task.result()
            raise AssertionError("uvicorn exited during startup")
        yield Running(app, server, port)
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 30 * S)


def gateway_settings(settings: Settings, **overrides: Any) -> GatewaySettings:
    return GatewaySettings(**{**settings.model_dump(), **overrides})


@pytest.fixture
async def gw(settings: Settings) -> AsyncIterator[Running]:
    async with running_gateway(gateway_settings(settings)) as running:
        yield running


@pytest.fixture
async def publisher(settings: Settings) -> AsyncIterator[StatusPublisher]:
    producer = make_producer(settings)
    await producer.start()
    try:
        async with StatusPublisher(producer, settings.topics.status, settings.status_partitions) as pub:
            yield pub
    finally:
        await producer.close()


async def publish(pub: StatusPublisher, *events: dict[str, Any]) -> None:
    """Publish and wait until Kafka has them all."""
    for ev in events:
        pub.publish(ev)
    await pub.flush()


class Peer:
    """A test WebSocket client that keeps the frames and events it receives."""

    def __init__(self, conn: ClientConnection) -> None:
        self.conn = conn
        self.frames: list[dict[str, Any]] = []
        self.events: list[dict[str, Any]] = []

    async def send(self, message: dict[str, Any] | str) -> None:
        await self.conn.send(message if isinstance(message, str) else orjson.dumps(message).decode())

    async def frame(self, within: float = 10 * S) -> dict[str, Any]:
        raw = await asyncio.wait_for(self.conn.recv(), within)
        frame: dict[str, Any] = orjson.loads(raw)
        self.frames.append(frame)
        self.events.extend(frame.get("events", ()))
        return frame

    async def until(self, check: Callable[[dict[str, Any]], bool], within: float = 10 * S) -> dict[str, Any]:
        """Read frames until one satisfies `check`; return it."""
        deadline = time.monotonic() + within
        while True:
            frame = await self.frame(max(deadline - time.monotonic(), 0.001))
            if check(frame):
                return frame

    async def subscribe(self, **selection: Any) -> dict[str, Any]:
        """Subscribe and return the `subscribed` reply."""
        await self.send({"subscribe": selection})
        return await self.until(lambda f: "subscribed" in f)

    async def wait_events(self, n: int, within: float = 10 * S) -> list[dict[str, Any]]:
        """Read frames until `n` events have arrived in all (returns at once if they have)."""
        deadline = time.monotonic() + within
        while len(self.events) < n:
            await self.frame(max(deadline - time.monotonic(), 0.001))
        return self.events

    async def barrier(self) -> None:
        """Every frame queued for this client before now has been received."""
        await self.subscribe()  # replies go through the same queue as events


@contextlib.asynccontextmanager
async def peer(running: Running, **kwargs: Any) -> AsyncIterator[Peer]:
    async with connect(running.ws, max_size=None, **kwargs) as conn:
        yield Peer(conn)


def strip(events: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(e["job_id"], e["state"]) for e in events]


async def test_job_events_arrive_in_order(gw: Running, publisher: StatusPublisher) -> None:
    """A job's events reach its subscriber in publish order, as published."""
    async with peer(gw) as client:
        reply = await client.subscribe(jobs=["job-1"])
        assert reply["subscribed"] == {"jobs": 1, "types": [], "all": False}
        states = ["queued", "active", "progress", "completed"]
        for state in states:
            extra: dict[str, Any] = {}
            if state == "progress":
                extra["progress"] = {"percent": 50.0, "message": "half"}
            await publish(publisher, event("job-1", state, worker="w1", **extra))
        events = await client.wait_events(4)
        assert strip(events) == [("job-1", s) for s in states]
        assert events[2]["progress"] == {"percent": 50.0, "message": "half"}
        assert events[0]["worker"] == "w1"
        assert all(isinstance(f.get("cursor"), str) for f in client.frames if "events" in f)


async def test_type_and_all_subscriptions_route(gw: Running, publisher: StatusPublisher) -> None:
    """A type subscriber gets only that type, an all subscriber everything, a job one its job."""
    async with peer(gw) as by_type, peer(gw) as everything, peer(gw) as by_job:
        await by_type.subscribe(types=["mail.send"])
        await everything.subscribe(all=True)
        await by_job.subscribe(jobs=["j-b"])
        evs = [
            event("j-a", "queued", type_="mail.send"),
            event("j-b", "queued", type_="img.resize"),
            event("j-c", "queued", type_="pdf.render"),
            event("j-a", "completed", type_="mail.send"),
        ]
        await publish(publisher, *evs)
        await everything.wait_events(4)
        assert sorted(strip(everything.events)) == sorted(strip(evs))
        await by_type.barrier()
        await by_job.barrier()
        assert strip(by_type.events) == [("j-a", "queued"), ("j-a", "completed")]
        assert strip(by_job.events) == [("j-b", "queued")]


async def test_unsubscribe_stops_delivery(gw: Running, publisher: StatusPublisher) -> None:
    """After unsubscribing, a client no longer receives that selection's events."""
    async with peer(gw) as client, peer(gw) as everything:
        await everything.subscribe(all=True)
        await client.subscribe(types=["a.b"], jobs=["j1"])
        await client.send({"unsubscribe": {"types": ["a.b"]}})
        reply = await client.until(lambda f: "subscribed" in f)
        assert reply["subscribed"] == {"jobs": 1, "types": [], "all": False}
        await publish(publisher, event("j2", "queued", type_="a.b"), event("j1", "queued", type_="x"))
        await everything.wait_events(2)
        await client.barrier()
        assert strip(client.events) == [("j1", "queued")]


async def test_projector_writes_state_and_lookup(gw: Running, publisher: StatusPublisher) -> None:
    """The projector stores each job's latest state; GET /jobs/{id} returns it, 404 if unknown."""
    await publish(
        publisher,
        event("p-1", "queued"),
        event("p-1", "active", worker="w"),
        event("p-1", "completed", result={"ok": 1}),
    )
    async with httpx.AsyncClient(base_url=gw.http) as http:
        deadline = time.monotonic() + 20 * S
        while True:
            r = await http.get("/jobs/p-1")
            if r.status_code == 200 and r.json()["state"] == "completed":
                break
            assert time.monotonic() < deadline, f"projection never reached completed: {r.text}"
            await asyncio.sleep(0.02)
        body = r.json()
        assert body["id"] == "p-1" and body["result"] == {"ok": 1} and body["attempt"] == 1
        missing = await http.get("/jobs/nope")
        assert missing.status_code == 404
        assert "nope" in missing.json()["detail"]


async def test_snapshot_on_job_subscription(gw: Running, publisher: StatusPublisher) -> None:
    """Subscribing to a job that already finished sends its state first, then its recent events."""
    await publish(publisher, event("s-1", "queued"), event("s-1", "completed", result=42))
    async with httpx.AsyncClient(base_url=gw.http) as http:
        deadline = time.monotonic() + 20 * S
        while (r := await http.get("/jobs/s-1")).status_code != 200 or r.json()["state"] != "completed":
            assert time.monotonic() < deadline, "projection never reached completed"
            await asyncio.sleep(0.02)
    async with peer(gw) as client:
        await client.send({"subscribe": {"jobs": ["s-1", "unknown-job"]}})
        reply = await client.frame()
        assert reply["subscribed"]["jobs"] == 2
        snapshot = await client.frame()
        states = [(s["id"], s["state"], s["result"]) for s in snapshot["snapshot"]]
        assert states == [("s-1", "completed", 42)]
        recent = await client.frame()  # the ring's events not older than the snapshot
        assert strip(recent["events"]) == [("s-1", "completed")]


async def test_bad_message_gets_error_and_connection_stays(gw: Running, publisher: StatusPublisher) -> None:
    """Malformed messages get an error frame saying what to send; the connection keeps working."""
    async with peer(gw) as client:
        for bad in ("not json", '{"subscribe": {"jobz": ["x"]}}', '{"subscribe": {"jobs": "x"}}', "[1]"):
            await client.send(bad)
            frame = await client.frame()
            assert "subscribe" in frame["error"], frame
        await client.conn.send(b"\x00binary")
        assert "text frame" in (await client.frame())["error"]
        await client.send({"subscribe": {"all": True, "cursor": "garbage"}})
        frame = await client.frame()
        assert frame["code"] == "bad_cursor"
        await client.subscribe(jobs=["ok-1"])
        await publish(publisher, event("ok-1", "queued"))
        assert strip(await client.wait_events(1)) == [("ok-1", "queued")]


async def test_resume_with_cursor_replays_missed(gw: Running, publisher: StatusPublisher) -> None:
    """Reconnecting with the last cursor replays exactly the events missed meanwhile."""
    async with peer(gw) as watcher:
        await watcher.subscribe(all=True)
        async with peer(gw) as first:
            await first.subscribe(jobs=["r-1"])
            await publish(publisher, event("r-1", "queued"))
            frame = await first.until(lambda f: "events" in f)
            cursor = frame["cursor"]
        await publish(publisher, event("r-1", "active"), event("other", "queued"), event("r-1", "completed"))
        await watcher.wait_events(4)  # the gateway has read them
        async with peer(gw) as again:
            await again.send({"subscribe": {"jobs": ["r-1"], "cursor": cursor}})
            frame = await again.until(lambda f: "events" in f)
            assert strip(frame["events"]) == [("r-1", "active"), ("r-1", "completed")]
            assert not any("error" in f for f in again.frames)
            # and live events follow
            await publish(publisher, event("r-1", "completed", attempt=2))
            await again.until(lambda f: "events" in f)
            assert strip(again.events)[-1] == ("r-1", "completed")


async def test_cursor_from_before_the_gateway_started_is_read_back_from_kafka(
    settings: Settings, publisher: StatusPublisher
) -> None:
    """A cursor older than anything this gateway read (another replica's, or the topic's
    start) gets every event after it from Kafka, once, in order; then the live stream."""
    old = [event(f"old-{i}", "queued") for i in range(20)]
    for i in range(0, 20, 5):  # several records per partition
        await publish(publisher, *old[i : i + 5])
    async with running_gateway(gateway_settings(settings)) as gw, peer(gw) as client:
        zeros = {p: 0 for p in range(settings.status_partitions)}
        await client.send({"subscribe": {"all": True, "cursor": encode_cursor(zeros)}})
        reply = await client.until(lambda f: "subscribed" in f)
        assert reply["cursor"] == encode_cursor(zeros)  # what it has seen, not the feed's position
        await client.wait_events(20)
        assert sorted(strip(client.events)) == sorted(strip(old))
        assert gw.gateway.hub.counts["events_read_back"] == 20
        await publish(publisher, event("new-1", "queued"))
        await client.wait_events(21)
        assert strip(client.events)[20:] == [("new-1", "queued")]
        assert not any("error" in f for f in client.frames)


async def test_resume_reads_back_what_the_ring_evicted(
    settings: Settings, publisher: StatusPublisher
) -> None:
    """With a ring of 4 events, a client resuming 30 events back gets the evicted ones from
    Kafka and the rest from the ring: each once, in each job's order."""
    async with running_gateway(gateway_settings(settings)) as gw, peer(gw) as watcher:
        gw.gateway.hub.ring.max_events = 4
        start = (await watcher.subscribe(all=True))["cursor"]
        sent = [event(f"e-{i % 5}", "progress", n=i) for i in range(30)]
        for i in range(0, 30, 3):
            await publish(publisher, *sent[i : i + 3])
        await watcher.wait_events(30)
        async with peer(gw) as again:
            await again.send({"subscribe": {"all": True, "cursor": start}})
            await again.wait_events(30)
            await again.barrier()
            assert len(again.events) == 30
            for job in {e["job_id"] for e in sent}:
                assert [e["n"] for e in again.events if e["job_id"] == job] == [
                    e["n"] for e in sent if e["job_id"] == job
                ]
            read_back = gw.gateway.hub.counts["events_read_back"]
            assert 0 < read_back < 30, read_back


async def _slow_socket(port: int) -> socket.socket:
    """A connected socket with a tiny receive buffer, so a client that stops reading
    backs the server up quickly."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    try:
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    except BaseException:
        sock.close()
        raise
    return sock


async def test_slow_client_closed_while_others_get_everything(
    settings: Settings, publisher: StatusPublisher
) -> None:
    """A client that stops reading is closed with 1008; another client still receives everything."""
    async with running_gateway(gateway_settings(settings, client_queue_max=100)) as gw, peer(gw) as fast:
        sock = await _slow_socket(gw.port)
        async with connect(gw.ws, sock=sock, max_size=None, max_queue=1, compression=None) as slow_conn:
            slow = Peer(slow_conn)
            await slow.subscribe(all=True)
            await fast.subscribe(all=True)
            total = 0
            for burst in range(30):  # ~10 MB: more than the socket buffers between them hold
                blob = os.urandom(8_000).hex()
                burst_events = [event(f"s{burst}-{i}", "completed", result=blob) for i in range(40)]
                await publish(publisher, *burst_events)
                total += 40
                # paced by the reading client, so only the one that stopped reading falls behind
                await fast.wait_events(total, 30 * S)
            await eventually(lambda: len(gw.gateway.hub) == 1, "the slow client to be dropped", 30 * S)
            with pytest.raises(ConnectionClosed) as closed:
                while True:  # what it had buffered, then the close frame
                    await asyncio.wait_for(slow_conn.recv(), 10 * S)
            assert closed.value.rcvd is not None
            assert closed.value.rcvd.code == 1008
            assert closed.value.rcvd.reason == "too slow: fell more than 100 events behind"
            await fast.wait_events(total, 30 * S)
            assert len(fast.events) == total
            assert gw.gateway.hub.counts["slow_closed"] == 1


async def test_client_that_floods_bad_messages_without_reading_is_closed(settings: Settings) -> None:
    """A client that never reads but keeps sending bad messages is closed with 1008 once the
    error frames queued for it pass its byte budget: the gateway's memory stays bounded."""
    s = gateway_settings(  # a rate the test cannot reach, so the byte budget is what closes it
        settings, client_queue_bytes=64 * 1024, client_messages_per_s=1e9, client_message_burst=10**9
    )
    async with running_gateway(s) as gw:
        sock = await _slow_socket(gw.port)
        async with connect(gw.ws, sock=sock, max_size=None, max_queue=1, compression=None) as conn:
            await eventually(lambda: len(gw.gateway.hub) == 1, "the client to join")
            deadline = time.monotonic() + 30 * S
            while len(gw.gateway.hub) == 1:  # the hub drops a client as it asks it to close
                assert time.monotonic() < deadline, "the flooding client was never closed"
                await conn.send("not json")
            with pytest.raises(ConnectionClosed) as closed:
                while True:  # what it had buffered, then the close frame
                    await asyncio.wait_for(conn.recv(), 10 * S)
        assert closed.value.rcvd is not None
        assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (
            1008,
            "too slow: more than 65536 bytes queued",
        )
        assert gw.gateway.hub.counts["slow_closed"] == 1


async def test_client_sending_too_fast_is_closed(settings: Settings) -> None:
    """A client sending messages faster than the gateway's rate (past its burst) is closed
    with 1008 and a reason saying so; other clients are not affected."""
    s = gateway_settings(settings, client_messages_per_s=1, client_message_burst=5)
    async with running_gateway(s) as gw, peer(gw) as calm, peer(gw) as client:
        await calm.subscribe(all=True)
        with pytest.raises(ConnectionClosed) as closed:
            for _ in range(1_000):
                await client.send({"subscribe": {}})
            while True:
                await client.frame()
        assert closed.value.rcvd is not None
        assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (
            1008,
            "too many messages: more than 1 per second (burst 5)",
        )
        await calm.barrier()
        assert gw.gateway.hub.counts["flood_closed"] == 1


async def test_health_readiness_and_dashboard(gw: Running) -> None:
    """healthz and readyz answer ok; / serves the dashboard's page, whose modules and config
    come from the gateway itself (no CDN); the browser tests are tests/test_dashboard.py."""
    async with httpx.AsyncClient(base_url=gw.http) as http:
        assert (await http.get("/healthz")).json() == {"ok": True}
        ready = await http.get("/readyz")
        assert ready.status_code == 200 and ready.json() == {"kafka": "ok", "redis": "ok"}
        page = await http.get("/")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert '<script type="module" src="/dashboard/app.js">' in page.text
        assert "http" not in page.text.split("<body>")[0]  # nothing from elsewhere
        app_js = await http.get("/dashboard/app.js")
        assert app_js.status_code == 200 and "javascript" in app_js.headers["content-type"]
        assert "requestAnimationFrame" in app_js.text
        config = (await http.get("/dashboard/config.json")).json()
        assert config == {"api": "http://127.0.0.1:8000", "auth": False}


async def test_metrics_count_events_frames_clients_and_subscriptions(
    gw: Running, publisher: StatusPublisher
) -> None:
    """/metrics counts events read and sent, and shows clients and what they follow."""
    async with peer(gw) as everything, peer(gw) as one_job, httpx.AsyncClient(base_url=gw.http) as http:
        await everything.subscribe(all=True)
        await one_job.subscribe(jobs=["m-1"])
        await publish(publisher, event("m-1", "queued"), event("m-2", "queued"), event("m-1", "active"))
        await everything.wait_events(3)
        await one_job.wait_events(2)
        r = await http.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    samples = {
        (s.name, s.labels.get("kind")): s.value
        for f in text_string_to_metric_families(r.text)
        for s in f.samples
        if not s.name.endswith("_created")
    }
    assert samples[("jobstream_gateway_events_in_total", None)] == 3
    assert samples[("jobstream_gateway_events_out_total", None)] == 5
    assert samples[("jobstream_gateway_frames_out_total", None)] >= 2
    assert samples[("jobstream_gateway_slow_clients_closed_total", None)] == 0
    assert samples[("jobstream_gateway_flooding_clients_closed_total", None)] == 0
    assert samples[("jobstream_gateway_clients", None)] == 2
    subs = {k: samples[("jobstream_gateway_subscriptions", k)] for k in ("all", "jobs", "types")}
    assert subs == {"all": 1, "jobs": 1, "types": 0}


async def test_websocket_from_another_site_is_refused(settings: Settings) -> None:
    """A WebSocket handshake whose Origin is another site is refused with 403; one without
    Origin (programs), from the gateway's own origin (the dashboard) or from an origin in
    JOBSTREAM_CORS_ORIGINS is served."""
    friend = "https://app.example"
    async with running_gateway(gateway_settings(settings, cors_origins=friend)) as running:
        with pytest.raises(InvalidStatus) as refused:
            async with peer(running, origin=Origin("http://evil.example")):
                pass
        assert refused.value.response.status_code == 403
        for origin in (None, f"http://127.0.0.1:{running.port}", friend):
            async with peer(running, origin=Origin(origin) if origin else None) as client:
                assert "subscribed" in await client.subscribe(all=True)


async def test_shutdown_closes_clients_with_1001(gw: Running) -> None:
    """Draining the gateway (what SIGTERM does) closes every client with 1001."""
    async with peer(gw) as client:
        await client.subscribe(all=True)
        await gw.gateway.drain()
        with pytest.raises(ConnectionClosed) as closed:
            await client.frame()
        assert closed.value.rcvd is not None
        assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (1001, "server shutting down")


async def test_projector_waits_for_redis_and_recovers(settings: Settings, publisher: StatusPublisher) -> None:
    """With Redis down the projector keeps its batch uncommitted, readyz says so, and it
    catches up by itself once Redis is back."""
    from jobstream.cli.stack import RedisServer, StackError, ensure_redis_server

    try:
        ensure_redis_server()
    except (StackError, OSError) as exc:
        pytest.fail(f"no redis-server binary to start a private Redis: {exc}")
    data = Path(tempfile.mkdtemp(prefix="jobstream-gw-redis-"))
    private = RedisServer(data / "redis", port=free_port())
    try:
        s = gateway_settings(settings, redis_url=private.url)
        async with running_gateway(s) as gw, httpx.AsyncClient(base_url=gw.http) as http:
            await publish(publisher, event("down-1", "queued"), event("down-1", "completed"))
            projector = gw.gateway.projector
            assert projector is not None
            await eventually(lambda: projector.redis_down, "the projector to notice Redis is down", 20 * S)
            ready = await http.get("/readyz")
            assert ready.status_code == 503 and ready.json() == {"kafka": "ok", "redis": "down"}
            assert (await http.get("/jobs/down-1")).status_code == 503
            await asyncio.to_thread(private.start)
            await eventually(lambda: projector.applied >= 2, "the projector to catch up", 30 * S)
            r = await http.get("/jobs/down-1")
            assert r.status_code == 200 and r.json()["state"] == "completed"
    finally:
        await asyncio.to_thread(private.stop)
        shutil.rmtree(data, ignore_errors=True)


async def test_resume_refuses_a_cursor_lacking_a_partition() -> None:
    """A cursor without one of the topic's partitions (another deployment's) is refused with
    `bad_cursor`, and the client is let through to the live stream, not left paused."""
    hub = Hub(queue_max=100)
    hub.start_at({0: 0, 1: 0})
    async with Client(cast(WebSocket, FakeSocket())) as client:
        with pytest.raises(ProtocolError) as refused:
            await start_resume(hub, client, {0: 0})
        assert refused.value.code == "bad_cursor" and not client.paused
