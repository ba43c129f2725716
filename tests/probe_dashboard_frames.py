"""A measurement, not a test (`make test` does not collect it; it asserts nothing about
speed): the dashboard's frames while 5,000 status events a second stream to it.

    .venv/bin/python -m pytest -s tests/probe_dashboard_frames.py

For the queues page and the jobs page in turn: headless Chromium (as in
tests/test_dashboard.py) records every animation frame and every long task (over 50 ms)
while this process publishes 5 events per job (queued, active, progress twice, completed)
at 5,000 events/s for 6 s to the status topic; it prints the frame gaps' p50, p99 and
max. 60 frames a second is a gap of 16.7 ms. Figures: docs/BENCHMARKS.md.
"""

from __future__ import annotations

import asyncio
import itertools
import time

from jobstream.kafka import make_producer
from jobstream.settings import Settings
from jobstream.status_publisher import StatusPublisher
from tests.test_dashboard import Deployment, chromium, open_deployment, opened  # noqa: F401 (fixtures)
from tests.test_gateway import event

RATE, SECONDS = 5_000, 6
STATES = ("queued", "active", "progress", "progress", "completed")
RECORD = """() => {
  window.frames_ = []; window.long_ = [];
  const tick = (t) => { window.frames_.push(t); requestAnimationFrame(tick); };
  requestAnimationFrame(tick);
  new PerformanceObserver((l) => { for (const e of l.getEntries()) window.long_.push(e.duration); })
    .observe({entryTypes: ["longtask"]});
}"""


async def stream(settings: Settings, tag: str) -> tuple[int, float]:
    """Publish `RATE` events a second for `SECONDS`; how many, and how long it took."""
    producer = make_producer(settings)
    async with producer, StatusPublisher(producer, settings.topics.status, settings.status_partitions) as pub:
        start, sent = time.monotonic(), 0
        while (elapsed := time.monotonic() - start) < SECONDS:
            while sent < int(elapsed * RATE):
                for state in STATES:
                    pub.publish(event(f"{tag}{sent}", state, type_="probe.type"))
                sent += len(STATES)
            await asyncio.sleep(0.01)
        await pub.flush()
        return sent, time.monotonic() - start


async def test_frames_while_5000_events_a_second_stream(
    chromium: str,  # noqa: F811
    open_deployment: Deployment,  # noqa: F811
    settings: Settings,
) -> None:
    for view in ("#/queues", "#/jobs"):
        async with opened(chromium, f"{open_deployment.gateway}/{view}") as page:
            await page.wait_for_function("document.getElementById('conn').textContent === 'live'")
            await page.evaluate(RECORD)
            sent, took = await stream(settings, view[2])
            await page.wait_for_timeout(2_000)  # the page catches up
            frames: list[float] = await page.evaluate("window.frames_")
            longs: list[float] = await page.evaluate("window.long_")
        gaps = sorted(b - a for a, b in itertools.pairwise(frames))
        print(
            f"\n{view}: {sent:,} events in {took:.1f} s ({sent / took:,.0f}/s); {len(frames)} frames, "
            f"gaps p50 {gaps[len(gaps) // 2]:.1f} ms, p99 {gaps[int(len(gaps) * 0.99)]:.1f} ms, "
            f"max {gaps[-1]:.1f} ms; "
            f"{len(longs)} long tasks, the longest {max(longs, default=0):.0f} ms"
        )
