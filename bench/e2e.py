"""Scenario 3: end to end, no-op jobs preloaded into Kafka, run by 1 or 2 worker processes.

`Plan.e2e_jobs` jobs are written first (`load.preload`), then the workers start. The
rate is timed on the workers' own clocks from the status topic (`bench.retry.StatusWatch`):
from the moment every worker had started a job to the last `completed`, so the group
settling does not count. `drain` is that measurement for any job and worker count;
`drain_joined` starts the workers first and writes the jobs while they are stopped once
their group is stable, so that with many workers the first to join does not run the
backlog alone (scenario 7).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from typing import Any

from aiokafka.errors import KafkaError

from bench import load
from bench.harness import Bench
from bench.load import say
from bench.retry import StatusWatch
from jobstream.kafka import admin_client
from jobstream.settings import Settings


async def drain(
    bench: Bench, s: Settings, n: int, workers: int, concurrency: int, label: str,
    job_type: str = "example.noop", **fields: Any,
) -> tuple[float, int, float]:  # fmt: skip
    """Preload `n` jobs, start `workers` worker processes, wait until all completed; the
    rate once every worker had started (`StatusWatch.rate_once_all_started`). Notes the
    timing and the CPU under `label`, and stops the workers."""
    t0 = time.perf_counter()
    await load.preload(s, n, lambda k: say(f"preload: {k:,}/{n:,} jobs in Kafka"), job_type, **fields)
    say(f"preload: {n:,} jobs in {time.perf_counter() - t0:.1f} s; starting {workers} worker(s)")
    async with StatusWatch(s) as watch:
        meter, since = bench.meter(), len(bench.children)
        spawned = last_print = time.perf_counter()
        for i in range(workers):
            args = ["worker", "consumer.examples:app", "--concurrency", str(concurrency)]
            bench.spawn_cli(f"worker-{i}", args, s)
        deadline = spawned + max(180.0, n / 500)
        while watch.completed < n:
            bench.check_alive()
            await watch.poll()
            now = time.perf_counter()
            if now - last_print >= 1.0:
                say(f"{label}: {now - spawned:4.0f}s completed {watch.completed:>9,}/{n:,}")
                last_print = now
            if now > deadline:
                raise TimeoutError(
                    f"only {watch.completed:,} of {n:,} jobs completed after {now - spawned:.0f}s"
                )
    rate, counted, secs = watch.rate_once_all_started()
    bench.notes.append(
        f"{label}: {counted:,} jobs completed in {secs:.2f} s once all {len(watch.started_by)} "
        f"worker(s) had started (worker clocks); all done {time.perf_counter() - spawned:.1f} s "
        "after the spawn"
    )
    bench.cpu_note(label, meter, since)
    bench.stop_children(label)
    return rate, counted, secs


async def _stable(s: Settings, members: int, timeout_s: float = 120.0) -> None:
    """Wait until the workers' group is stable with `members` members."""
    deadline = time.perf_counter() + timeout_s
    async with admin_client(s) as admin:
        state, got = "unknown", 0
        while True:
            with contextlib.suppress(KafkaError):  # no coordinator until the first worker joins
                (response,) = await admin.describe_consumer_groups([s.topics.workers_group])
                state, got = response.groups[0][2], len(response.groups[0][5])
            if state == "Stable" and got == members:
                return
            if time.perf_counter() > deadline:
                raise TimeoutError(f"the group has {got} of {members} workers, {state}")
            await asyncio.sleep(0.2)


async def drain_joined(
    bench: Bench, s: Settings, n: int, workers: int, concurrency: int, label: str,
    job_type: str = "example.noop", **fields: Any,
) -> float:  # fmt: skip
    """Start `workers` worker processes and wait until their group is stable; stop them
    (SIGSTOP), write `n` jobs, let them go on (SIGCONT) and wait until all completed. The
    rate is from the SIGCONT to the last completion (workers' clocks): every worker has its
    partitions from the start, and the writer's CPU does not count. Notes the timing and
    the CPU under `label`, and stops the workers."""
    meter, since = bench.meter(), len(bench.children)
    group = []
    for i in range(workers):
        args = ["worker", "consumer.examples:app", "--concurrency", str(concurrency)]
        stopped_ok = {"JOBSTREAM_SESSION_TIMEOUT_MS": "30000"}  # the group keeps them while stopped
        group.append(bench.spawn_cli(f"worker-{i}", args, s, stopped_ok))
    await _stable(s, workers)
    async with StatusWatch(s) as watch:
        for proc in group:
            proc.send_signal(signal.SIGSTOP)
        try:  # within the session timeout, or the group would drop them
            t0 = time.perf_counter()
            await load.preload(s, n, lambda k: say(f"{label}: {k:,}/{n:,} jobs written"), job_type, **fields)
            wrote_s = time.perf_counter() - t0
        finally:
            for proc in group:
                proc.send_signal(signal.SIGCONT)
        go, last_print = time.time() * 1000, time.perf_counter()
        deadline = time.perf_counter() + max(180.0, n / 500)
        while watch.completed < n:
            bench.check_alive()
            await watch.poll()
            if time.perf_counter() - last_print >= 1.0:
                say(f"{label}: completed {watch.completed:>9,}/{n:,}")
                last_print = time.perf_counter()
            if time.perf_counter() > deadline:
                raise TimeoutError(f"only {watch.completed:,} of {n:,} jobs completed")
    secs = max((watch.last_completed - go) / 1000, 1e-3)
    bench.notes.append(
        f"{label}: {n:,} jobs written in {wrote_s:.1f} s while the {workers} workers were stopped, "
        f"then run in {secs:.2f} s by {len(watch.started_by)} of them (worker clocks)"
    )
    bench.cpu_note(label, meter, since)
    bench.stop_children(label)
    return n / secs


async def run(bench: Bench, workers: int) -> None:
    """Scenario 3 in a run with `workers` worker processes (concurrency 64 each)."""
    s, n = await bench.fresh(f"e2e{workers}"), bench.plan.e2e_jobs
    label = f"{workers} worker process{'es' if workers > 1 else ''}"
    rate, _, _ = await drain(bench, s, n, workers, 64, f"3 ({label})")
    bench.row(f"3. End-to-end no-op, {label} (concurrency 64 each, {n:,} preloaded)", rate, "e2e")


__all__ = ["drain", "drain_joined", "run"]
