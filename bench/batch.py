"""Scenario 2: batch HTTP, `POST /jobs/batch` with 10,000-job batches, 4 in flight.

`Plan.batch_total` jobs after 2 warm-up batches; the figure is jobs accepted (rows without
an error) per second, wall clock from the first request to the last answer.
"""

from __future__ import annotations

import asyncio
import time

import orjson

from bench import load
from bench.harness import Bench


async def run(bench: Bench) -> None:
    """Scenario 2 in a run: an API of its own and 4 clients sharing `Plan.batch_total` jobs."""
    s, total, size, inflight = await bench.fresh("batch"), bench.plan.batch_total, 10_000, 4
    api = await bench.start_api(s)
    body = orjson.dumps({"jobs": [load.NOOP] * size})
    await load.warm_up(api, "/jobs/batch", body, 2, 2)
    pool, counts = load.HttpPool(api), {"ok": 0, "failed": 0, "http_errors": 0}
    batches = list(range(total // size))

    async def client() -> None:
        while batches:
            batches.pop()
            status, data = await pool.request("POST", "/jobs/batch", body)
            if status != 200:
                counts["http_errors"] += 1
                if counts["http_errors"] == 1:
                    bench.notes.append(f"2: first failed request: HTTP {status} {data[:300]!r}")
                continue
            results = orjson.loads(data)["results"]
            failed = sum(1 for x in results if "error" in x)
            counts["ok"] += len(results) - failed
            counts["failed"] += failed

    async def accepted() -> int:
        bench.check_alive()
        return counts["ok"]

    stop = asyncio.Event()
    ticker = asyncio.create_task(load.every_second("batch HTTP, jobs accepted", accepted, stop))
    meter, since = bench.meter(), len(bench.children)
    start = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(inflight)))
    secs = time.perf_counter() - start
    stop.set()
    await ticker
    await pool.close()
    bench.row(
        f"2. Batch HTTP `POST /jobs/batch` ({size:,}-job batches, {inflight} in flight)",
        counts["ok"] / secs,
        "batch",
    )
    bench.notes.append(
        f"2: after 2 warm-up batches, {counts['ok']:,} of {total:,} jobs accepted in {secs:.2f} s; "
        f"{counts['failed']:,} item errors, {counts['http_errors']} failed requests"
    )
    bench.cpu_note("2", meter, since)
    bench.stop_children("2")


__all__ = ["run"]
