"""Scenario 9: recurring schedules through a `jobstream scheduler` process.

`count` schedules fire every second each, all on the same instants (the hardest case: every
occurrence due at once), for `seconds`: once as intervals (`every_ms`), once as the cron
expression `* * * * * *`, whose times cost more to work out. The schedules go
straight into Redis (`ScheduleStore.put`, as the API stores them), so only the scheduler is
measured. Lateness is the time this process sees an occurrence's record on its topic minus
the occurrence's time (one clock: same machine); the record's timestamp gives when the
scheduler sent it. The scheduler's CPU is in the notes.

`python -m bench.schedules BOOTSTRAP REDIS_URL PREFIX` runs it against a running stack.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable
from typing import Any

import orjson
from redis.asyncio import Redis

from bench import load
from bench.delay import job_topics_from_now, pick, start_scheduler
from bench.harness import Bench
from jobstream.settings import Settings
from scheduler.recurring import Schedule, ScheduleSpec, ScheduleStore

LEAD_MS = 5_000  # the first occurrence, after storing every schedule
WARM_UP_S = 3  # occurrences not measured: a new process and new topics are slow at first


def _now_ms() -> float:
    return time.time() * 1000


async def _tail(settings: Settings, until_ms: float, ready: asyncio.Event) -> list[tuple[float, int, int]]:
    """(seen at, occurrence time, record timestamp) of each record on the job topics until `until_ms`."""
    out: list[tuple[float, int, int]] = []
    async with job_topics_from_now(settings) as consumer:
        ready.set()
        while _now_ms() < until_ms:
            for records in (await consumer.getmany(timeout_ms=100, max_records=10_000)).values():
                at = _now_ms()
                out.extend((at, orjson.loads(r.value)["occurrence_at"], r.timestamp) for r in records)
    return out


async def scenario(
    settings: Settings, count: int, seconds: int, say: Callable[[str], None], cron: bool = False
) -> dict[str, float]:
    """Store `count` schedules firing every second (`every_ms`, or the cron expression
    `* * * * * *`) from `LEAD_MS` ahead; measure `seconds` of occurrences after `WARM_UP_S`
    unmeasured ones."""
    first = int(_now_ms() // 1000 * 1000) + LEAD_MS
    redis = Redis.from_url(settings.redis_url)
    try:
        store = ScheduleStore(redis, settings.redis_prefix)
        when: dict[str, Any] = {"cron": "* * * * * *"} if cron else {"every_ms": 1_000}
        spec = ScheduleSpec.model_validate({"type": "example.noop", **when})

        def stored(i: int) -> bytes:
            return Schedule(name=f"s{i}", spec=spec, created_at=first, updated_at=first).encode()

        for start in range(0, count, 50):  # 50 at a time: the client's pool holds 100
            await asyncio.gather(
                *(store.put(f"s{i}", stored(i), first) for i in range(start, min(count, start + 50)))
            )
    finally:
        await redis.aclose()
    if _now_ms() > first:
        raise RuntimeError(f"storing {count:,} schedules took longer than {LEAD_MS} ms")
    measured_from = first + WARM_UP_S * 1000
    until = measured_from + seconds * 1000
    ready = asyncio.Event()
    tail = asyncio.create_task(_tail(settings, until + 3_000, ready))
    await ready.wait()
    seen = [r for r in await tail if measured_from <= r[1] < until]
    late = sorted(at - occurrence for at, occurrence, _ in seen)
    sent = sorted(float(stamp - occurrence) for _, occurrence, stamp in seen)
    expected = count * seconds
    out = {
        "occurrences": len(seen), "expected": expected, "min_ms": late[0], "max_ms": late[-1],
        "p50_ms": pick(late, 0.5), "p99_ms": pick(late, 0.99),
        "sent_p50_ms": pick(sent, 0.5), "sent_p99_ms": pick(sent, 0.99),
    }  # fmt: skip
    say(f"schedules ({'cron' if cron else 'every_ms'}): {count:,} every second for {seconds} s: "
        f"{len(seen):,} of {expected:,} occurrences, "
        f"lateness p50 {out['p50_ms']:.1f} ms p99 {out['p99_ms']:.1f} ms")  # fmt: skip
    return out


async def run(bench: Bench) -> None:
    """Scenario 9 in a run: for `every_ms`, then for cron, a scheduler process of its own,
    then `scenario`."""
    count = 2_000 if bench.plan.lat_s < 10 else 10_000
    secs = 10
    for cron in (False, True):
        kind = "cron `* * * * * *`" if cron else "every_ms 1000"
        s = await bench.fresh("schedules-cron" if cron else "schedules")
        await start_scheduler(bench, s)
        meter, since = bench.meter(), len(bench.children)
        out = await scenario(s, count, secs, lambda m: load.say(m), cron)
        what = f"{count:,} schedules, {kind}, {secs} s, record seen on its topic minus occurrence time"
        bench.row(f"9. Schedule occurrence lateness p50 ({what})", out["p50_ms"], "schedule_p50", "ms")
        bench.row(f"9. Schedule occurrence lateness p99 ({kind})", out["p99_ms"], "schedule_p99", "ms")
        bench.notes.append(
            f"9 ({kind}): {out['occurrences']:,} occurrences of {out['expected']:,} expected; lateness min "
            f"{out['min_ms']:.1f} ms max {out['max_ms']:.1f} ms; sent by the scheduler (record timestamp) "
            f"p50 {out['sent_p50_ms']:.1f} ms p99 {out['sent_p99_ms']:.1f} ms; one `jobstream scheduler` "
            f"process, after {WARM_UP_S} s unmeasured"
        )
        bench.cpu_note(f"9 ({kind})", meter, since)
        bench.stop_children("9")


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print("usage: python -m bench.schedules BOOTSTRAP REDIS_URL PREFIX", file=sys.stderr)
        return 2
    s = Settings(kafka_bootstrap_servers=argv[0], redis_url=argv[1], topic_prefix=argv[2])
    print(orjson.dumps(asyncio.run(scenario(s, 10_000, 10, print))).decode())
    return 0


__all__ = ["run", "scenario"]


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
