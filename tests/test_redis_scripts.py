"""`jobstream.redis_scripts`: scripts in pipelines by SHA alone, against the real Redis."""

from __future__ import annotations

from typing import Any

from redis.asyncio import Redis

from jobstream.projection import Projection
from jobstream.redis_scripts import PipelinedScript
from schemas import events, now_ms
from tests.helpers import make_job

_INCR = "return redis.call('INCRBY', KEYS[1], ARGV[1])"


async def test_a_script_redis_forgot_is_loaded_and_run_once_more(redis: Redis, prefix: str) -> None:
    script = PipelinedScript(redis, _INCR)
    key = f"{prefix}:n"

    def build(pipe: Any) -> None:
        script.queue(pipe, [key], [2])
        pipe.get(key)

    await redis.script_flush()  # as after a Redis restart: the SHA is unknown
    assert await script.run(build) == [2, b"2"]
    assert await script.run(build) == [4, b"4"]  # known now: one round trip


async def test_the_pipeline_asks_nothing_before_its_calls(redis: Redis, prefix: str) -> None:
    """redis-py's own scripts in a pipeline ask SCRIPT EXISTS first on every execute: a
    second round trip per projection write and per intake check."""
    script = PipelinedScript(redis, _INCR)
    await redis.script_load(_INCR)
    async with redis.pipeline(transaction=False) as pipe:
        script.queue(pipe, [f"{prefix}:m"], [1])
        sent = [args[0] for args, _ in pipe.command_stack]
        assert not pipe.scripts  # what makes execute() ask SCRIPT EXISTS first
        assert await pipe.execute() == [1]
    assert sent == ["EVALSHA"]


async def test_the_projection_survives_a_script_flush(redis: Redis, prefix: str) -> None:
    projection = Projection(redis, prefix, 60)
    job = make_job("example.noop")
    await redis.script_flush()
    await projection.apply([events.queued(job, now_ms())])
    got = await projection.get(job.id)
    assert got is not None and got["state"] == "queued"
