"""Gateways that restart and run side by side (issue 11): a client that comes back to any
gateway with its last cursor gets every event the status topic holds after it, once, then
the live stream. Real processes: API, a worker, and three gateways one after another."""

from __future__ import annotations

import asyncio
import signal
from collections import defaultdict
from pathlib import Path
from typing import Any

import httpx
import orjson
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from jobstream.cli import procs
from jobstream.settings import Settings
from tests.helpers import StatusLog, eventually
from tests.pipeline import run_pipeline, spawn_gateway


class Follower:
    """Follows every event through whichever gateway it is given, carrying its cursor along
    as the dashboard does (from every frame that has one)."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.cursor: str | None = None
        self.errors: list[dict[str, Any]] = []

    async def follow(self, ws: str, until_events: int | None = None) -> None:
        """Subscribe (with the cursor once there is one) and read until the connection ends,
        or until `until_events` events have arrived and every frame queued before is in."""
        selection: dict[str, Any] = {"all": True}
        if self.cursor is not None:
            selection["cursor"] = self.cursor
        try:
            async with connect(ws, max_size=None) as conn:
                await conn.send(orjson.dumps({"subscribe": selection}).decode())
                barrier_sent = False
                async for raw in conn:
                    frame = orjson.loads(raw)
                    if "error" in frame:
                        self.errors.append(frame)
                    self.events.extend(frame.get("events", ()))
                    if "cursor" in frame:
                        self.cursor = frame["cursor"]
                    if barrier_sent and "subscribed" in frame:
                        return  # every frame queued before the barrier has arrived
                    if until_events is not None and not barrier_sent and len(self.events) >= until_events:
                        await conn.send(orjson.dumps({"subscribe": {"jobs": []}}).decode())
                        barrier_sent = True
        except (ConnectionClosed, OSError):
            return


async def _submit(http: httpx.AsyncClient, ids: list[str], stop: asyncio.Event) -> None:
    """About 200 jobs a second, in batches of 10, until `stop`."""
    while not stop.is_set():
        r = await http.post("/jobs/batch", json={"jobs": [{"type": "example.echo", "payload": {}}] * 10})
        assert r.status_code == 200, r.text
        ids.extend(row["id"] for row in r.json()["results"])
        await asyncio.sleep(0.05)


async def test_a_follower_moves_between_gateways_and_misses_nothing(
    env: dict[str, str], settings: Settings, tmp_path: Path
) -> None:
    """While jobs flow: the first gateway is killed (-9) under a follower, which resumes on a
    second gateway (its ring holds what was missed); the second is stopped, and the follower
    resumes on a third started after it (what it missed is only in Kafka). Every event of
    the status topic reaches the follower exactly once, each job's in order."""
    with run_pipeline(env, tmp_path, workers=1) as p:
        assert p.gateway_proc is not None
        second = spawn_gateway(env, tmp_path / "gateway-2.log")
        await asyncio.to_thread(second.wait_ready)
        third = None
        async with StatusLog(settings) as log, httpx.AsyncClient(base_url=p.api, timeout=30) as http:
            follower, ids, stop = Follower(), list[str](), asyncio.Event()
            submitting = asyncio.create_task(_submit(http, ids, stop))
            try:
                following = asyncio.create_task(follower.follow(p.ws))
                await eventually(lambda: len(follower.events) >= 300, "300 events on the first gateway")
                p.gateway_proc.send_signal(signal.SIGKILL)
                await following

                following = asyncio.create_task(follower.follow(second.ws))
                seen = len(follower.events)
                await eventually(lambda: len(follower.events) >= seen + 300, "300 more on the second")
                await asyncio.to_thread(procs.stop, second.proc)
                await following

                third = spawn_gateway(env, tmp_path / "gateway-3.log")  # starts after what it missed
                await asyncio.to_thread(third.wait_ready)
                stop.set()
                await submitting
                await log.wait_for(
                    lambda: all("completed" in log.states(j) for j in ids), 120, "every job to complete"
                )
                total = sum(len(events) for events in log.events.values())
                await asyncio.wait_for(follower.follow(third.ws, until_events=total), 60)
                metrics = (await http.get(f"{third.http}/metrics")).text
            finally:
                stop.set()
                await asyncio.gather(submitting, return_exceptions=True)
                for gateway in (second, third):
                    if gateway is not None:
                        await asyncio.to_thread(procs.stop, gateway.proc)
    assert follower.errors == []
    got: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for event in follower.events:
        got[event["job_id"]].append(event)
    assert len(follower.events) == total
    assert got == log.events  # exactly once, each job's events in the topic's order
    read_back = next(
        float(line.split()[-1])
        for line in metrics.splitlines()
        if line.startswith("jobstream_gateway_events_read_back_total")
    )
    assert read_back > 0, "the third gateway read nothing back from Kafka"
    print(f"\nfollowed {total} events of {len(ids)} jobs across 3 gateways; {read_back:g} read back")
