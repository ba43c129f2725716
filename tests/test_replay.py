"""Replay end to end: jobs dead-letter under a broken handler, then complete once it is fixed."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from consumer import JobContext, NonRetryable, Worker, WorkerApp
from jobstream.settings import ApiSettings, Settings, WorkerSettings
from producer import create_app
from tests.helpers import StatusLog, asgi_client

broken = WorkerApp("broken")
fixed = WorkerApp("fixed")


@broken.handler("billing.charge")
async def charge_broken(ctx: JobContext) -> None:
    raise NonRetryable("the card service rejected our credentials")


@fixed.handler("billing.charge")
async def charge_fixed(ctx: JobContext) -> dict[str, Any]:
    return {"charged": ctx.payload["amount"], "replay_of": ctx.job.replay_of}


async def poll(http: httpx.AsyncClient, path: str, done: Any, timeout_s: float = 30) -> dict[str, Any]:
    """GET `path` until `done(body)` holds."""
    async with asyncio.timeout(timeout_s):
        while True:
            r = await http.get(path)
            if r.status_code == 200 and done(body := r.json()):
                result: dict[str, Any] = body
                return result
            await asyncio.sleep(0.05)


async def test_replay_after_a_fix_completes_the_jobs_once(settings: Settings) -> None:
    """Dead jobs; a fixed handler; a dry run counts, a replay completes them, a second does nothing."""
    worker_settings = WorkerSettings(**{**settings.model_dump(), "session_timeout_ms": 3000})
    async with (
        asgi_client(create_app(ApiSettings(**settings.model_dump()))) as http,
        StatusLog(settings) as status,
    ):
        async with Worker(broken, worker_settings):
            ids = []
            for amount in (5, 7, 9):
                r = await http.post("/jobs", json={"type": "billing.charge", "payload": {"amount": amount}})
                ids.append(r.json()["id"])
            await status.wait_for(lambda: all("dead" in status.states(i) for i in ids), 30, "the jobs to die")
        await poll(http, "/dlq?type=billing.charge", lambda b: len(b["items"]) == 3)

        dry = await http.post("/dlq/replay", json={"types": ["billing.charge"], "reasons": ["non_retryable"]})
        assert dry.status_code == 200 and dry.json()["matched"] == 3

        async with Worker(fixed, worker_settings):
            r = await http.post("/dlq/replay", json={"types": ["billing.charge"], "dry_run": False})
            assert r.status_code == 202, r.text
            replay = await poll(
                http, f"/dlq/replays/{r.json()['replay_id']}", lambda b: b["state"] != "running"
            )
            assert (replay["state"], replay["replayed"], replay["skipped"]) == ("done", 3, 0)

            def replayed_as() -> list[str]:
                return [e["new_job_id"] for i in ids for e in status.events[i] if e["state"] == "replayed"]

            await status.wait_for(lambda: len(replayed_as()) == 3, 30, "the replayed events")
            new_ids = replayed_as()
            await status.wait_for(
                lambda: all("completed" in status.states(n) for n in new_ids), 30, "the new jobs"
            )
            for old, new in zip(ids, new_ids, strict=True):
                assert status.events[new][-1]["result"]["replay_of"] == old

            again = await http.post("/dlq/replay", json={"types": ["billing.charge"], "dry_run": False})
            second = await poll(
                http, f"/dlq/replays/{again.json()['replay_id']}", lambda b: b["state"] != "running"
            )
            assert (second["replayed"], second["skipped"]) == (0, 3)
