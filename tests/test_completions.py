"""Completion records against the real Redis: written before the status goes out, confirmed after."""

from __future__ import annotations

from typing import Any

import orjson
from redis.asyncio import Redis

from consumer import Worker
from consumer.completions import Completed, Completions
from consumer.donestore import DoneStore
from consumer.examples import app
from jobstream.cli import procs
from jobstream.settings import Settings
from tests.helpers import StatusLog, make_job, produce_jobs
from tests.test_worker import worker_settings


def event(job_id: str) -> dict[str, Any]:
    return {"job_id": job_id, "type": "t", "state": "completed", "attempt": 1, "at": 1, "worker": "w"}


async def test_a_completion_is_recorded_in_redis_before_it_is_handed_on(redis: Redis, prefix: str) -> None:
    """`send` gets a batch only once Redis holds each job's record with its event."""
    done = DoneStore(redis, prefix, 3600)
    checks: list[Any] = []

    def send(batch: list[Completed[int]]) -> None:
        checks.append([key for key, _ in batch])

    completions: Completions[int] = Completions(done, send)
    recorded_before: list[dict[str, bytes | None]] = []
    write = done.record

    async def record_then_look(events: dict[str, bytes]) -> None:
        await write(events)
        assert not checks, "handed on before the write returned"
        recorded_before.append(await done.seen(list(events)))

    done.record = record_then_look  # type: ignore[method-assign]
    for i in range(3):
        completions.add(i, event(f"job-{i}"))
    await completions.flush()
    await completions.close()
    assert checks == [[0, 1, 2]]
    assert recorded_before == [{f"job-{i}": orjson.dumps(event(f"job-{i}")) for i in range(3)}]


async def test_a_confirmed_record_loses_its_event(redis: Redis, prefix: str) -> None:
    """`seen` returns the event of an unconfirmed record, and None once it is confirmed."""
    done = DoneStore(redis, prefix, 3600)
    await done.start()
    await done.record({"a": b'{"job_id": "a"}', "b": b'{"job_id": "b"}'})
    done.confirm("a")
    await done.close()
    assert await done.seen(["a", "b", "c"]) == {"a": None, "b": b'{"job_id": "b"}'}


async def test_completions_go_on_unrecorded_when_redis_is_down() -> None:
    """With Redis unreachable, completed events are still handed on: never a stall."""
    dead = Redis(port=procs.free_port(), socket_connect_timeout=1)
    sent: list[int] = []
    completions: Completions[int] = Completions(
        DoneStore(dead, "x", 3600), lambda batch: sent.extend(k for k, _ in batch)
    )
    completions.add(7, event("job-7"))
    await completions.close()
    await dead.aclose()
    assert sent == [7]


async def test_a_redelivered_job_with_an_unconfirmed_record_sends_the_event_again(
    settings: Settings, redis: Redis
) -> None:
    """A job recorded completed by a worker that died before Kafka confirmed it: not run, event re-sent."""
    job = make_job("example.echo", {"i": 1})
    original = {**event(job.id), "type": job.type, "worker": "dead-worker", "result": {"i": 1}}
    await DoneStore(redis, settings.redis_prefix, 3600).record({job.id: orjson.dumps(original)})
    marker = make_job("example.echo", {"marker": True})
    await produce_jobs(settings, [job, marker])  # before the worker: redelivered, as after a kill
    async with StatusLog(settings) as status, Worker(app, worker_settings(settings)):
        await status.wait_for(lambda: "completed" in status.states(marker.id), 30, "the marker job")
        await status.wait_for(lambda: "completed" in status.states(job.id), 30, "the event sent again")
    assert status.events[job.id] == [original]
    done = DoneStore(redis, settings.redis_prefix, 3600)
    assert await done.seen([job.id]) == {job.id: None}, "the record was not confirmed"
