"""Scenario 5, the retry path: jobs that fail once, then succeed.

Jobs are `example.flaky` (`fail_times` 1, a fixed 1 s backoff, so every retry waits on the
1 s tier), run by two workers; the status topic tells the rest. Throughput: a preloaded
burst, jobs completed per second from the first `active` to the last `completed`.
Lateness, under a steady load the workers can carry (jobs written at 500/s): each second
attempt's `active` time minus the `due_at` of its `retrying` event (both worker clocks on
this machine). In the burst, retries fall due faster than they can run, so their wait
measures the backlog, not the due clock.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from aiokafka import AIOKafkaConsumer

from bench import load
from bench.harness import Bench, Row
from jobstream.kafka import make_producer
from jobstream.kafka_security import kafka_options
from jobstream.settings import Settings
from schemas import JobEnvelope, decode_status_batch, encode_job, job_headers, new_job_id


class StatusWatch:
    """Follows the status topic: the first `active`, how many `completed` and when the last
    was, and each retry's lateness (its next `active` minus its `due_at`)."""

    def __init__(self, settings: Settings) -> None:
        self._consumer = AIOKafkaConsumer(
            settings.topics.status,
            **kafka_options(settings),
            group_id=None,
            auto_offset_reset="earliest",
        )
        self.due: dict[str, int] = {}
        self.lateness_ms: list[int] = []
        self.completed = 0
        self.first_active: int | None = None
        self.last_completed = 0
        self.started_by: dict[str, int] = {}  # worker -> its first `active`
        self.completed_at: list[int] = []

    async def __aenter__(self) -> StatusWatch:
        await self._consumer.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._consumer.stop()

    async def poll(self) -> None:
        for records in (await self._consumer.getmany(timeout_ms=100, max_records=5_000)).values():
            for record in records:
                for e in decode_status_batch(record.value):
                    self._see(e)

    def _see(self, e: dict[str, Any]) -> None:
        state = e["state"]
        if state == "active":
            if self.first_active is None:
                self.first_active = e["at"]
            self.started_by.setdefault(e.get("worker", ""), e["at"])
            due = self.due.pop(e["job_id"], None)
            if due is not None:
                self.lateness_ms.append(e["at"] - due)
        elif state == "retrying":
            self.due[e["job_id"]] = e["due_at"]
        elif state == "completed":
            self.completed += 1
            self.completed_at.append(e["at"])
            self.last_completed = max(self.last_completed, e["at"])

    def rate_once_all_started(self) -> tuple[float, int, float]:
        """Jobs/s from the moment every worker had started a job to the last completion:
        (rate, jobs counted, seconds), so a group still settling does not count."""
        since = max(self.started_by.values())
        n = sum(1 for t in self.completed_at if t > since)
        secs = max((self.last_completed - since) / 1000, 1e-3)
        return n / secs, n, secs


FLAKY: dict[str, Any] = {
    "payload": {"fail_times": 1},
    "backoff": {"kind": "fixed", "base_ms": 1_000, "jitter": 0},
}


async def paced(s: Settings, rate: int, secs: float) -> int:
    """Write `example.flaky` jobs at `rate` per second for `secs` seconds; how many."""
    producer = make_producer(s)
    await producer.start()
    try:
        sent, start, pending = 0, time.monotonic(), []
        while (elapsed := time.monotonic() - start) < secs:
            while sent < int(elapsed * rate):
                job = JobEnvelope(
                    id=new_job_id(), type="example.flaky", created_at=int(time.time() * 1000), **FLAKY
                )
                value, headers = encode_job(job), job_headers(job)
                pending.append(await producer.send(s.topics.jobs(job.priority), value, headers=headers))
                sent += 1
            await asyncio.sleep(0.005)
        await asyncio.gather(*pending)
        return sent
    finally:
        await producer.close()


async def retry_path(
    s: Settings,
    n: int,
    spawn_workers: Callable[[], None],
    check: Callable[[], None],
    say: Callable[[str], None],
) -> tuple[float, int, int, int, int]:
    """(burst jobs/s; steady-load lateness p50, p99, max, jobs more than 100 ms late)."""
    await load.preload(s, n, lambda k: say(f"retry preload: {k:,}/{n:,}"), "example.flaky", **FLAKY)
    async with StatusWatch(s) as watch:
        spawn_workers()
        await _until(watch, n, check, say, "burst")
        assert watch.first_active is not None
        rate = n / max((watch.last_completed - watch.first_active) / 1000, 1e-3)
        say(f"retry path: burst at {rate:,.0f} jobs/s; now 500 jobs/s for 10 s to measure lateness")
        watch.lateness_ms.clear()
        steady = await paced(s, 500, 10)
        await _until(watch, n + steady, check, say, "steady")
    late = sorted(watch.lateness_ms)
    p50, p99 = late[len(late) // 2], late[min(len(late) - 1, int(len(late) * 0.99))]
    return rate, p50, p99, late[-1], sum(1 for x in late if x > 100)


async def _until(
    watch: StatusWatch, total: int, check: Callable[[], None], say: Callable[[str], None], what: str
) -> None:
    started, last = time.perf_counter(), 0.0
    deadline = started + max(180.0, total / 200)
    while watch.completed < total:
        check()
        await watch.poll()
        now = time.perf_counter()
        if now - last >= 1.0:
            say(f"retry path ({what}): {now - started:4.0f}s completed {watch.completed:,}/{total:,}")
            last = now
        if now > deadline:
            raise TimeoutError(f"only {watch.completed:,} of {total:,} retried jobs completed")
        await asyncio.sleep(0)


async def run(bench: Bench) -> None:
    """Scenario 5 in a run: `retry_path` with 2 worker processes of its own."""
    s, n = await bench.fresh("retry"), bench.plan.retry_jobs
    meter, since = bench.meter(), len(bench.children)

    def workers() -> None:
        for i in range(2):
            bench.spawn_cli(f"worker-{i}", ["worker", "consumer.examples:app", "--concurrency", "64"], s)

    rate, p50, p99, worst, late = await retry_path(s, n, workers, bench.check_alive, load.say)
    bench.row(f"5. Retry path: jobs that fail once then succeed, 2 workers ({n:,} jobs)", rate, "retry")
    what = "5. Retry lateness p99 at a steady 500 jobs/s (second attempt's start minus its due)"
    bench.row(what, p99, "late_p99", "ms")
    bench.rows.append(Row("5. Retry lateness p50; max", f"{p50} ms; {worst} ms"))
    bench.notes.append(
        f"5: a burst of {n:,} jobs through the 1 s tier, then 500 jobs/s for 10 s; of the latter, "
        f"{late:,} started more than 100 ms after due"
    )
    bench.cpu_note("5", meter, since)
    bench.stop_children("5")


__all__ = ["FLAKY", "StatusWatch", "paced", "retry_path", "run"]
