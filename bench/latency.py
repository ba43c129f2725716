"""Scenario 4: latency from `POST /jobs` written to `completed` received on the WebSocket.

API, gateway and 2 workers run; after an unmeasured warm-up at the headline rate (a broker
fresh from start compiles its hot paths for the first tens of seconds), jobs are posted at
`Plan.lat_rate` per second for `Plan.lat_s` seconds while one WebSocket subscribed to
everything notes each event. Both ends are this process's monotonic clock. Beside it: one
POST at a time with the broker's own produce round trip (the floor), each hop's share, CPU
per job per process, and the curve over `Plan.curve_rates`, drawn to `docs/latency-curve.svg`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.admin import NewTopic
from aiokafka.errors import KafkaError

from bench import load
from bench.cpu import CpuMeter
from bench.harness import TARGETS, Bench, Row
from bench.load import say
from bench.svg import latency_curve
from jobstream.kafka import admin_client
from jobstream.kafka_security import kafka_options
from jobstream.settings import Settings


@dataclass
class LatencyRun:
    """Paced `POST /jobs` and a WebSocket subscribed to everything; latency = `completed`
    event received minus POST written, both on this process's monotonic clock."""

    api: str
    ws_url: str
    sent_at: dict[str, float] = field(default_factory=dict)
    done_at: dict[str, float] = field(default_factory=dict)
    # per job, wall-clock ms (comparable with the events' `at`): POST written, 202 read,
    # and each event's own `at` and when it arrived, as "<state>" and "<state> seen"
    marks: dict[str, dict[str, float]] = field(default_factory=dict)
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
            now, wall = time.perf_counter(), time.time() * 1000
            for event in orjson.loads(msg).get("events", ()):
                state = event.get("state")
                marks = self.marks.setdefault(event["job_id"], {})
                marks.setdefault(state, event["at"])
                marks.setdefault(f"{state} seen", wall)
                if state == "completed":
                    self.done_at.setdefault(event["job_id"], now)

    async def _send(self, rate: int, seconds: float, report: Callable[[str], None]) -> None:
        pool, tasks = load.HttpPool(self.api), set()

        async def one() -> None:
            t, wall = time.perf_counter(), time.time() * 1000
            try:
                status, body = await pool.request("POST", "/jobs", load.NOOP_BODY)
            except (OSError, asyncio.IncompleteReadError) as exc:
                self.errors.append(repr(exc))
                return
            if status == 202:
                job_id = orjson.loads(body)["id"]
                self.sent_at[job_id] = t
                self.marks.setdefault(job_id, {}).update({"sent": wall, "answered": time.time() * 1000})
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

    def hops(self) -> str:
        """p50 / p99 of each hop a completed job took, in ms: the client's POST to its 202,
        the 202 to the worker's `active` stamp (waiting in Kafka, fetched, dispatched), the
        handler (`active` to `completed` stamps, the completion record included), and the
        `completed` stamp to the event on the WebSocket. Stamps are whole milliseconds."""
        hops = {
            "POST→202": ("sent", "answered"),
            "202→worker start": ("answered", "active"),
            "run (start→completed)": ("active", "completed"),
            "completed→WebSocket": ("completed", "completed seen"),
            "queued seen after POST": ("sent", "queued seen"),
        }
        out = []
        for name, (a, b) in hops.items():
            got = [m[b] - m[a] for m in self.marks.values() if a in m and b in m]
            if got:
                mid, top = _pcts(got)
                out.append(f"{name} {mid:.1f} / {top:.1f}")
        return "; ".join(out)

    def latencies_ms(self) -> list[float]:
        return sorted((self.done_at[i] - t) * 1000 for i, t in self.sent_at.items() if i in self.done_at)


