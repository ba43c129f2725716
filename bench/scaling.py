"""Scenario 7: how end-to-end throughput scales with worker processes (issue 11).

For a no-op job (`example.noop`, concurrency 64 per worker) and for one that awaits 10 ms
(`example.sleep`, I/O-bound, concurrency 16 per worker, so one worker is capped at about
1,600 jobs/s by waiting alone): 1, 2, 4 and 8 worker processes drain preloaded jobs from
job topics of 24 partitions. The workers start first; once their group is stable they are
stopped (SIGSTOP) while the jobs are written, and the rate runs from when they go on to
the last completion (`bench.e2e.drain_joined`, worker clocks). One row per kind of job; the curve, with the
line perfect scaling would follow, is drawn to `docs/scaling.svg`.
"""

from __future__ import annotations

from typing import Any

from bench.e2e import drain_joined
from bench.harness import Bench, Row
from bench.load import say
from bench.svg import scaling_curve

PARTITIONS = 24
KINDS: tuple[tuple[str, str, dict[str, Any], int], ...] = (  # label, type, payload, concurrency
    ("no-op", "example.noop", {}, 64),
    ("awaits 10 ms", "example.sleep", {"ms": 10}, 16),
)


async def run(bench: Bench) -> None:
    """Scenario 7: one `drain` per kind of job and worker count."""
    plan = bench.plan
    series: dict[str, list[tuple[int, float]]] = {}
    for label, job_type, payload, concurrency in KINDS:
        points = series.setdefault(f"{label} (concurrency {concurrency})", [])
        for workers in plan.scale_workers:
            n = plan.scale_noop_jobs if not payload else plan.scale_io_jobs_per_worker * workers
            s = await bench.fresh(f"scale-{job_type.split('.')[-1]}-{workers}", partitions=PARTITIONS)
            note = f"7 ({label}, {workers} worker{'s' if workers > 1 else ''})"
            rate = await drain_joined(bench, s, n, workers, concurrency, note, job_type, payload=payload)
            points.append((workers, rate))
            say(f"RESULT 7. {label}, {workers} worker(s): {rate:,.0f} jobs/s")
        shown = ", ".join(f"{w}: {r:,.0f}" for w, r in points)
        bench.rows.append(
            Row(f"7. Scaling, {label}: jobs/s by worker processes ({PARTITIONS} partitions)", shown)
        )
    bench.files["docs/scaling.svg"] = scaling_curve(
        f"End-to-end throughput by worker processes ({PARTITIONS} partitions)", series
    )


__all__ = ["run"]
