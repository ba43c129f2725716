"""The harness every scenario runs in: a local stack, child processes, CPU notes, the table.

`Bench` owns what a run has started: Kafka and Redis (`jobstream.cli.stack.LocalStack`, started
by `python -m bench`) and the children a scenario spawns (API, gateway, workers, load
generators), each logging to `.data/bench/logs/`. `stop_children` is idempotent and notes
any warning or error a child logged; every child also dies with us (`procs.spawn`). A
scenario is `async def run(bench)` in a module of its own (`bench.single` ... `bench.delay`);
`run_all` runs them in order, and one that fails becomes a `(failed)` row, never an
aborted run.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bench import load
from bench.cpu import CpuMeter
from bench.load import say
from jobstream.cli import procs
from jobstream.cli.stack import LocalStack
from jobstream.kafka import ensure_topics
from jobstream.settings import Settings

TARGETS = {
    "single": 6_000.0, "batch": 30_000.0, "e2e": 20_000.0, "p50": 5.0, "p99": 15.0, "p99_fast": 50.0,
    "serial_p50": 2.0, "retry": 0.0, "late_p99": 100.0, "delay_p50": 10.0, "delay_p99": 20.0,
    "schedule_p50": 50.0, "schedule_p99": 250.0,
}  # fmt: skip
_PROBLEM = re.compile(r"\b(ERROR|CRITICAL|WARNING)\b|Traceback")
_EXPECTED = "ACCESS IS OPEN"  # the services' warning without API keys, as the benchmarks run them


@dataclass(frozen=True)
class Plan:
    """How much each scenario does: the full run, or `quick()` for a short one."""

    wrk_s: int = 10
    batch_total: int = 200_000
    e2e_jobs: int = 200_000
    lat_rate: int = 500
    lat_s: int = 10
    lat_warm_s: int = 20
    serial_n: int = 1_000
    curve_rates: tuple[int, ...] = (50, 100, 200, 1_000, 2_000)
    curve_s: int = 5
    retry_jobs: int = 20_000
    scale_workers: tuple[int, ...] = (1, 2, 4, 8)
    scale_noop_jobs: int = 60_000  # written while the workers are stopped: within their session
    scale_io_jobs_per_worker: int = 6_000
    rebalance_rate: int = 500
    rebalance_settle_s: float = 8.0

    @classmethod
    def quick(cls) -> Plan:
        return cls(
            wrk_s=3, batch_total=40_000, e2e_jobs=40_000, lat_s=4, lat_warm_s=2, serial_n=200, curve_s=2,
            retry_jobs=5_000, scale_noop_jobs=20_000, scale_io_jobs_per_worker=2_000, rebalance_settle_s=4.0,
        )  # fmt: skip


@dataclass
class Row:
    """One line of the report's table; `met` is None for a figure without a target."""

    scenario: str
    figure: str
    target: str = "-"
    met: bool | None = None


