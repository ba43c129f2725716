"""Scenario 8: what a change in the worker group costs at a steady load (issue 11).

No-op jobs are written straight to Kafka at `Plan.rebalance_rate` per second (24 partitions)
while two workers run them; then, in turn, with `Plan.rebalance_settle_s` of steady load
after each (and the session timeout on top for a crash):

- join: a third worker starts;
- leave: that worker stops with SIGTERM (it drains and leaves the group);
- crash: a worker is killed (-9), and started again once the group has moved on;
- restart: a worker stops with SIGTERM and is started again at once.

Twice: with dynamic membership, and with static membership (each worker a stable
`JOBSTREAM_INSTANCE_ID`). Each event's window runs until every job written by its end has
started. For each, from the workers' own clocks (status events): the longest gap with no
job completed by any worker, the longest a job written from a second before the event on
waited from its write to its start (against the steady state before the first event),
and the jobs run twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import signal
import subprocess
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer

from bench.harness import Bench, Row
from bench.load import say
from jobstream.cli import procs
from jobstream.kafka import make_producer
from jobstream.kafka_security import kafka_options
from jobstream.settings import Settings, WorkerSettings
from schemas import JobEnvelope, Priority, decode_status_batch, encode_job, job_headers, new_job_id

PARTITIONS = 24
EVENTS = ("join", "leave (SIGTERM)", "crash (kill -9)", "restart (SIGTERM, start)")


def _now_ms() -> int:
    return int(time.time() * 1000)


@dataclass
class Ledger:
    """What the writer wrote (id -> write time) and what the status topic says happened."""

    written: dict[str, int] = field(default_factory=dict)
    started: dict[str, list[int]] = field(default_factory=dict)  # id -> each `active` time
    completed_at: list[int] = field(default_factory=list)

    def see(self, event: dict[str, Any]) -> None:
        if event["state"] == "active":
            self.started.setdefault(event["job_id"], []).append(event["at"])
        elif event["state"] == "completed":
            self.completed_at.append(event["at"])

    def cost(self, since: int, until: int) -> tuple[int, int, int]:
        """Between two wall-clock times (ms): the longest gap with no completion, the longest a
        job written from a second before `since` on waited from its write to its first start,
        and the jobs started a second time then."""
        done = sorted(t for t in self.completed_at if since <= t <= until)
        marks = [since, *done, until]
        gap = max(b - a for a, b in itertools.pairwise(marks))
        waits = [
            starts[0] - self.written[job]
            for job, starts in self.started.items()
            if job in self.written and since - 1_000 <= self.written[job] <= until
        ]
        twice = sum(1 for starts in self.started.values() if len(starts) > 1 and since <= starts[1] <= until)
        return gap, max(waits, default=0), twice

    async def caught_up(self, upto: int, timeout_s: float = 120.0) -> None:
        """Wait until every job written by `upto` (ms) has started."""
        deadline = time.monotonic() + timeout_s
        while any(job not in self.started for job, at in self.written.items() if at <= upto):
            if time.monotonic() > deadline:
                raise TimeoutError(f"jobs written by {upto} still not started after {timeout_s:g} s")
            await asyncio.sleep(0.1)


async def _write(s: Settings, rate: int, ledger: Ledger, stop: asyncio.Event) -> None:
    """No-op jobs at `rate` per second until `stop`, each write time kept in the ledger."""
    producer = make_producer(s)
    await producer.start()
    try:
        start, sent, pending = time.monotonic(), 0, []
        while not stop.is_set():
            while sent < int((time.monotonic() - start) * rate):
                job = JobEnvelope(id=new_job_id(), type="example.noop", priority=Priority.normal,
                                  created_at=_now_ms())  # fmt: skip
                ledger.written[job.id] = job.created_at
                topic = s.topics.jobs(job.priority)
                pending.append(await producer.send(topic, encode_job(job), headers=job_headers(job)))
                sent += 1
            if len(pending) > 1_000:
                await asyncio.gather(*pending)
                pending.clear()
            await asyncio.sleep(0.005)
        await asyncio.gather(*pending)
    finally:
        await producer.close()


async def _follow(s: Settings, ledger: Ledger, stop: asyncio.Event) -> None:
    consumer = AIOKafkaConsumer(
        s.topics.status, **kafka_options(s), group_id=None, auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        while not stop.is_set():
            for records in (await consumer.getmany(timeout_ms=100, max_records=5_000)).values():
                for record in records:
                    for event in decode_status_batch(record.value):
                        ledger.see(event)
    finally:
        await consumer.stop()


class Group:
    """The worker processes of one run, by name, each with its instance id when static."""

    def __init__(self, bench: Bench, s: Settings, static: bool) -> None:
        self.bench, self.s, self.static = bench, s, static
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str) -> None:
        env = {"JOBSTREAM_INSTANCE_ID": f"{self.s.topic_prefix}-{name}"} if self.static else {}
        args = ["worker", "consumer.examples:app", "--concurrency", "64"]
        self.procs[name] = self.bench.spawn_cli(name, args, self.s, env)

    async def stop(self, name: str, sig: int = signal.SIGTERM) -> None:
        proc = self.procs.pop(name)
        self.bench.forget(proc)
        await asyncio.to_thread(procs.stop, proc, grace_s=30, sig=sig)


async def _one_run(bench: Bench, static: bool) -> dict[str, tuple[int, int, int]]:
    """The four events with one kind of membership; per event its `Ledger.cost`, and the
    steady state before them under "steady"."""
    plan, kind = bench.plan, "static" if static else "dynamic"
    s = await bench.fresh(f"rebalance-{kind}", partitions=PARTITIONS)
    session_s = WorkerSettings().session_timeout_ms / 1000
    ledger, stop = Ledger(), asyncio.Event()
    tasks = [asyncio.create_task(_write(s, plan.rebalance_rate, ledger, stop)),
             asyncio.create_task(_follow(s, ledger, stop))]  # fmt: skip
    group, costs = Group(bench, s, static), {}
    try:
        group.start("w0")
        group.start("w1")
        await asyncio.sleep(plan.rebalance_settle_s * 2)  # both started and settled
        steady_from = _now_ms()
        await asyncio.sleep(plan.rebalance_settle_s)
        await ledger.caught_up(_now_ms())
        costs["steady"] = ledger.cost(steady_from, _now_ms())
        for event in EVENTS:
            bench.check_alive()
            say(f"8 ({kind} membership): {event}")
            t0 = _now_ms()
            settle = plan.rebalance_settle_s
            if event == "join":
                group.start("w2")
            elif event == "leave (SIGTERM)":
                await group.stop("w2")
            elif event == "crash (kill -9)":
                await group.stop("w1", signal.SIGKILL)
                await asyncio.sleep(session_s)  # until the group notices
                group.start("w1")
            else:
                await group.stop("w0")
                group.start("w0")
            await asyncio.sleep(settle)
            await ledger.caught_up(_now_ms())  # what waited on a partition nobody read has run
            costs[event] = ledger.cost(t0, _now_ms())
    finally:
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        for name in list(group.procs):
            with contextlib.suppress(Exception):
                await group.stop(name)
    return costs


async def run(bench: Bench) -> None:
    """Scenario 8: both kinds of membership; a row each, and the detail in the notes."""
    for static in (False, True):
        kind = "static" if static else "dynamic"
        costs = await _one_run(bench, static)
        steady = costs.pop("steady")
        shown = "; ".join(
            f"{event} {gap / 1000:.1f} / {wait / 1000:.1f} s" for event, (gap, wait, _) in costs.items()
        )
        label = "longest pause in completions / longest a job waited, per event"
        bench.rows.append(Row(f"8. Rebalance, {kind} membership: {label}", shown))
        twice = Counter({event: n for event, (_, _, n) in costs.items()})
        bench.notes.append(
            f"8 ({kind} membership, {bench.plan.rebalance_rate} jobs/s, 2 workers, {PARTITIONS} partitions): "
            f"steady: longest pause {steady[0]} ms, longest wait {steady[1]} ms; "
            + "; ".join(
                f"{event}: pause {gap} ms, longest wait {wait} ms, {n} run twice"
                for event, (gap, wait, n) in costs.items()
            )
            + f" ({sum(twice.values())} run twice in all)"
        )


__all__ = ["run"]
