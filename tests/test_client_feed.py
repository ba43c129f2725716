"""The client's event feed (`jobstream.client.stream.feed`) against a small WebSocket server
speaking the gateway's frames (`gateway.protocol`): pure of Kafka and Redis."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from websockets.asyncio.server import ServerConnection, serve

from gateway.protocol import error_frame, events_frame, snapshot_frame, subscribed_frame
from jobstream.client.stream import feed


def event(job_id: str, state: str, at: int) -> dict[str, Any]:
    return {"job_id": job_id, "type": "t", "state": state, "attempt": 1, "at": at}


async def test_a_replay_the_gateway_could_not_read_back_is_asked_for_again() -> None:
    """A `replay_failed` frame leaves a gap after the cursor: the feed subscribes again from
    its last cursor (not from now), and does not repeat the jobs' snapshot."""
    subscribes: list[dict[str, Any]] = []

    async def gateway(ws: ServerConnection) -> None:
        subscribes.append(orjson.loads(await ws.recv())["subscribe"])
        if len(subscribes) == 1:
            await ws.send(subscribed_frame(1, set(), False, "c0"))
            await ws.send(snapshot_frame([{"id": "a", "type": "t", "state": "queued", "updated_at": 1}]))
            await ws.send(events_frame([event("a", "active", 2)], "c1"))
            await ws.send(error_frame("events missed since your cursor…", code="replay_failed"))
            await ws.send(events_frame([event("a", "completed", 9)], "c9"))  # live, past the gap
        else:
            await ws.send(subscribed_frame(1, set(), False, "c1"))
            await ws.send(events_frame([event("a", "progress", 3), event("a", "completed", 4)], "c4"))
        await ws.wait_closed()

    async with serve(gateway, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        seen: list[tuple[str, int]] = []
        stream = feed(f"ws://127.0.0.1:{port}", dict, {"jobs": ["a"], "types": [], "all": False})
        async with asyncio.timeout(10):
            async for item in stream:
                seen.append((item["state"], item["at"]))
                if item["state"] == "completed":
                    break
        await stream.aclose()
    assert seen == [("queued", 1), ("active", 2), ("progress", 3), ("completed", 4)]
    assert subscribes == [
        {"jobs": ["a"], "types": [], "all": False},
        {"jobs": ["a"], "types": [], "all": False, "cursor": "c1"},
    ]