def _pcts(values: list[float]) -> tuple[float, float]:
    got = sorted(values)
    return got[len(got) // 2], got[min(len(got) - 1, int(len(got) * 0.99))]


async def serial_posts(api: str, n: int) -> list[float]:
    """`n` POSTs one at a time over one connection: ms from writing each to reading its 202."""
    pool, took = load.HttpPool(api), []
    try:
        for _ in range(n):
            t = time.perf_counter()
            status, body = await pool.request("POST", "/jobs", load.NOOP_BODY)
            if status != 202:
                raise RuntimeError(f"POST /jobs answered {status}: {body[:200]!r}")
            took.append((time.perf_counter() - t) * 1000)
    finally:
        await pool.close()
    return took


async def produce_rtt(s: Settings, n: int) -> list[float]:
    """The broker's own floor: `n` records sent one at a time by a producer configured as
    ours (idempotent, acks=all, no linger) to a topic of its own, ms each, awaited."""
    topic = f"{s.topic_prefix}.rtt"
    async with admin_client(s) as admin:
        await admin.create_topics([NewTopic(topic, 1, 1)])
    producer = AIOKafkaProducer(**kafka_options(s), enable_idempotence=True, acks="all", linger_ms=0)
    await producer.start()
    took = []
    try:
        for _ in range(20):  # the new partition's leader may take a moment
            try:
                await producer.send_and_wait(topic, b"warm")
                break
            except KafkaError:
                await asyncio.sleep(0.2)
        for _ in range(n):
            t = time.perf_counter()
            await producer.send_and_wait(topic, load.NOOP_BODY)
            took.append((time.perf_counter() - t) * 1000)
    finally:
        await producer.stop()
    return took


async def run(bench: Bench) -> None:
    """Scenario 4 in a run: API, gateway and 2 workers of its own, warmed up; one POST at a
    time beside the broker's own round trip; `LatencyRun`s at the headline rate (with the
    hop breakdown and CPU per job), at each rate of the curve, and the curve drawn."""
    s, p = await bench.fresh("latency"), bench.plan
    api, ws = await bench.start_pipeline(s)
    await asyncio.sleep(1.0)  # let the group settle after the second member joined
    say(f"latency: warm-up, {p.lat_warm_s} s at {p.lat_rate} jobs/s")
    await LatencyRun(api, ws).run(p.lat_rate, p.lat_warm_s, lambda m: None)

    say(f"latency: {p.serial_n:,} POSTs one at a time, then the broker's own round trip")
    one, rtt = _pcts(await serial_posts(api, p.serial_n)), _pcts(await produce_rtt(s, p.serial_n))
    bench.rows.append(Row(
        "4. One POST at a time over one connection, POST to 202, p50 / p99",
        f"{one[0]:.1f} / {one[1]:.1f} ms", f"p50 ≤ {TARGETS['serial_p50']:.0f} ms",
        one[0] <= TARGETS["serial_p50"],
    ))  # fmt: skip
    bench.rows.append(Row(
        "4. The broker's own produce round trip beside it (idempotent, acks=all), p50 / p99",
        f"{rtt[0]:.1f} / {rtt[1]:.1f} ms",
    ))  # fmt: skip

    def report(msg: str) -> None:
        bench.check_alive()
        say(f"latency: {msg}")

    async def measured(rate: int, seconds: int) -> tuple[LatencyRun, list[float], CpuMeter]:
        """A run at `rate`, its latencies (sorted) and the CPU meter started with it."""
        meter, timed = bench.meter(), LatencyRun(api, ws)
        await timed.run(rate, seconds, report)
        if not (lat := timed.latencies_ms()):
            raise RuntimeError(f"no job completed at {rate} jobs/s; errors: {timed.errors[:5]}")
        return timed, lat, meter

    say(f"latency: {p.lat_rate} jobs/s for {p.lat_s} s")
    timed, lat, meter = await measured(p.lat_rate, p.lat_s)
    p50, p99 = _pcts(lat)
    what = f"{p.lat_rate} jobs/s for {p.lat_s} s, API + gateway + 2 workers"
    bench.row(f"4. Latency p50, POST sent to `completed` on the WebSocket ({what})", p50, "p50", "ms")
    bench.row("4. Latency p99", p99, "p99", "ms")
    bench.rows.append(Row("4. Latency max; completed", f"{lat[-1]:.1f} ms; {len(lat):,} of {timed.sent:,}"))
    bench.notes.append(
        f"4: {timed.sent:,} sent, {len(timed.sent_at):,} accepted, {len(lat):,} completed "
        f"events seen, {len(timed.errors)} errors {timed.errors[:3]}"
    )
    bench.notes.append(f"4: per hop, p50 / p99 ms: {timed.hops()}")
    bench.cpu_note("4", meter, len(bench.children))  # no child started meanwhile
    used = meter.cores({})[0]
    per_job = ", ".join(f"{n} {c / p.lat_rate * 1e6:,.0f}" for n, c in used.items())
    total = sum(used.values()) / p.lat_rate * 1e6
    bench.notes.append(f"4: CPU per job at {p.lat_rate} jobs/s, µs: {per_job}; total {total:,.0f}")

    curve = {p.lat_rate: (p50, p99)}
    for rate in p.curve_rates:
        say(f"latency curve: {rate} jobs/s for {p.curve_s} s")
        _, lat, meter = await measured(rate, p.curve_s)
        curve[rate], used = _pcts(lat), meter.cores({})[0]
        bench.notes.append(
            f"4: at {rate:,} jobs/s: p50 {curve[rate][0]:.1f} ms, p99 {curve[rate][1]:.1f} ms; "
            f"CPU cores: " + ", ".join(f"{n} {c:.2f}" for n, c in used.items())
        )
    fast = max(p.curve_rates)
    bench.row(f"4. Latency p99 at {fast:,} jobs/s", curve[fast][1], "p99_fast", "ms")
    bench.files["docs/latency-curve.svg"] = latency_curve(
        "jobstream: POST to completed, API + gateway + 2 workers, one broker",
        [(r, a, b) for r, (a, b) in curve.items()],
    )
    bench.stop_children("4")


__all__ = ["LatencyRun", "produce_rtt", "run", "serial_posts"]
