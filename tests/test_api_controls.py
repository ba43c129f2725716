"""Chaining, expiry and cancellation through the HTTP API, with a worker and the gateway."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from consumer import Worker
from consumer.examples import app as examples
from gateway import create_app as create_gateway
from jobstream.settings import ApiSettings, GatewaySettings, Settings, WorkerSettings
from producer import create_app
from schemas import child_job_id
from tests.helpers import StatusLog, asgi_client


@pytest.fixture
async def http(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """The API, with a worker and the gateway (whose projector feeds the API's lookups)."""
    worker = WorkerSettings(**{**settings.model_dump(), "session_timeout_ms": 3000})
    gateway = create_gateway(GatewaySettings(**settings.model_dump()))
    api = create_app(ApiSettings(**settings.model_dump()))
    async with Worker(examples, worker), asgi_client(gateway), asgi_client(api) as client:
        yield client


async def state_of(http: httpx.AsyncClient, job_id: str, want: str, timeout_s: float = 30) -> dict[str, Any]:
    """GET /jobs/{id} until the projection shows `want` (the projector trails the events)."""
    async with asyncio.timeout(timeout_s):
        while True:
            r = await http.get(f"/jobs/{job_id}")
            if r.status_code == 200 and r.json()["state"] == want:
                body: dict[str, Any] = r.json()
                return body
            await asyncio.sleep(0.05)


async def test_chain_over_http_links_parent_and_child(http: httpx.AsyncClient, settings: Settings) -> None:
    """A job with `then` completes, then its follow-up runs with the parent's result; both are linked."""
    async with StatusLog(settings) as status:
        spec = {"type": "example.echo", "payload": {"a": 1}, "then": [{"type": "example.echo"}]}
        r = await http.post("/jobs", json=spec)
        assert r.status_code == 202, r.text
        parent = r.json()["id"]
        child = child_job_id(parent, 0)
        await status.wait_for(lambda: "completed" in status.states(child), 30, "the follow-up")
    assert status.events[parent][-1]["children"] == [child]
    assert status.events[child][-1]["result"] == {"parent_result": {"a": 1}}
    assert all(e["parent_id"] == parent for e in status.events[child])
    assert (await state_of(http, parent, "completed"))["children"] == [child]
    assert (await state_of(http, child, "completed"))["parent_id"] == parent


async def test_ttl_expired_job_is_dead_not_run(http: httpx.AsyncClient, settings: Settings) -> None:
    """A job whose ttl_ms passes while it waits behind a slow one is dead (expired), never active."""
    async with StatusLog(settings) as status:
        slow = {"type": "example.sleep", "payload": {"ms": 2_000}, "priority": "high"}
        r = await http.post("/jobs/batch", json={"jobs": [slow] * 32})
        slow_ids = [row["id"] for row in r.json()["results"]]
        # every slot of the worker busy (concurrency 32) before the short-lived job arrives
        await status.wait_for(lambda: all("active" in status.states(j) for j in slow_ids), 30, "32 running")
        r = await http.post("/jobs", json={"type": "example.echo", "ttl_ms": 50, "priority": "low"})
        job_id = r.json()["id"]
        await status.wait_for(lambda: "dead" in status.states(job_id), 30, "the expiry")
    assert status.states(job_id) == ["queued", "dead"]
    assert (await state_of(http, job_id, "dead"))["reason"] == "expired"


async def test_delete_cancels_a_running_job_then_conflicts(
    http: httpx.AsyncClient, settings: Settings
) -> None:
    """DELETE answers 202 and the running job ends cancelled; a second DELETE is 409 with the state."""
    assert (await http.delete("/jobs/no-such-job")).status_code == 404
    async with StatusLog(settings) as status:
        r = await http.post("/jobs", json={"type": "example.sleep", "payload": {"ms": 30_000}})
        job_id = r.json()["id"]
        await status.wait_for(lambda: "active" in status.states(job_id), 30, "the job to start")
        r = await http.delete(f"/jobs/{job_id}")
        assert r.status_code == 202 and r.json() == {"id": job_id, "state": "cancelling"}
        await status.wait_for(lambda: "cancelled" in status.states(job_id), 30, "the cancellation")
    assert status.states(job_id) == ["queued", "active", "cancelled"]
    await state_of(http, job_id, "cancelled")
    r = await http.delete(f"/jobs/{job_id}")
    assert r.status_code == 409 and r.json()["state"] == "cancelled"
