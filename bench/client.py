"""Scenario 10: the Python client (`jobstream.Client`) against an API, a gateway and two
workers of its own.

- submits one at a time (each awaited before the next), then 64 at a time, then in batches
  of 1,000 (`submit_many`): jobs per second, each through the client's idempotency key;
- `result()` for 1,000 jobs awaited at once: the time from the batch's answer to the last
  result, and the client's CPU for it (one WebSocket shared by all the waits).

The client runs in this process (the bench's), so its CPU is this process's.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Coroutine
from typing import Any

from bench.harness import Bench, Row
from bench.load import say
from jobstream import Client

ONE_AT_A_TIME = 1_000
CONCURRENT = 64
BATCH = 1_000


async def _rate(n: int, submit: Coroutine[Any, Any, None]) -> float:
    started = time.perf_counter()
    await submit
    return n / (time.perf_counter() - started)


async def run(bench: Bench) -> None:
    s = await bench.fresh("client")
    api, ws = await bench.start_pipeline(s)
    async with Client(api, ws) as client:
        await asyncio.gather(*(client.submit("example.noop") for _ in range(500)))  # warm

        async def serial() -> None:
            for _ in range(ONE_AT_A_TIME):
                await client.submit("example.noop")

        async def concurrent(total: int) -> None:
            async def lane() -> None:
                for _ in range(total // CONCURRENT):
                    await client.submit("example.noop")

            await asyncio.gather(*(lane() for _ in range(CONCURRENT)))

        async def batches(total: int) -> None:
            for _ in range(total // BATCH):
                await client.submit_many([{"type": "example.noop"}] * BATCH)

        one = await _rate(ONE_AT_A_TIME, serial())
        many = await _rate(10_000 // CONCURRENT * CONCURRENT, concurrent(10_000))
        batched = await _rate(50_000, batches(50_000))
        say(f"client: one at a time {one:,.0f}/s, {CONCURRENT} at a time {many:,.0f}/s, "
            f"batched {batched:,.0f}/s")  # fmt: skip

        jobs = await client.submit_many([{"type": "example.echo", "payload": {"i": i}} for i in range(1_000)])
        cpu, wall = time.process_time(), time.perf_counter()
        results = await asyncio.gather(*(j.result(timeout=120) for j in jobs if not isinstance(j, Exception)))
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        assert results == [{"i": i} for i in range(1_000)]
        say(f"client: 1,000 results awaited at once: all in {wall:.2f} s, client CPU {cpu * 1000:.0f} ms")
    bench.rows += [
        Row("10. Client submits, one at a time (each awaited)", f"{one:,.0f} jobs/s"),
        Row(f"10. Client submits, {CONCURRENT} at a time", f"{many:,.0f} jobs/s"),
        Row(f"10. Client submits, `submit_many` batches of {BATCH:,}", f"{batched:,.0f} jobs/s"),
        Row("10. `result()` of 1,000 jobs awaited at once (one WebSocket): last result / client CPU",
            f"{wall:.2f} s / {cpu * 1000:.0f} ms"),
    ]  # fmt: skip
    bench.notes.append(
        "10: every submit carries an idempotency key (the client's own), so each is claimed in Redis; "
        "API, gateway and two workers (concurrency 64) on the same machine, the client in the bench's process"
    )
    bench.stop_children("10")


__all__ = ["run"]
