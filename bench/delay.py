"""Scenario 6: delayed jobs through a `jobstream scheduler` process.

Jobs go straight into Redis (`DelayStore.add`, as the API stores them), so only the
scheduler is measured. Lateness is the time this process sees a job record on its topic
minus the job's due time (one clock: same machine). Two runs:

- paced: `rate` jobs due per second over `seconds`, first due 2 s ahead;
- burst: `burst` jobs due at the same instant; the time from that instant to the last
  record seen.

`python -m bench.delay BOOTSTRAP REDIS_URL PREFIX` runs both against a running stack.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections.abc import AsyncIterator, Callable

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from redis.asyncio import Redis

from bench import load
from bench.harness import Bench, Row
from jobstream.cli import procs
from jobstream.kafka_security import kafka_options
from jobstream.settings import Settings
from scheduler import DelayStore
from schemas import JobEnvelope, Priority, new_job_id

LEAD_MS = 2_000
WARM_UP_S = 3


def _now_ms() -> float:
    return time.time() * 1000


@contextlib.asynccontextmanager
async def job_topics_from_now(settings: Settings) -> AsyncIterator[AIOKafkaConsumer]:
    """A consumer of every job topic, at its end: what it reads comes after this."""
    consumer = AIOKafkaConsumer(**kafka_options(settings), group_id=None)
    await consumer.start()
    try:
        tps = [TopicPartition(t, p) for t in settings.topics.job_topics for p in range(settings.partitions)]
        consumer.assign(tps)
        await consumer.seek_to_end(*tps)
        for tp in tps:
            await consumer.position(tp)
        yield consumer
    finally:
        await consumer.stop()


async def start_scheduler(bench: Bench, s: Settings) -> None:
    """A `jobstream scheduler` process of its own; returns once it runs."""
    proc = bench.spawn_cli("scheduler", ["scheduler"], s)
    log = bench.children[-1][2]
    while "scheduler running" not in procs.tail(log, 50):
        if proc.poll() is not None:
            raise RuntimeError(f"the scheduler exited:\n{procs.tail(log, 15)}")
        await asyncio.sleep(0.1)


def pick(values: list[float], q: float) -> float:
    """The `q` quantile of sorted `values`."""
    return values[min(len(values) - 1, int(len(values) * q))]


async def _tail(
    settings: Settings, n: int, timeout_s: float, ready: asyncio.Event, created: dict[str, float]
) -> dict[str, float]:
    """Read `n` new records from the job topics; when each was seen (ms), by job id."""
    seen: dict[str, float] = {}
    async with job_topics_from_now(settings) as consumer:
        ready.set()
        async with asyncio.timeout(timeout_s):
            while len(seen) < n:
                for records in (await consumer.getmany(timeout_ms=100, max_records=10_000)).values():
                    at = _now_ms()
                    for r in records:
                        job_id = orjson.loads(r.value)["id"]
                        seen[job_id] = at
                        created[job_id] = r.timestamp
    return seen


async def _run(settings: Settings, dues: list[int]) -> tuple[list[float], list[float], float]:
    """Store jobs due at `dues`; sorted lateness (ms) of each as seen on its topic and as
    sent by the scheduler (the record's timestamp), and when the last was seen."""
    ready = asyncio.Event()
    created: dict[str, float] = {}  # the record's timestamp: when the scheduler sent it
    tail = asyncio.create_task(_tail(settings, len(dues), LEAD_MS / 1000 + 120, ready, created))
    await ready.wait()
    redis = Redis.from_url(settings.redis_url)
    try:
        store = DelayStore(redis, settings.redis_prefix)
        jobs = [
            JobEnvelope.trusted(
                id=new_job_id(), type="example.noop", priority=Priority.normal, not_before=due, created_at=due
            )
            for due in dues
        ]
        for start in range(0, len(jobs), 10_000):
            await store.add(jobs[start : start + 10_000])
    finally:
        await redis.aclose()
    seen = await tail
    late = sorted(seen[j.id] - j.not_before for j in jobs if j.not_before is not None)
    sent = sorted(created[j.id] - j.not_before for j in jobs if j.not_before is not None)
    return late, sent, max(seen.values())


async def paced(settings: Settings, rate: int, seconds: float) -> dict[str, float]:
    """Lateness p50/p99/max of `rate` due jobs per second over `seconds`."""
    first = int(_now_ms()) + LEAD_MS
    late, sent, _ = await _run(settings, [first + int(i * 1000 / rate) for i in range(int(rate * seconds))])
    return {"p50_ms": pick(late, 0.5), "p99_ms": pick(late, 0.99), "max_ms": late[-1], "min_ms": late[0],
            "sent_p50_ms": pick(sent, 0.5), "sent_p99_ms": pick(sent, 0.99)}  # fmt: skip


async def burst(settings: Settings, n: int) -> dict[str, float]:
    """Seconds from the instant `n` jobs fall due to the last one seen on its topic."""
    due = int(_now_ms()) + LEAD_MS + n // 20  # storing 100,000 jobs takes a while
    late, _, last = await _run(settings, [due] * n)
    return {"seconds": (last - due) / 1000, "first_ms": late[0]}


async def scenario(
    settings: Settings, rate: int, seconds: float, n: int, say: Callable[[str], None]
) -> dict[str, dict[str, float]]:
    """Both runs, one after the other, against a scheduler already running, after an
    unmeasured paced run: new topics and a new process are slow for their first seconds."""
    await paced(settings, rate, WARM_UP_S)
    p = await paced(settings, rate, seconds)
    say(f"delay: {rate}/s over {seconds:.0f}s, lateness p50 {p['p50_ms']:.1f} ms p99 {p['p99_ms']:.1f} ms")
    b = await burst(settings, n)
    say(f"delay: {n:,} due at once all seen in {b['seconds']:.2f} s")
    return {"paced": p, "burst": b}


async def run(bench: Bench) -> None:
    """Scenario 6 in a run: a scheduler process of its own, then `scenario`."""
    s = await bench.fresh("delay")
    await start_scheduler(bench, s)
    meter, since = bench.meter(), len(bench.children)
    n = 20_000 if bench.plan.lat_s < 10 else 100_000
    secs = 10
    out = await scenario(s, 1_000, secs, n, lambda m: load.say(m))
    p, b = out["paced"], out["burst"]
    what = f"1,000 due/s for {secs} s, record seen on its topic minus due time"
    bench.row(f"6. Delayed-job lateness p50 ({what})", p["p50_ms"], "delay_p50", "ms")
    bench.row("6. Delayed-job lateness p99", p["p99_ms"], "delay_p99", "ms")
    bench.rows.append(
        Row(f"6. {n:,} delayed jobs due at one instant: all on their topic", f"{b['seconds']:.2f} s")
    )
    bench.notes.append(
        f"6: lateness min {p['min_ms']:.1f} ms max {p['max_ms']:.1f} ms; sent by the scheduler "
        f"(record timestamp) p50 {p['sent_p50_ms']:.1f} ms p99 {p['sent_p99_ms']:.1f} ms; "
        f"burst first seen {b['first_ms']:.0f} ms after due; one `jobstream scheduler` process, "
        f"after an unmeasured {WARM_UP_S} s paced run"
    )
    bench.cpu_note("6", meter, since)
    bench.stop_children("6")


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print("usage: python -m bench.delay BOOTSTRAP REDIS_URL PREFIX", file=sys.stderr)
        return 2
    s = Settings(kafka_bootstrap_servers=argv[0], redis_url=argv[1], topic_prefix=argv[2])
    out = asyncio.run(scenario(s, 1_000, 5, 100_000, print))
    print(orjson.dumps(out).decode())
    return 0


__all__ = ["WARM_UP_S", "burst", "job_topics_from_now", "paced", "pick", "run", "scenario", "start_scheduler"]


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