@dataclass
class Bench:
    """One run: its plan, its stack, the children alive now, and the rows and notes so far."""

    plan: Plan
    stack: LocalStack
    logs: Path
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    children: list[tuple[str, subprocess.Popen[bytes], Path]] = field(default_factory=list)
    # documents a scenario draws (path from the project root -> text), written with the report
    files: dict[str, str] = field(default_factory=dict)
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:6])

    # -- children ----------------------------------------------------------------------

    def env(self, settings: Settings) -> dict[str, str]:
        return {
            **os.environ,
            "PYTHONUNBUFFERED": "1",
            "KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
            "JOBSTREAM_KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
            "REDIS_URL": settings.redis_url,
            "JOBSTREAM_REDIS_URL": settings.redis_url,
            "JOBSTREAM_TOPIC_PREFIX": settings.topic_prefix,
            "JOBSTREAM_DRAIN_TIMEOUT_S": "5",
        }

    def spawn(
        self, name: str, args: list[str], settings: Settings, env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        log = self.logs / f"{settings.topic_prefix}-{name}.log"
        proc = procs.spawn(args, log=log, env={**self.env(settings), **(env or {})})
        self.children.append((name, proc, log))
        return proc

    def spawn_cli(
        self, name: str, args: list[str], settings: Settings, env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        return self.spawn(name, [sys.executable, "-m", "jobstream.cli", *args], settings, env)

    def forget(self, proc: subprocess.Popen[bytes]) -> None:
        """Stop tracking a child the scenario stopped or killed itself (its log is kept)."""
        self.children = [c for c in self.children if c[1] is not proc]

    def check_alive(self) -> None:
        for name, proc, log in self.children:
            if proc.poll() is not None and not name.startswith("load"):
                raise RuntimeError(f"{name} exited with {proc.returncode}:\n{procs.tail(log, 15)}")

    def stop_children(self, scenario: str = "") -> None:
        """Stop every child (newest first) and note what their logs complain about. Idempotent."""
        while self.children:
            name, proc, log = self.children.pop()
            code = procs.stop(proc, grace_s=20)
            lines = procs.tail(log, 100_000).splitlines()
            problems = [ln for ln in lines if _PROBLEM.search(ln) and _EXPECTED not in ln]
            if problems or (code not in (0, -signal.SIGTERM) and not name.startswith("load")):
                head = "\n".join(f"    {ln[:300]}" for ln in problems[:6])
                self.notes.append(
                    f"{scenario}: `{name}` exit {code}, {len(problems)} warning/error "
                    f"lines in `{_shown(log)}`" + (f":\n\n{head}\n" if head else "")
                )

    def meter(self) -> CpuMeter:
        kafka, redis = self.stack.kafka, self.stack.redis
        assert kafka is not None and kafka.pids and redis is not None and redis.proc is not None
        started = {n: p.pid for n, p, _ in self.children}
        return CpuMeter({"kafka": kafka.pids[0], "redis": redis.proc.pid, "bench": os.getpid(), **started})

    def cpu_note(self, num: str, meter: CpuMeter, since: int) -> None:
        """Note the CPU used since `meter` started, counting the children spawned after
        the first `since` as new."""
        self.notes.append(f"{num}: {meter.report({n: p.pid for n, p, _ in self.children[since:]})}")

    async def fresh(self, name: str, partitions: int = 6) -> Settings:
        """A topic prefix of its own, with its topics created (`partitions` per job topic)."""
        kafka, redis = self.stack.kafka, self.stack.redis
        assert kafka is not None and redis is not None
        s = Settings(
            kafka_bootstrap_servers=kafka.bootstrap,
            redis_url=redis.url,
            topic_prefix=f"bench{self.run_id}-{name}",
            partitions=partitions,
        )
        await ensure_topics(s)
        return s

    async def start_api(self, s: Settings, name: str = "api", env: dict[str, str] | None = None) -> str:
        port = procs.free_port()
        proc = self.spawn_cli(name, [name, "--port", str(port)], s, env)
        url = f"http://127.0.0.1:{port}"
        await load.wait_ready(url, lambda: proc.poll() is None)
        return url

    async def start_pipeline(self, s: Settings, workers: int = 2) -> tuple[str, str]:
        """An API, a gateway and `workers` workers (example handlers, concurrency 64) on `s`,
        once every worker holds partitions: the API's URL and the gateway's WebSocket URL."""
        api = await self.start_api(s)
        gw = await self.start_api(s, "gateway")
        logs = []
        for i in range(workers):
            self.spawn_cli(f"worker-{i}", ["worker", "consumer.examples:app", "--concurrency", "64"], s)
            logs.append(self.children[-1][2])
        while not all(re.search(r"assigned [1-9]", procs.tail(log, 100)) for log in logs):
            self.check_alive()
            await asyncio.sleep(0.2)
        return api, gw.replace("http://", "ws://") + "/ws"

    def row(self, scenario: str, value: float, key: str, unit: str = "jobs/s") -> None:
        target = TARGETS[key]
        if unit == "ms":
            shown, goal, met = f"{value:.1f} ms", f"≤ {target:.0f} ms", value <= target
        else:
            shown, goal, met = f"{value:,.0f} jobs/s", f"≥ {target:,.0f} jobs/s", value >= target
        self.rows.append(Row(scenario, shown, goal, met))
        say(f"RESULT {scenario}: {shown} (target {goal}: {'met' if met else 'NOT met'})")

    async def run_all(self, steps: Sequence[Step], only: set[str] | None = None) -> int:
        """Run each step in order (those numbered in `only`, when given); 1 if any failed."""
        failed = 0
        for num, step in steps:
            if only and num not in only:
                continue
            try:
                await step(self)
            except Exception as exc:
                failed += 1
                say(f"scenario {num} failed: {exc!r}")
                self.rows.append(Row(f"{num}. (failed)", f"error: {str(exc).splitlines()[0][:200]}"))
                self.notes.append(f"{num}: failed: {exc!r}")
            finally:
                self.stop_children(num)
        return 1 if failed else 0


# A scenario's number (what `--only` selects) and its coroutine function.
Step = tuple[str, Callable[[Bench], Awaitable[None]]]


def _shown(path: Path) -> str:
    """`path` as the report shows it: from the project root (`.data/...`), never the machine's."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return path.name


__all__ = ["TARGETS", "Bench", "Plan", "Row", "Step"]
