"""Lua scripts called many times in one pipelined round trip, by their SHA alone.

redis-py's `Script`, called in a pipeline, makes `execute()` first ask `SCRIPT EXISTS` for
every script the pipeline uses: a second round trip on each call, which on the submit path
and the worker's intake cost more than the writes themselves. A `PipelinedScript` queues
`EVALSHA` only and loads the script once Redis says it does not know it (after a restart
or `SCRIPT FLUSH`), then runs the whole pipeline again; callers' scripts are idempotent
for that reason.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.exceptions import NoScriptError


class PipelinedScript:
    def __init__(self, redis: Redis, text: str) -> None:
        self._redis = redis
        self._script = redis.register_script(text)

    def queue(self, pipe: Pipeline, keys: list[Any], args: list[Any]) -> None:
        """Add one call to `pipe` (no round trip)."""
        pipe.evalsha(self._script.sha, len(keys), *keys, *args)

    async def run(self, build: Callable[[Pipeline], None]) -> list[Any]:
        """A pipeline filled by `build` (with `queue` calls, and any other commands),
        executed; the replies in order. Loads the script and runs it again on NOSCRIPT."""
        try:
            return await self._execute(build)
        except NoScriptError:
            await self._redis.script_load(self._script.script)
            return await self._execute(build)

    async def _execute(self, build: Callable[[Pipeline], None]) -> list[Any]:
        async with self._redis.pipeline(transaction=False) as pipe:
            build(pipe)
            return await pipe.execute()


__all__ = ["PipelinedScript"]
