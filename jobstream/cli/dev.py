"""`jobstream dev` (what `make run` runs): the whole pipeline on this machine.

Starts Kafka (one node, or with `--brokers N` a cluster of N, node i on the Kafka and
controller ports + 2i) and Redis (`jobstream.cli.stack`) under the data folder, creates the
topics, then runs the API, the gateway and N workers as child processes, each logging to
`<data>/logs/<name>.log` (echoed to the terminal as `name | line`; JOBSTREAM_DEV_ECHO=0
turns that off). A child that dies is restarted with backoff; one that keeps dying, or
Redis or every Kafka node dying, shuts everything down (see `jobstream.cli.supervisor`); a
cluster carries on without a node, as it would in production.

Ctrl-C or SIGTERM stops in dependency order: the API first (no new jobs), then the
workers (they drain in-flight jobs), then the gateway (so it streams their last events),
then Kafka and Redis. A second Ctrl-C kills whatever is still running.

Environment: JOBSTREAM_DATA_DIR (default `.data`), JOBSTREAM_KAFKA_PORT (9092),
JOBSTREAM_KAFKA_CONTROLLER_PORT (9093), JOBSTREAM_REDIS_PORT (6379), JOBSTREAM_API_PORT
(8000), JOBSTREAM_GATEWAY_PORT (8001); JOBSTREAM_AUTH=required (a development key: `devaccess`).
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from jobstream.cli import procs
from jobstream.cli.devaccess import access_env, access_lines
from jobstream.cli.stack import LocalStack, StackError
from jobstream.cli.supervisor import LogEcho, Supervisor, echo_enabled, say, stop_procs
from jobstream.kafka import TopicsError, ensure_topics
from jobstream.settings import Settings

READY_TIMEOUT_S = 120.0
WORKER_GRACE_S = 35.0  # the workers' drain timeout (30 s) plus time to commit and leave the group


@dataclass(frozen=True)
class DevConfig:
    data_dir: Path
    kafka_port: int
    controller_port: int
    redis_port: int
    api_port: int
    gateway_port: int
    worker_metrics_port: int  # worker i (from 1) serves /metrics on this + i - 1

    @classmethod
    def from_env(cls) -> DevConfig:
        def port(name: str, default: int) -> int:
            return int(os.environ.get(name, default))

        return cls(
            data_dir=Path(os.environ.get("JOBSTREAM_DATA_DIR", ".data")).resolve(),
            kafka_port=port("JOBSTREAM_KAFKA_PORT", 9092),
            controller_port=port("JOBSTREAM_KAFKA_CONTROLLER_PORT", 9093),
            redis_port=port("JOBSTREAM_REDIS_PORT", 6379),
            api_port=port("JOBSTREAM_API_PORT", 8000),
            gateway_port=port("JOBSTREAM_GATEWAY_PORT", 8001),
            worker_metrics_port=port("JOBSTREAM_WORKER_METRICS_PORT", 9101),
        )


class _Signals:
    """First SIGINT/SIGTERM asks for a graceful stop; any further one asks to kill."""

    def __init__(self) -> None:
        self.count = 0

    def install(self) -> None:
        signal.signal(signal.SIGINT, self._handle)
        signal.signal(signal.SIGTERM, self._handle)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.count += 1
        name = signal.Signals(signum).name
        if self.count == 1:
            say(f"{name}: shutting down gracefully (press Ctrl-C again to kill everything)")
        elif self.count == 2:
            say(f"{name} again: killing what is still running")

    @property
    def stop(self) -> bool:
        return self.count >= 1

    @property
    def force(self) -> bool:
        return self.count >= 2


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


class _Ticker:
    """Prints 'still <what> (Ns)' every few seconds while a long blocking step runs."""

    def __init__(self, what: str, every_s: float = 10.0) -> None:
        self._what, self._every = what, every_s
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        start = time.monotonic()
        while not self._done.wait(self._every):
            say(f"still {self._what} ({time.monotonic() - start:.0f}s)")

    def __enter__(self) -> _Ticker:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1.0) as resp:
            return bool(resp.status == 200)
    except (OSError, urllib.error.URLError):
        return False


class DevRun:
    def __init__(self, cfg: DevConfig, workers: int, concurrency: int, app: str, brokers: int = 1) -> None:
        self.cfg, self.workers, self.concurrency, self.app = cfg, workers, concurrency, app
        self.logs = cfg.data_dir / "logs"
        self.signals = _Signals()
        self.echo = LogEcho()
        self.sup = Supervisor(force=lambda: self.signals.force, echo=self.echo)
        self.stack = LocalStack(
            cfg.data_dir,
            kafka_port=cfg.kafka_port,
            controller_port=cfg.controller_port,
            redis_port=cfg.redis_port,
            jar_cache=cfg.data_dir,
            brokers=brokers,
        )

    def run(self) -> int:
        ports = [(self.cfg.api_port, "API"), (self.cfg.gateway_port, "gateway")]
        ports += [(self._metrics_port(i), f"worker-{i} metrics") for i in range(1, self.workers + 1)]
        for p, what in ports:
            if procs.port_open(p):
                say(f"port {p} for the {what} is taken: stop what holds it or set another port")
                return 1
        # Until the stack is up, a signal unwinds through LocalStack.start, which stops
        # whatever it had started; after that, signals only set flags the loops watch.
        signal.signal(signal.SIGTERM, _raise_interrupt)
        say(f"data folder {self.cfg.data_dir}")
        try:
            with _Ticker("starting Kafka and Redis"):
                self.stack.start()
            self.signals.install()
        except KeyboardInterrupt:
            self.stack.stop()  # idempotent; covers a signal just after start() returned
            say("interrupted while starting Kafka and Redis; stopped them")
            return 130
        except (StackError, TimeoutError) as exc:
            say(f"could not start Kafka and Redis: {exc}")
            return 1
        try:
            return self._run_children()
        finally:
            self._shutdown()

    def _run_children(self) -> int:
        kafka, redis = self.stack.kafka, self.stack.redis
        assert kafka is not None and redis is not None
        settings = Settings(kafka_bootstrap_servers=kafka.bootstrap, redis_url=redis.url)
        try:
            created = asyncio.run(asyncio.wait_for(ensure_topics(settings), 60))
        except TopicsError as exc:
            say(f"the topics on {kafka.bootstrap} are not as asked:\n{exc}")
            return 1
        except Exception as exc:
            say(f"could not create the topics on {kafka.bootstrap}: {exc!r}")
            return 1
        say(f"topics: {len(created)} created" if created else "topics: all exist")
        env = {
            **os.environ,
            "PYTHONUNBUFFERED": "1",
            # Both spellings: the prefixed one wins in Settings when a user has it set.
            "KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap,
            "JOBSTREAM_KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap,
            "REDIS_URL": redis.url,
            "JOBSTREAM_REDIS_URL": redis.url,
            **access_env(self.cfg.data_dir, self.cfg.api_port, self.cfg.gateway_port),
        }
        cli = [sys.executable, "-m", "jobstream.cli"]
        commands = {
            "api": [*cli, "api", "--host", "127.0.0.1", "--port", str(self.cfg.api_port)],
            "gateway": [*cli, "gateway", "--host", "127.0.0.1", "--port", str(self.cfg.gateway_port)],
        }
        for i in range(1, self.workers + 1):
            commands[f"worker-{i}"] = [*cli, "worker", self.app, "--concurrency", str(self.concurrency),
                                       "--metrics-port", str(self._metrics_port(i))]  # fmt: skip
        for name, args in commands.items():
            log = self.logs / f"{name}.log"
            if echo_enabled():
                self.echo.follow(name, log)
            self.sup.add(name, args, log, env)
        self.echo.start()
        say(f"started {', '.join(commands)}; logs in {self.logs}/")
        if not self._wait_ready():
            return 0 if self.signals.stop else 1
        self._banner()
        return self._supervise()

    def _wait_ready(self) -> bool:
        urls = {
            "api": f"http://127.0.0.1:{self.cfg.api_port}/readyz",
            "gateway": f"http://127.0.0.1:{self.cfg.gateway_port}/readyz",
        }
        start = time.monotonic()
        next_note = start + 5.0
        while urls and not self.signals.stop:
            if (dead := self.sup.first_dead()) is not None:
                assert dead.proc is not None
                say(
                    f"{dead.name} exited with {dead.proc.returncode} while starting; shutting down. "
                    f"Its log ({dead.log}) ends with:\n{procs.tail(dead.log, 20)}"
                )
                return False
            urls = {n: u for n, u in urls.items() if not _ready(u)}
            now = time.monotonic()
            if urls and now - start > READY_TIMEOUT_S:
                say(f"{', '.join(urls)} did not answer /readyz within {READY_TIMEOUT_S:.0f}s; shutting down")
                return False
            if urls and now >= next_note:
                say(f"waiting for {', '.join(urls)} to answer /readyz ({now - start:.0f}s)")
                next_note = now + 5.0
            time.sleep(0.2)
        return not self.signals.stop

    def _supervise(self) -> int:
        kafka, redis = self.stack.kafka, self.stack.redis
        assert kafka is not None and redis is not None
        lost: set[int] = set()  # Kafka nodes seen gone; a cluster carries on without one
        while not self.signals.stop:
            if redis.proc is not None and redis.proc.poll() is not None:
                say(f"Redis exited with {redis.proc.returncode}; shutting everything down")
                return 1
            for node in kafka.nodes:
                if node.node_id not in lost and node.proc is not None and node.proc.poll() is not None:
                    lost.add(node.node_id)
                    say(f"Kafka node {node.node_id} exited with {node.proc.returncode} (log {node.log})")
            if len(lost) == len(kafka.nodes):
                say("no Kafka node is left; shutting everything down")
                return 1
            if (fatal := self.sup.poll()) is not None:
                say(fatal)
                say("shutting everything down")
                return 1
            time.sleep(0.2)
        return 0

    def _shutdown(self) -> None:
        force = lambda: self.signals.force  # noqa: E731
        workers = [n for n in self.sup.children if n.startswith("worker-")]
        try:
            self.sup.stop_group(["api"], what="the API", grace_s=15)
            self.sup.stop_group(workers, what="the workers (draining in-flight jobs)", grace_s=WORKER_GRACE_S)
            self.sup.stop_group(["gateway"], what="the gateway", grace_s=15)
            self.echo.close()
            if (kafka := self.stack.kafka) is not None:
                nodes = [(f"kafka-{n.node_id}", n.proc) for n in kafka.nodes]
                stop_procs(nodes, what="Kafka", grace_s=30, force=force)
            if (redis := self.stack.redis) is not None:
                stop_procs([("redis", redis.proc)], what="Redis", grace_s=30, force=force)
            self.stack.stop()  # bookkeeping only: the processes are gone
        except BaseException:
            # Whatever went wrong in here, leave nothing behind.
            self.sup.kill_all()
            self.stack.stop()
            raise
        say("everything stopped")

    def _metrics_port(self, worker: int) -> int:
        return self.cfg.worker_metrics_port + worker - 1

    def _banner(self) -> None:
        api = f"http://127.0.0.1:{self.cfg.api_port}"
        gw = f"127.0.0.1:{self.cfg.gateway_port}"
        kafka, redis = self.stack.kafka, self.stack.redis
        assert kafka is not None and redis is not None
        body = '{"type": "example.echo", "payload": {"hello": "world"}}'
        kafka_logs = ", ".join(str(n.log) for n in kafka.nodes)
        lines = [
            "jobstream is running:",
            f"  API         {api}   (docs {api}/docs)",
            f"  WebSocket   ws://{gw}/ws",
            f"  Dashboard   http://{gw}/",
            f"  Metrics     {api}/metrics, http://{gw}/metrics"
            + "".join(
                f", http://127.0.0.1:{self._metrics_port(i)}/metrics" for i in range(1, self.workers + 1)
            ),
            f"  Kafka       {kafka.bootstrap}   Redis {redis.url}",
            f"  Logs        {self.logs}/   (Kafka: {kafka_logs}, Redis: {redis.data_dir / 'redis.log'})",
            *access_lines(self.cfg.data_dir, api, body),
            f'  jobstream submit example.echo \'{{"hello": "world"}}\' --api {api} --wait',
            "Ctrl-C stops everything (a second Ctrl-C kills).",
        ]
        say("\n".join(lines))


def run_dev(workers: int, concurrency: int, app: str, brokers: int = 1) -> int:
    """Run the pipeline until Ctrl-C/SIGTERM; returns the exit code (0 after a requested stop)."""
    if workers < 0 or concurrency < 1 or not 1 <= brokers <= 9:
        say("--workers must be >= 0, --concurrency >= 1 and --brokers from 1 to 9")
        return 2
    return DevRun(DevConfig.from_env(), workers, concurrency, app, brokers).run()
