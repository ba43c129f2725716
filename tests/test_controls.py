"""Chaining, expiry and cancellation in the worker, against the real broker and Redis."""

from __future__ import annotations

import time

from consumer import Worker
from consumer.examples import app
from jobstream.kafka import make_producer
from jobstream.settings import Settings, WorkerSettings
from schemas import JobSpec, child_job_id, encode_cancel
from tests.helpers import StatusLog, make_job, produce_jobs


def worker_settings(settings: Settings, **kw: object) -> WorkerSettings:
    return WorkerSettings(**{**settings.model_dump(), "session_timeout_ms": 3000, **kw})


async def cancel(settings: Settings, job_id: str) -> None:
    producer = make_producer(settings)
    await producer.start()
    try:
        await producer.send_and_wait(settings.topics.control, encode_cancel(job_id, 0), key=job_id.encode())
    finally:
        await producer.close()


async def test_a_chain_of_three_runs_in_order_with_parent_results(settings: Settings) -> None:
    """A then B then C: each starts after its parent completed and gets its result; ids are deterministic."""
    third = JobSpec(type="example.echo", payload={"step": 3})
    second = JobSpec(type="example.echo", payload={"step": 2}, then=[third])
    first = make_job("example.echo", {"step": 1}, then=[second])
    b_id = child_job_id(first.id, 0)
    c_id = child_job_id(b_id, 0)
    async with StatusLog(settings) as status, Worker(app, worker_settings(settings)):
        await produce_jobs(settings, [first])
        await status.wait_for(lambda: "completed" in status.states(c_id), 30, "the third job")
    a_done = status.events[first.id][-1]
    assert a_done["state"] == "completed" and a_done["children"] == [b_id]
    b_events, c_events = status.events[b_id], status.events[c_id]
    assert [e["state"] for e in b_events] == ["queued", "active", "completed"]
    assert b_events[0]["parent_id"] == first.id and c_events[0]["parent_id"] == b_id
    assert b_events[1]["at"] >= a_done["at"] - 5 and c_events[1]["at"] >= b_events[-1]["at"] - 5
    assert b_events[-1]["result"] == {"step": 2, "parent_result": {"step": 1}}
    assert c_events[-1]["result"]["parent_result"]["parent_result"] == {"step": 1}


async def test_an_expired_job_is_not_run(settings: Settings) -> None:
    """A job whose expires_at has passed ends dead with reason expired and never starts."""
    expired = make_job("example.echo", {"x": 1}, expires_at=int(time.time() * 1000) - 1)
    fresh = make_job("example.echo", {"x": 2}, expires_at=int(time.time() * 1000) + 60_000)
    async with StatusLog(settings) as status, Worker(app, worker_settings(settings)):
        await produce_jobs(settings, [expired, fresh])
        await status.wait_for(
            lambda: "dead" in status.states(expired.id) and "completed" in status.states(fresh.id),
            30,
            "outcomes",
        )
    assert status.states(expired.id) == ["dead"]
    assert status.events[expired.id][-1]["reason"] == "expired"


async def test_cancel_skips_a_queued_job_and_stops_a_running_one(settings: Settings) -> None:
    """A job cancelled before it starts is skipped; a running one is cancelled, not retried."""
    running = make_job("example.sleep", {"ms": 30_000})
    async with StatusLog(settings) as status, Worker(app, worker_settings(settings, concurrency=1)):
        queued = make_job("example.echo", {"x": 1})
        await produce_jobs(settings, [running])
        await status.wait_for(lambda: "active" in status.states(running.id), 30, "the slow job to start")
        await cancel(settings, queued.id)
        await produce_jobs(settings, [queued])  # behind the slow job in a one-slot worker
        await cancel(settings, running.id)
        await status.wait_for(
            lambda: "cancelled" in status.states(running.id) and "cancelled" in status.states(queued.id),
            30,
            "both cancellations",
        )
    assert status.states(running.id) == ["active", "cancelled"]
    assert status.states(queued.id) == ["cancelled"]
