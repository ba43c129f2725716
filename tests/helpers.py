"""Test helpers: produce jobs straight to Kafka, and follow the status topic."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sized
from typing import Any

import httpx
from aiokafka import AIOKafkaConsumer
from starlette.types import Receive, Scope, Send

from jobstream.cli.stack import RedisServer
from jobstream.kafka import make_producer
from jobstream.kafka_security import kafka_options
from jobstream.settings import Settings
from schemas import JobEnvelope, Priority, decode_status_batch, encode_job, job_headers, new_job_id
from tests.conftest import MS


def make_job(job_type: str, payload: dict[str, Any] | None = None, **fields: Any) -> JobEnvelope:
    return JobEnvelope(
        id=new_job_id(), type=job_type, payload=payload or {}, created_at=int(time.time() * 1000), **fields
    )


async def produce_jobs(settings: Settings, jobs: Iterable[JobEnvelope], raw: Iterable[bytes] = ()) -> None:
    """Write jobs (and raw poison values) to their priority topics; return once Kafka has all."""
    producer = make_producer(settings)
    await producer.start()
    try:
        futs = []
        for job in jobs:
            futs.append(
                await producer.send(
                    settings.topics.jobs(job.priority),
                    encode_job(job),
                    key=job.partition_key.encode(),
                    headers=job_headers(job),
                )
            )
        for value in raw:
            futs.append(await producer.send(settings.topics.jobs(Priority.normal), value, key=b"poison"))
        await asyncio.gather(*futs)
    finally:
        await producer.close()


class StatusLog:
    """Reads the status topic from the beginning in the background; events by job id."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.events: dict[str, list[dict[str, Any]]] = defaultdict(list)
        self._changed = asyncio.Event()
        self._consumer = AIOKafkaConsumer(
            settings.topics.status,
            **kafka_options(settings),
            group_id=None,
            auto_offset_reset="earliest",
        )
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> StatusLog:
        await self._consumer.start()
        self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._consumer.stop()

    async def _run(self) -> None:
        while True:
            batches = await self._consumer.getmany(timeout_ms=200)
            for records in batches.values():
                for record in records:
                    for event in decode_status_batch(record.value):
                        self.events[event["job_id"]].append(event)
            if batches:
                self._changed.set()

    def states(self, job_id: str) -> list[str]:
        return [e["state"] for e in self.events.get(job_id, [])]

    def count(self, state: str) -> int:
        return sum(1 for evs in self.events.values() for e in evs if e["state"] == state)

    async def wait_for(self, check: Callable[[], bool], timeout_s: float, what: str) -> None:
        """Wait until `check()` holds, re-checking whenever new events arrive."""
        deadline = time.monotonic() + timeout_s
        while not check():
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), min(left, 1.0))


@contextlib.asynccontextmanager
async def asgi_app(
    app: Any, base_url: str = "http://app"
) -> AsyncIterator[tuple[httpx.AsyncClient, dict[str, Any]]]:
    """Run `app`'s lifespan: an httpx client that calls it in-process, as a server would, and
    the lifespan's state (what each request's `scope["state"]` is a copy of)."""
    async with app.router.lifespan_context(app) as lifespan_state:
        state: dict[str, Any] = dict(lifespan_state or {})

        async def asgi(scope: Scope, receive: Receive, send: Send) -> None:
            scope["state"] = dict(state)
            await app(scope, receive, send)

        transport = httpx.ASGITransport(app=asgi)
        async with httpx.AsyncClient(transport=transport, base_url=base_url, timeout=30) as client:
            yield client, state


@contextlib.asynccontextmanager
async def asgi_client(app: Any, base_url: str = "http://app") -> AsyncIterator[httpx.AsyncClient]:
    """Run `app`'s lifespan and an httpx client that calls it in-process, as a server would."""
    async with asgi_app(app, base_url) as (client, _):
        yield client


async def read_topic(settings: Settings, topic: str, count: int, timeout_s: float = 30) -> list[Any]:
    """The first `count` records of `topic` (waits for them)."""
    consumer = AIOKafkaConsumer(topic, **kafka_options(settings), group_id=None, auto_offset_reset="earliest")
    await consumer.start()
    records: list[Any] = []
    try:
        async with asyncio.timeout(timeout_s):
            while len(records) < count:
                for batch in (await consumer.getmany(timeout_ms=200)).values():
                    records.extend(batch)
    finally:
        await consumer.stop()
    return records


async def wait_until(
    probe: Callable[[], Awaitable[Sized]], size: int, what: str, timeout_s: float = 30
) -> None:
    """Call the async `probe` until what it returns has `size` items (backing off, bounded)."""
    delay = 0.01
    try:
        async with asyncio.timeout(timeout_s):
            while len(await probe()) < size:
                await asyncio.sleep(delay)
                delay = min(delay * 2, 0.5)
    except TimeoutError:
        raise AssertionError(f"timed out after {timeout_s}s waiting for {what}") from None


async def eventually(check: Callable[[], bool], what: str, within: float = 10_000 * MS) -> None:
    """Wait until `check()` holds (polling: state held in memory, no event to wait on), or
    fail naming `what`."""
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.005)


def crash_and_restart(server: RedisServer) -> None:
    """Kill a Redis (SIGKILL: no shutdown save) and start it again on its append-only file."""
    assert server.proc is not None
    server.proc.kill()
    server.proc.wait()
    server.proc = None
    server.start()
