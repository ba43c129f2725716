"""`python -m bench`: throughput and latency of the whole pipeline on this machine.

Starts its own Kafka and Redis (`jobstream.stack`) in `.data/bench/` on free ports, runs
each scenario against a fresh topic prefix with the API, gateway and workers as child
processes, prints a table and writes it with the machine and the command to `--out`.
Ctrl-C or SIGTERM stops every child (and each child dies with us anyway: `procs.spawn`).
The load generators live in `bench.load`.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import logging
import os
import platform
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

import orjson

from bench import delay, load
from bench.retry import StatusWatch, retry_path
from jobstream import procs
from jobstream.kafka import ensure_topics
from jobstream.settings import Settings
from jobstream.stack import KAFKA_VERSION, LocalStack, StackError

say = load.say
TARGETS = {
    "single": 5_000.0, "batch": 30_000.0, "e2e": 20_000.0, "p50": 5.0, "p99": 25.0,
    "retry": 0.0, "late_p99": 100.0, "delay_p50": 10.0, "delay_p99": 20.0,
}  # fmt: skip
_PROBLEM = re.compile(r"\b(ERROR|CRITICAL|WARNING)\b|Traceback")


@dataclass(frozen=True)
class Plan:
    wrk_s: int = 10
    batch_total: int = 200_000
    e2e_jobs: int = 200_000
    lat_rate: int = 500
    lat_s: int = 10
    retry_jobs: int = 20_000

    @classmethod
    def quick(cls) -> Plan:
        return cls(wrk_s=3, batch_total=40_000, e2e_jobs=40_000, lat_s=4, retry_jobs=5_000)


@dataclass
class Row:
    scenario: str
    figure: str
    target: str = "-"
    met: bool | None = None


@dataclass
class Bench:
    plan: Plan
    stack: LocalStack
    logs: Path
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    children: list[tuple[str, subprocess.Popen[bytes], Path]] = field(default_factory=list)
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

    def spawn(self, name: str, args: list[str], settings: Settings) -> subprocess.Popen[bytes]:
        log = self.logs / f"{settings.topic_prefix}-{name}.log"
        proc = procs.spawn(args, log=log, env=self.env(settings))
        self.children.append((name, proc, log))
        return proc

    def spawn_cli(self, name: str, args: list[str], settings: Settings) -> subprocess.Popen[bytes]:
        return self.spawn(name, [sys.executable, "-m", "jobstream.cli", *args], settings)

    def check_alive(self) -> None:
        for name, proc, log in self.children:
            if proc.poll() is not None and not name.startswith("load"):
                raise RuntimeError(f"{name} exited with {proc.returncode}:\n{procs.tail(log, 15)}")

    def stop_children(self, scenario: str = "") -> None:
        """Stop every child (newest first) and note what their logs complain about. Idempotent."""
        while self.children:
            name, proc, log = self.children.pop()
            code = procs.stop(proc, grace_s=20)
            problems = [ln for ln in procs.tail(log, 100_000).splitlines() if _PROBLEM.search(ln)]
            if problems or (code not in (0, -signal.SIGTERM) and not name.startswith("load")):
                head = "\n".join(f"    {ln[:300]}" for ln in problems[:6])
                self.notes.append(
                    f"{scenario}: `{name}` exit {code}, {len(problems)} warning/error "
                    f"lines in `{_shown(log)}`" + (f":\n\n{head}\n" if head else "")
                )

    def meter(self) -> load.CpuMeter:
        kafka, redis = self.stack.kafka, self.stack.redis
        assert kafka is not None and kafka.proc is not None and redis is not None and redis.proc is not None
        started = {n: p.pid for n, p, _ in self.children}
        return load.CpuMeter(
            {"kafka": kafka.proc.pid, "redis": redis.proc.pid, "bench": os.getpid(), **started}
        )

    def cpu_note(self, num: str, meter: load.CpuMeter, since: int) -> None:
        """Note the CPU used since `meter` started, counting the children spawned after
        the first `since` as new."""
        self.notes.append(f"{num}: {meter.report({n: p.pid for n, p, _ in self.children[since:]})}")

    async def fresh(self, name: str) -> Settings:
        """A topic prefix of its own, with its topics created."""
        kafka, redis = self.stack.kafka, self.stack.redis
        assert kafka is not None and redis is not None
        s = Settings(
            kafka_bootstrap_servers=kafka.bootstrap,
            redis_url=redis.url,
            topic_prefix=f"bench{self.run_id}-{name}",
        )
        await ensure_topics(s)
        return s

    async def start_api(self, s: Settings, name: str = "api") -> str:
        port = procs.free_port()
        proc = self.spawn_cli(name, [name, "--port", str(port)], s)
        url = f"http://127.0.0.1:{port}"
        await load.wait_ready(url, lambda: proc.poll() is None)
        return url

    # -- scenarios ---------------------------------------------------------------------

    async def single(self) -> None:
        s, secs = await self.fresh("single"), self.plan.wrk_s
        api = await self.start_api(s)
        wrk = ensure_wrk()
        await load.warm_up(api, "/jobs", load.NOOP_BODY, 1_000, 16)
        async with load.KafkaProbe(s) as probe:
            before, stop = await probe.end_total(), asyncio.Event()
            ticker = asyncio.create_task(
                load.every_second("single-job HTTP, jobs in Kafka", probe.end_total, stop)
            )
            if wrk:
                script = self.logs / "post.lua"
                script.write_text(load.WRK_LUA)
                args = [
                    wrk,
                    "-t2",
                    "-c64",
                    f"-d{secs}s",
                    "--timeout",
                    "5s",
                    "--latency",
                    "-s",
                    str(script),
                    f"{api}/jobs",
                ]
                how = f"wrk 2 threads x 64 connections, {secs} s"
            else:
                args = [sys.executable, "-m", "bench.load", "single", api, "64", str(secs)]
                how = f"asyncio client (wrk missing), 64 connections, {secs} s"
            meter, since = self.meter(), len(self.children)
            proc = self.spawn("load", args, s)
            out_log = self.children[-1][2]
            while proc.poll() is None:
                self.check_alive()
                await asyncio.sleep(0.1)
            stop.set()
            await ticker
            in_kafka = await probe.end_total() - before
        out = procs.tail(out_log, 200)
        r = load.parse_wrk(out) if wrk else orjson.loads(out.splitlines()[-1])
        if "requests" not in r:
            raise RuntimeError(f"could not read the load generator's output:\n{out}")
        ok = r["requests"] - r["non2xx"]
        rate = ok / r["seconds"]
        self.row(f"1. Single-job HTTP `POST /jobs` ({how})", rate, "single")
        lat = f", latency p50 {r['p50_ms']:.1f} ms p99 {r['p99_ms']:.1f} ms" if "p99_ms" in r else ""
        self.notes.append(
            f"1: after 1,000 warm-up requests, {r['requests']:,.0f} requests in {r['seconds']:.1f} s, "
            f"{r['non2xx']:,.0f} non-2xx, {r['socket_errors']:,.0f} socket errors{lat}; "
            f"{in_kafka:,} jobs reached Kafka"
        )
        self.cpu_note("1", meter, since)
        self.stop_children("1")

    async def batch(self) -> None:
        s, total, size, inflight = await self.fresh("batch"), self.plan.batch_total, 10_000, 4
        api = await self.start_api(s)
        body = orjson.dumps({"jobs": [load.NOOP] * size})
        await load.warm_up(api, "/jobs/batch", body, 2, 2)
        pool, counts = load.HttpPool(api), {"ok": 0, "failed": 0, "http_errors": 0}
        batches = list(range(total // size))

        async def client() -> None:
            while batches:
                batches.pop()
                status, data = await pool.request("POST", "/jobs/batch", body)
                if status != 200:
                    counts["http_errors"] += 1
                    if counts["http_errors"] == 1:
                        self.notes.append(f"2: first failed request: HTTP {status} {data[:300]!r}")
                    continue
                results = orjson.loads(data)["results"]
                failed = sum(1 for x in results if "error" in x)
                counts["ok"] += len(results) - failed
                counts["failed"] += failed

        async def accepted() -> int:
            self.check_alive()
            return counts["ok"]

        stop = asyncio.Event()
        ticker = asyncio.create_task(load.every_second("batch HTTP, jobs accepted", accepted, stop))
        meter, since = self.meter(), len(self.children)
        start = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(inflight)))
        secs = time.perf_counter() - start
        stop.set()
        await ticker
        await pool.close()
        self.row(
            f"2. Batch HTTP `POST /jobs/batch` ({size:,}-job batches, {inflight} in flight)",
            counts["ok"] / secs,
            "batch",
        )
        self.notes.append(
            f"2: after 2 warm-up batches, {counts['ok']:,} of {total:,} jobs accepted in {secs:.2f} s; "
            f"{counts['failed']:,} item errors, {counts['http_errors']} failed requests"
        )
        self.cpu_note("2", meter, since)
        self.stop_children("2")

    async def e2e(self, workers: int) -> None:
        s, n = await self.fresh(f"e2e{workers}"), self.plan.e2e_jobs
        t0 = time.perf_counter()
        await load.preload(s, n, lambda k: say(f"preload: {k:,}/{n:,} jobs in Kafka"))
        say(f"preload: {n:,} jobs in {time.perf_counter() - t0:.1f} s; starting {workers} worker(s)")
        # Timed on the workers' own clocks, from the first job started to the last completed
        # (status events), so a group still settling before the first commit does not count.
        async with StatusWatch(s) as watch:
            meter, since = self.meter(), len(self.children)
            spawned = last_print = time.perf_counter()
            for i in range(workers):
                self.spawn_cli(f"worker-{i}", ["worker", "consumer.examples:app", "--concurrency", "64"], s)
            deadline = spawned + max(180.0, n / 500)
            while watch.completed < n:
                self.check_alive()
                await watch.poll()
                now = time.perf_counter()
                if now - last_print >= 1.0:
                    say(
                        f"end-to-end {workers} worker(s): {now - spawned:4.0f}s "
                        f"completed {watch.completed:>9,}/{n:,}"
                    )
                    last_print = now
                if now > deadline:
                    raise TimeoutError(
                        f"only {watch.completed:,} of {n:,} jobs completed after {now - spawned:.0f}s"
                    )
        rate, counted, secs = watch.rate_once_all_started()
        label = f"{workers} worker process{'es' if workers > 1 else ''}"
        self.row(f"3. End-to-end no-op, {label} (concurrency 64 each, {n:,} preloaded)", rate, "e2e")
        self.notes.append(
            f"3 ({label}): {counted:,} jobs completed in {secs:.2f} s once all {len(watch.started_by)} "
            f"worker(s) had started (worker clocks); all done {time.perf_counter() - spawned:.1f} s "
            "after the spawn"
        )
        self.cpu_note(f"3 ({label})", meter, since)
        self.stop_children(f"3 ({label})")

    async def latency(self) -> None:
        s, p = await self.fresh("latency"), self.plan
        api = await self.start_api(s)
        gw = await self.start_api(s, "gateway")
        logs = []
        for i in range(2):
            self.spawn_cli(f"worker-{i}", ["worker", "consumer.examples:app", "--concurrency", "64"], s)
            logs.append(self.children[-1][2])
        while not all(re.search(r"assigned [1-9]", procs.tail(log, 100)) for log in logs):
            self.check_alive()
            await asyncio.sleep(0.2)
        await asyncio.sleep(1.0)  # let the group settle after the second member joined
        ws = gw.replace("http://", "ws://") + "/ws"
        say("latency: warm-up, 1 s at 100 jobs/s")
        await load.LatencyRun(api, ws).run(100, 1, lambda m: None)
        meter, since = self.meter(), len(self.children)
        run = load.LatencyRun(api, ws)

        def report(msg: str) -> None:
            self.check_alive()
            say(f"latency: {msg}")

        await run.run(p.lat_rate, p.lat_s, report)
        lat = run.latencies_ms()
        if not lat:
            raise RuntimeError(f"no job completed; errors: {run.errors[:5]}")
        p50, p99 = lat[len(lat) // 2], lat[min(len(lat) - 1, int(len(lat) * 0.99))]
        what = f"{p.lat_rate} jobs/s for {p.lat_s} s, API + gateway + 2 workers"
        self.row(f"4. Latency p50, POST sent to `completed` on the WebSocket ({what})", p50, "p50", "ms")
        self.row("4. Latency p99", p99, "p99", "ms")
        self.rows.append(Row("4. Latency max; completed", f"{lat[-1]:.1f} ms; {len(lat):,} of {run.sent:,}"))
        self.notes.append(
            f"4: {run.sent:,} sent, {len(run.sent_at):,} accepted, {len(lat):,} completed "
            f"events seen, {len(run.errors)} errors {run.errors[:3]}"
        )
        self.cpu_note("4", meter, since)
        self.stop_children("4")

    async def retry(self) -> None:
        s, n = await self.fresh("retry"), self.plan.retry_jobs
        meter, since = self.meter(), len(self.children)

        def workers() -> None:
            for i in range(2):
                self.spawn_cli(f"worker-{i}", ["worker", "consumer.examples:app", "--concurrency", "64"], s)

        rate, p50, p99, worst, late = await retry_path(s, n, workers, self.check_alive, say)
        self.row(f"5. Retry path: jobs that fail once then succeed, 2 workers ({n:,} jobs)", rate, "retry")
        what = "5. Retry lateness p99 at a steady 500 jobs/s (second attempt's start minus its due)"
        self.row(what, p99, "late_p99", "ms")
        self.rows.append(Row("5. Retry lateness p50; max", f"{p50} ms; {worst} ms"))
        self.notes.append(
            f"5: a burst of {n:,} jobs through the 1 s tier, then 500 jobs/s for 10 s; of the latter, "
            f"{late:,} started more than 100 ms after due"
        )
        self.cpu_note("5", meter, since)
        self.stop_children("5")

    async def delay(self) -> None:
        """Scenario 6 (`bench.delay`): delayed jobs through a scheduler process."""
        s = await self.fresh("delay")
        proc = self.spawn_cli("scheduler", ["scheduler"], s)
        log = self.children[-1][2]
        while "scheduler running" not in procs.tail(log, 50):
            if proc.poll() is not None:
                raise RuntimeError(f"the scheduler exited:\n{procs.tail(log, 15)}")
            await asyncio.sleep(0.1)
        meter, since = self.meter(), len(self.children)
        n = 20_000 if self.plan.lat_s < 10 else 100_000
        secs = 10
        out = await delay.scenario(s, 1_000, secs, n, lambda m: say(m))
        p, b = out["paced"], out["burst"]
        what = f"1,000 due/s for {secs} s, record seen on its topic minus due time"
        self.row(f"6. Delayed-job lateness p50 ({what})", p["p50_ms"], "delay_p50", "ms")
        self.row("6. Delayed-job lateness p99", p["p99_ms"], "delay_p99", "ms")
        self.rows.append(
            Row(f"6. {n:,} delayed jobs due at one instant: all on their topic", f"{b['seconds']:.2f} s")
        )
        self.notes.append(
            f"6: lateness min {p['min_ms']:.1f} ms max {p['max_ms']:.1f} ms; sent by the scheduler "
            f"(record timestamp) p50 {p['sent_p50_ms']:.1f} ms p99 {p['sent_p99_ms']:.1f} ms; "
            f"burst first seen {b['first_ms']:.0f} ms after due; one `jobstream scheduler` process, "
            f"after an unmeasured {delay.WARM_UP_S} s paced run"
        )
        self.cpu_note("6", meter, since)
        self.stop_children("6")

    def row(self, scenario: str, value: float, key: str, unit: str = "jobs/s") -> None:
        target = TARGETS[key]
        if unit == "ms":
            shown, goal, met = f"{value:.1f} ms", f"≤ {target:.0f} ms", value <= target
        else:
            shown, goal, met = f"{value:,.0f} jobs/s", f"≥ {target:,.0f} jobs/s", value >= target
        self.rows.append(Row(scenario, shown, goal, met))
        say(f"RESULT {scenario}: {shown} (target {goal}: {'met' if met else 'NOT met'})")

    async def run_all(self, only: set[str] | None = None) -> int:
        steps = [
            ("1", self.single),
            ("2", self.batch),
            ("3", lambda: self.e2e(1)),
            ("3", lambda: self.e2e(2)),
            ("4", self.latency),
            ("5", self.retry),
            ("6", self.delay),
        ]
        failed = 0
        for num, step in steps:
            if only and num not in only:
                continue
            try:
                await step()
            except Exception as exc:
                failed += 1
                say(f"scenario {num} failed: {exc!r}")
                self.rows.append(Row(f"{num}. (failed)", f"error: {str(exc).splitlines()[0][:200]}"))
                self.notes.append(f"{num}: failed: {exc!r}")
            finally:
                self.stop_children(num)
        return 1 if failed else 0


def _tick(what: str, done: threading.Event) -> None:
    start = time.monotonic()
    while not done.wait(1.0):
        say(f"{what} ({time.monotonic() - start:.0f}s)")


def ensure_wrk() -> str | None:
    """The path of wrk, installed with apt-get when missing and root; None to fall back."""
    if found := shutil.which("wrk"):
        return found
    if os.geteuid() == 0 and shutil.which("apt-get"):
        say("installing wrk with apt-get")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        for cmd in (
            ["apt-get", "install", "-y", "-q", "wrk"],
            ["apt-get", "update", "-q"],
            ["apt-get", "install", "-y", "-q", "wrk"],
        ):
            subprocess.run(cmd, env=env, check=False, capture_output=True)
            if found := shutil.which("wrk"):
                return found
    say("wrk is not available: using the asyncio client instead")
    return None


def machine() -> list[tuple[str, str]]:
    def grep(path: str, key: str) -> str:
        try:
            text = Path(path).read_text()
        except OSError:
            return "?"
        m = re.search(rf"^{key}\s*[:=]\s*\"?(.*?)\"?$", text, re.M)
        return m[1].strip() if m else "?"

    mem_kb = grep("/proc/meminfo", "MemTotal").split()[0]
    mem = f"{int(mem_kb) / 1024**2:.1f} GiB" if mem_kb.isdigit() else "?"
    return [
        ("CPU", grep("/proc/cpuinfo", "model name")),
        ("Cores", str(os.cpu_count())),
        ("Memory", mem),
        ("OS", f"{grep('/etc/os-release', 'PRETTY_NAME')}, Linux {platform.release()}"),
        ("Python", platform.python_version()),
        ("Kafka", f"{KAFKA_VERSION} (single KRaft node, local)"),
        ("Date", dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")),
    ]


def render(bench: Bench, command: str, quick: bool) -> str:
    mark = {True: "yes", False: "**no**", None: "-"}
    lines = [
        "# Benchmarks",
        "",
        "Reproduce from a source checkout (the benchmarks are not in the installed package): "
        "`make bench`, or without the Makefile, from the project root with the venv installed "
        "(`python3 -m venv .venv && .venv/bin/pip install -e .`), Java 17+, Maven and "
        "redis-server (installed with apt-get when root) and optionally `wrk`, run "
        "`.venv/bin/python -m bench` (add `--quick` for a short run). It starts its "
        "own Kafka and Redis under `.data/bench/` on free ports and stops everything at the end; "
        "child logs are kept in `.data/bench/logs/`.",
        "",
        f"Command: `{command}`{' (quick run: smaller figures)' if quick else ''}",
        "",
        "| | |",
        "| --- | --- |",
        *(f"| {k} | {v} |" for k, v in machine()),
        "",
        "| scenario | measured | target | met |",
        "| --- | ---: | ---: | :---: |",
        *(f"| {r.scenario} | {r.figure} | {r.target} | {mark[r.met]} |" for r in bench.rows),
        "",
        "## Details",
        "",
        "CPU lines: average cores each process used during the measurement; 'everything else' is "
        "the rest of the machine's busy time (other programs running meanwhile).",
        "",
        *(f"- {n}" for n in bench.notes),
        "",
    ]
    return "\n".join(lines)


def bench_cli(args: argparse.Namespace) -> int:
    plan = Plan.quick() if args.quick else Plan()
    data = Path(".data").resolve()
    shutil.rmtree(data / "bench", ignore_errors=True)
    stack = LocalStack(
        data / "bench",
        kafka_port=procs.free_port(),
        controller_port=procs.free_port(),
        redis_port=procs.free_port(),
        jar_cache=data,
    )
    bench = Bench(plan, stack, data / "bench" / "logs")
    bench.logs.mkdir(parents=True, exist_ok=True)
    python = os.path.relpath(sys.executable)
    command = shlex.join(
        [sys.executable if python.startswith("..") else python, "-m", "bench", *sys.argv[1:]]
    )

    def to_sigint(signum: int, frame: FrameType | None) -> None:
        os.kill(os.getpid(), signal.SIGINT)  # one path for both: asyncio cancels the run cleanly

    # A shell starts background jobs with SIGINT ignored, and then asyncio would not
    # install its handler: restore Python's, so SIGINT and SIGTERM always stop the run.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, to_sigint)
    logging.basicConfig(level=logging.WARNING, format="[bench] %(levelname)s %(name)s %(message)s")
    logging.getLogger("aiokafka").setLevel(logging.ERROR)  # retries on brand-new topics are routine
    code, starting = 130, threading.Event()
    try:
        threading.Thread(target=_tick, args=("starting Kafka and Redis", starting), daemon=True).start()
        try:
            stack.start()
        finally:
            starting.set()
        try:
            import uvloop

            runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
        except ImportError:  # pragma: no cover
            runner = asyncio.Runner()
        with runner:
            code = runner.run(bench.run_all(set(args.only.split(",")) if args.only else None))
    except KeyboardInterrupt:
        say("interrupted: stopping everything")
    except StackError as exc:
        say(f"could not start Kafka and Redis: {exc}")
        code = 1
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda n, f: say("still stopping, please wait"))
        bench.stop_children()
        stack.stop()
        say("stopped Kafka, Redis and every child process")
    if code == 130:
        return code
    doc = render(bench, command, args.quick)
    print("\n" + doc)
    if args.only:
        say(f"--only {args.only}: {args.out} left as it was")
        return code
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(doc)
    say(f"wrote {args.out}")
    return code


def _shown(path: Path) -> str:
    """`path` as the report shows it: from the project root (`.data/...`), never the machine's."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return path.name
