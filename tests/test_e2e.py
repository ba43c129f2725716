"""End to end over HTTP and WebSocket: API, gateway and two worker processes."""

from __future__ import annotations

import asyncio
import json
import random
from collections import defaultdict
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets

from jobstream.settings import Settings
from tests.pipeline import Pipeline, run_pipeline

pytestmark = pytest.mark.slow


@pytest.fixture
def pipeline(settings: Settings, env: dict[str, str], tmp_path: Path) -> Any:
    """The processes of this test's deployment (its topics are created by `settings`)."""
    with run_pipeline(env, tmp_path) as p:
        yield p


class Feed:
    """A WebSocket client subscribed to everything; events by job id."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.events: dict[str, list[dict[str, Any]]] = defaultdict(list)

    async def pump_until(self, done: Any, timeout_s: float) -> None:
        async with asyncio.timeout(timeout_s):
            while not done():
                frame = json.loads(await self.ws.recv())
                for ev in frame.get("events", []):
                    self.events[ev["job_id"]].append(ev)


def job_spec(i: int) -> dict[str, Any]:
    rng = random.Random(i)
    kind = rng.choice(["echo", "echo", "sleep", "progress"])
    payload: dict[str, Any] = {"echo": {"i": i}, "sleep": {"ms": 5}, "progress": {"steps": 3, "ms": 1}}[kind]
    return {"type": f"example.{kind}", "payload": payload, "priority": rng.choice(["high", "normal", "low"])}


async def test_thousand_jobs_flow_queued_active_completed(pipeline: Pipeline) -> None:
    """1,000 mixed jobs: a subscriber sees each queued, then active, then completed; lookups agree."""
    async with (
        websockets.connect(pipeline.ws) as ws,
        httpx.AsyncClient(base_url=pipeline.api, timeout=30) as http,
    ):
        await ws.send(json.dumps({"subscribe": {"all": True}}))
        assert "subscribed" in json.loads(await ws.recv())
        feed = Feed(ws)
        specs = [job_spec(i) for i in range(1000)]
        sem = asyncio.Semaphore(50)

        async def submit(spec: dict[str, Any]) -> str:
            async with sem:
                r = await http.post("/jobs", json=spec)
            assert r.status_code == 202, r.text
            assert r.json()["state"] == "queued"
            job_id: str = r.json()["id"]
            return job_id

        submit_all = asyncio.ensure_future(asyncio.gather(*(submit(s) for s in specs[:500])))
        batch = await http.post("/jobs/batch", json={"jobs": specs[500:]})
        assert batch.status_code == 200, batch.text
        ids = list(await submit_all) + [r["id"] for r in batch.json()["results"]]
        assert len(set(ids)) == 1000

        def all_completed() -> bool:
            return all(any(e["state"] == "completed" for e in feed.events.get(i, ())) for i in ids)

        await feed.pump_until(all_completed, 120)
        for job_id in ids:
            states = [e["state"] for e in feed.events[job_id]]
            core = [s for s in states if s in ("queued", "active", "completed")]
            assert core == ["queued", "active", "completed"], (job_id, states)

        async def lookup(job_id: str) -> dict[str, Any]:
            async with sem:
                r = await http.get(f"/jobs/{job_id}")
            assert r.status_code == 200, r.text
            body: dict[str, Any] = r.json()
            return body

        by_id = dict(zip(ids, specs[:500] + specs[500:], strict=True))
        # the projector may trail the live feed by a moment: wait until it has caught up
        async with asyncio.timeout(30):
            while True:
                states = await asyncio.gather(*(lookup(i) for i in ids))
                if all(s["state"] == "completed" for s in states):
                    break
                await asyncio.sleep(0.2)
        for state in states:
            assert state["type"] == by_id[state["id"]]["type"]
            assert state["attempt"] == 1
            if state["type"] == "example.echo":
                assert state["result"] == by_id[state["id"]]["payload"]


async def test_progress_reaches_websocket_clients_in_order(pipeline: Pipeline) -> None:
    """A client subscribed to a job type sees a job's progress events, in order, then completion."""
    async with (
        websockets.connect(pipeline.ws) as ws,
        httpx.AsyncClient(base_url=pipeline.api, timeout=30) as http,
    ):
        await ws.send(json.dumps({"subscribe": {"types": ["example.progress"]}}))
        assert "subscribed" in json.loads(await ws.recv())
        r = await http.post("/jobs", json={"type": "example.progress", "payload": {"steps": 4, "ms": 20}})
        job_id = r.json()["id"]
        feed = Feed(ws)
        await feed.pump_until(lambda: any(e["state"] == "completed" for e in feed.events[job_id]), 60)
        events = feed.events[job_id]
        percents = [e["progress"]["percent"] for e in events if e["state"] == "progress"]
        assert percents == [25.0, 50.0, 75.0, 100.0]
        assert [e["state"] for e in events] == ["queued", "active"] + ["progress"] * 4 + ["completed"]
