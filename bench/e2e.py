"""Scenario 3: end to end, no-op jobs preloaded into Kafka, run by 1 or 2 worker processes.

`Plan.e2e_jobs` jobs are written first (`load.preload`), then the workers start. The
rate is timed on the workers' own clocks from the status topic (`bench.retry.StatusWatch`):
from the moment every worker had started a job to the last `completed`, so the group
settling does not count.
"""

from __future__ import annotations

import time

from bench import load
from bench.harness import Bench
from bench.load import say
from bench.retry import StatusWatch


async def run(bench: Bench, workers: int) -> None:
    """Scenario 3 in a run with `workers` worker processes (concurrency 64 each)."""
    s, n = await bench.fresh(f"e2e{workers}"), bench.plan.e2e_jobs
    t0 = time.perf_counter()
    await load.preload(s, n, lambda k: say(f"preload: {k:,}/{n:,} jobs in Kafka"))
    say(f"preload: {n:,} jobs in {time.perf_counter() - t0:.1f} s; starting {workers} worker(s)")
    # Timed on the workers' own clocks, from the first job started to the last completed
    # (status events), so a group still settling before the first commit does not count.
    async with StatusWatch(s) as watch:
        meter, since = bench.meter(), len(bench.children)
        spawned = last_print = time.perf_counter()
        for i in range(workers):
            bench.spawn_cli(f"worker-{i}", ["worker", "consumer.examples:app", "--concurrency", "64"], s)
        deadline = spawned + max(180.0, n / 500)
        while watch.completed < n:
            bench.check_alive()
            await watch.poll()
            now = time.perf_counter()
            if now - last_print >= 1.0:
                say(
                    f"end-to-end {workers} worker(s): {now - spawned:4.0f}s "
                    f"completed {watch.completed:>9,}/{n:,}"
                )
                last_print = now
            if now > deadline:
                raise TimeoutError(
                    f"only {watch.completed:,} of {n:,} jobs completed after {now - spawned:.0f}s"
                )
    rate, counted, secs = watch.rate_once_all_started()
    label = f"{workers} worker process{'es' if workers > 1 else ''}"
    bench.row(f"3. End-to-end no-op, {label} (concurrency 64 each, {n:,} preloaded)", rate, "e2e")
    bench.notes.append(
        f"3 ({label}): {counted:,} jobs completed in {secs:.2f} s once all {len(watch.started_by)} "
        f"worker(s) had started (worker clocks); all done {time.perf_counter() - spawned:.1f} s "
        "after the spawn"
    )
    bench.cpu_note(f"3 ({label})", meter, since)
    bench.stop_children(f"3 ({label})")


__all__ = ["run"]
