"""`jobstream scheduler`: the delay scheduler as a process of its own.

The API runs one by default (`JOBSTREAM_SCHEDULER=true`); run this instead, or beside it,
to fire delayed jobs and recurring schedules' occurrences from a separate process: any
number may run at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal

from redis.asyncio import Redis

from jobstream.kafka import Partitioner, open_producers
from jobstream.settings import SchedulerSettings
from jobstream.status_publisher import StatusPublisher
from scheduler.loop import Scheduler
from scheduler.recurring import ScheduleStore, schedule_loop
from scheduler.store import DelayStore

log = logging.getLogger("jobstream.scheduler")


async def serve(settings: SchedulerSettings, stop: asyncio.Event | None = None) -> None:
    """Run until SIGTERM or SIGINT (or `stop` is set), then stop cleanly: no claim is
    abandoned mid-way except to its lease."""
    loop = asyncio.get_running_loop()
    stop = stop or asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        async with contextlib.AsyncExitStack() as stack:
            producer, status_producer = await open_producers(
                stack, settings, linger_ms=settings.linger_ms,
                request_timeout_ms=int(settings.submit_timeout_s * 1000),
            )  # fmt: skip
            redis = Redis.from_url(settings.redis_url, socket_timeout=5, socket_connect_timeout=5)
            stack.push_async_callback(redis.aclose)
            publisher = await stack.enter_async_context(
                StatusPublisher(status_producer, settings.topics.status, settings.status_partitions)
            )
            store = DelayStore(redis, settings.redis_prefix)
            partitioner = Partitioner(producer)
            scheduler = Scheduler.from_settings(settings, store, producer, partitioner, publisher)
            schedules = ScheduleStore(redis, settings.redis_prefix)
            recurring = schedule_loop(settings, schedules, producer, partitioner, publisher)
            async with scheduler, recurring:
                log.info("scheduler running prefix=%s", settings.topic_prefix)
                await stop.wait()
                log.info("scheduler stopping fired=%d occurrences=%d", scheduler.fired, recurring.fired)
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)


def run_scheduler(settings: SchedulerSettings) -> int:
    """Run a scheduler process to completion; returns the exit code."""
    try:
        import uvloop

        runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
    except ImportError:  # pragma: no cover - uvloop ships with uvicorn[standard]
        runner = asyncio.Runner()
    with runner:
        runner.run(serve(settings))
    return 0
