"""Scenario 4: latency from `POST /jobs` written to `completed` received on the WebSocket.

API, gateway and 2 workers run; after an unmeasured second at 100 jobs/s, jobs are posted
at `Plan.lat_rate` per second for `Plan.lat_s` seconds while one WebSocket subscribed to
everything notes each `completed` event. Both ends are this process's monotonic clock.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from bench import load
from bench.harness import Bench, Row
from bench.load import say
from jobstream.cli import procs


@dataclass
class LatencyRun:
    """Paced `POST /jobs` and a WebSocket subscribed to everything; latency = `completed`
    event received minus POST written, both on this process's monotonic clock."""

    api: str
    ws_url: str
    sent_at: dict[str, float] = field(default_factory=dict)
    done_at: dict[str, float] = field(default_factory=dict)
    sent: int = 0
    errors: list[str] = field(default_factory=list)

    async def run(self, rate: int, seconds: float, report: Callable[[str], None]) -> None:
        from websockets.asyncio.client import connect

        async with connect(self.ws_url, max_size=None) as ws:
            await ws.send(orjson.dumps({"subscribe": {"all": True}}).decode())
            reply = orjson.loads(await asyncio.wait_for(ws.recv(), 10))
            if "subscribed" not in reply:
                raise RuntimeError(f"gateway refused the subscription: {reply}")
            reader = asyncio.create_task(self._read(ws))
            try:
                await self._send(rate, seconds, report)
                for _ in range(300):  # up to 15 s for the last completions
                    if self.sent_at.keys() <= self.done_at.keys():
                        break
                    await asyncio.sleep(0.05)
            finally:
                reader.cancel()
                await asyncio.gather(reader, return_exceptions=True)

    async def _read(self, ws: Any) -> None:
        async for msg in ws:
            now = time.perf_counter()
            for event in orjson.loads(msg).get("events", ()):
                if event.get("state") == "completed":
                    self.done_at.setdefault(event["job_id"], now)

    async def _send(self, rate: int, seconds: float, report: Callable[[str], None]) -> None:
        pool, tasks = load.HttpPool(self.api), set()

        async def one() -> None:
            t = time.perf_counter()
            try:
                status, body = await pool.request("POST", "/jobs", load.NOOP_BODY)
            except (OSError, asyncio.IncompleteReadError) as exc:
                self.errors.append(repr(exc))
                return
            if status == 202:
                self.sent_at[orjson.loads(body)["id"]] = t
            else:
                self.errors.append(f"{status} {body[:200]!r}")

        total, start, next_report = int(rate * seconds), time.perf_counter(), 1.0
        for i in range(total):
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            task = asyncio.create_task(one())
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            self.sent += 1
            if time.perf_counter() - start >= next_report:
                report(
                    f"{next_report:.0f}s sent {self.sent:,} accepted {len(self.sent_at):,} "
                    f"completed {len(self.done_at):,} connections {pool.opened}"
                )
                next_report += 1
        await asyncio.gather(*tasks)
        await pool.close()

    def latencies_ms(self) -> list[float]:
        return sorted((self.done_at[i] - t) * 1000 for i, t in self.sent_at.items() if i in self.done_at)


async def run(bench: Bench) -> None:
    """Scenario 4 in a run: API, gateway and 2 workers of its own, then a `LatencyRun`."""
    s, p = await bench.fresh("latency"), bench.plan
    api = await bench.start_api(s)
    gw = await bench.start_api(s, "gateway")
    logs = []
    for i in range(2):
        bench.spawn_cli(f"worker-{i}", ["worker", "consumer.examples:app", "--concurrency", "64"], s)
        logs.append(bench.children[-1][2])
    while not all(re.search(r"assigned [1-9]", procs.tail(log, 100)) for log in logs):
        bench.check_alive()
        await asyncio.sleep(0.2)
    await asyncio.sleep(1.0)  # let the group settle after the second member joined
    ws = gw.replace("http://", "ws://") + "/ws"
    say("latency: warm-up, 1 s at 100 jobs/s")
    await LatencyRun(api, ws).run(100, 1, lambda m: None)
    meter, since = bench.meter(), len(bench.children)
    timed = LatencyRun(api, ws)

    def report(msg: str) -> None:
        bench.check_alive()
        say(f"latency: {msg}")

    await timed.run(p.lat_rate, p.lat_s, report)
    lat = timed.latencies_ms()
    if not lat:
        raise RuntimeError(f"no job completed; errors: {timed.errors[:5]}")
    p50, p99 = lat[len(lat) // 2], lat[min(len(lat) - 1, int(len(lat) * 0.99))]
    what = f"{p.lat_rate} jobs/s for {p.lat_s} s, API + gateway + 2 workers"
    bench.row(f"4. Latency p50, POST sent to `completed` on the WebSocket ({what})", p50, "p50", "ms")
    bench.row("4. Latency p99", p99, "p99", "ms")
    bench.rows.append(Row("4. Latency max; completed", f"{lat[-1]:.1f} ms; {len(lat):,} of {timed.sent:,}"))
    bench.notes.append(
        f"4: {timed.sent:,} sent, {len(timed.sent_at):,} accepted, {len(lat):,} completed "
        f"events seen, {len(timed.errors)} errors {timed.errors[:3]}"
    )
    bench.cpu_note("4", meter, since)
    bench.stop_children("4")


__all__ = ["LatencyRun", "run"]
