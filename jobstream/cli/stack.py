"""The local stack: a real Apache Kafka broker (KRaft, from its own jars) and Redis (AOF).

`make run` and the test suite start these from the same code. What is missing is
installed on first use: the Kafka jars through Maven from `maven/pom.xml` (beside this module), and
`redis-server` through apt-get when running as root. Data lives under one folder
(default `.data/`), so a second start reuses the jars and the data.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import uuid
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from types import TracebackType

from jobstream.cli import procs
from jobstream.settings import min_insync_for

KAFKA_VERSION = "4.1.1"


class StackError(RuntimeError):
    """A part of the local stack could not be installed or started; the message says why."""


def _say(msg: str) -> None:
    print(f"[stack] {msg}", file=sys.stderr, flush=True)


def ensure_kafka_jars(cache: Path) -> Path:
    """Resolve the broker's jars into `cache/kafka-<version>/` with Maven (once)."""
    target = (cache / f"kafka-{KAFKA_VERSION}").resolve()
    done = target / ".complete"  # written last: a half-resolved folder is resolved again
    if done.exists():
        return target
    mvn = shutil.which("mvn")
    if mvn is None:
        raise StackError("Maven (mvn) is not installed; install it (apt-get install maven) and retry")
    pom = resources.files("jobstream.cli").joinpath("maven/pom.xml")
    target.mkdir(parents=True, exist_ok=True)
    _say(f"resolving Apache Kafka {KAFKA_VERSION} jars with Maven into {target} (first run only)")
    with resources.as_file(pom) as pom_path:
        result = subprocess.run(
            [mvn, "-B", "-ntp", "-f", str(pom_path), "dependency:copy-dependencies",
             "-DincludeScope=runtime", f"-DoutputDirectory={target}"],
            check=False,
        )  # fmt: skip
    if result.returncode != 0:
        raise StackError(f"Maven could not resolve the Kafka jars (exit {result.returncode}); see above")
    done.touch()
    return target


def ensure_redis_server() -> str:
    """The path of `redis-server`, installed with apt-get when missing and running as root."""
    found = shutil.which("redis-server")
    if found:
        return found
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise StackError(
            "redis-server is not installed: install it (e.g. `sudo apt-get install redis-server`) "
            "or point REDIS_URL at a running Redis"
        )
    _say("installing redis-server with apt-get")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update", "-q"], ["apt-get", "install", "-y", "-q", "redis-server"]):
        if subprocess.run(cmd, env=env, check=False).returncode != 0:
            raise StackError(f"`{' '.join(cmd)}` failed; install redis-server by hand")
    found = shutil.which("redis-server")
    if not found:
        raise StackError("apt-get installed redis-server but it is not on PATH")
    return found


_SERVER_PROPERTIES = """\
process.roles=broker,controller
node.id={node_id}
controller.quorum.voters={voters}
listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}
advertised.listeners=PLAINTEXT://127.0.0.1:{port}
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs={log_dir}
num.partitions=6
auto.create.topics.enable=false
default.replication.factor={replication}
min.insync.replicas={min_isr}
offsets.topic.replication.factor={replication}
offsets.topic.num.partitions=10
transaction.state.log.replication.factor={replication}
transaction.state.log.min.isr={min_isr}
share.coordinator.state.topic.replication.factor={replication}
share.coordinator.state.topic.min.isr={min_isr}
group.initial.rebalance.delay.ms=0
group.min.session.timeout.ms=500
log.retention.check.interval.ms=60000
num.network.threads={network_threads}
num.io.threads={io_threads}
"""

_LOG4J2 = """\
<?xml version="1.0" encoding="UTF-8"?>
<Configuration status="WARN">
  <Appenders>
    <Console name="out" target="SYSTEM_OUT">
      <PatternLayout pattern="[%d] %p %m (%c)%n"/>
    </Console>
  </Appenders>
  <Loggers>
    <Logger name="kafka" level="INFO"/>
    <Logger name="org.apache.kafka" level="WARN"/>
    <Logger name="state.change.logger" level="WARN"/>
    <Root level="WARN"><AppenderRef ref="out"/></Root>
  </Loggers>
</Configuration>
"""


def _threads(cores: int) -> dict[str, int]:
    """Request threads for a broker sharing `cores` with the whole pipeline. Kafka's defaults
    (3 network, 8 I/O threads) are for a machine of its own; on 2 cores they only take
    turns with the services they serve."""
    return {"network_threads": max(1, cores // 2), "io_threads": max(2, cores)}


# The JIT compilers at the lowest CPU priority (nice 19): a fresh broker spends minutes of CPU
# in the C2 compiler (0.4 of a core at 50 jobs/s on 2 cores, measured), which every job's
# latency paid while the pipeline shares the machine with it; at nice 19 it compiles in the
# time nobody else wants. (C1 only, the other cure, left the broker slower for good: delayed
# jobs a few ms later once warm; docs/BENCHMARKS.md, issue 10.) Raising one's own nice value
# needs no privilege; without root the JVM notes that it cannot lower anyone's.
_JIT = ["-XX:ThreadPriorityPolicy=1", "-XX:CompilerThreadPriority=19"]


@dataclass
class KafkaBroker:
    """One KRaft node (broker and controller) in `data_dir`: a single-node cluster of its own
    by default, or one of `KafkaCluster`'s nodes (`node_id`, `voters`, `cluster_id` and the
    internal topics' `replication` given by the cluster)."""

    data_dir: Path
    jars: Path
    port: int = 9092
    controller_port: int = 9093
    heap: str = "512m"
    node_id: int = 1
    voters: str = ""  # controller.quorum.voters; default: this node alone
    cluster_id: str = ""  # used when formatting fresh storage; default: a new one
    replication: int = 1  # of the internal topics (offsets, transactions, share state)
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    _log_from: int = field(default=0, repr=False)

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def log(self) -> Path:
        return self.data_dir / "kafka.log"

    def _java(self) -> list[str]:
        java = shutil.which("java")
        if java is None:
            raise StackError("java is not installed; Kafka needs a JDK 17 or newer")
        return [java, f"-Xms{self.heap}", f"-Xmx{self.heap}", "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20",
                "-XX:InitiatingHeapOccupancyPercent=35", *_JIT,
                "-Djava.awt.headless=true",
                f"-Dlog4j2.configurationFile={self.data_dir / 'log4j2.xml'}",
                "-cp", f"{self.jars}/*"]  # fmt: skip

    def start(self, timeout_s: float = 120.0) -> None:
        self.launch()
        self.wait_started(timeout_s)

    def launch(self) -> None:
        """Write the configuration, format fresh storage, and start the process (not waiting:
        the nodes of a cluster only finish starting once a quorum of them runs)."""
        if procs.port_open(self.port):
            raise StackError(f"port {self.port} is taken; stop what holds it or set another port")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        props = self.data_dir / "server.properties"
        props.write_text(
            _SERVER_PROPERTIES.format(
                node_id=self.node_id,
                voters=self.voters or f"{self.node_id}@127.0.0.1:{self.controller_port}",
                port=self.port,
                controller_port=self.controller_port,
                log_dir=self.data_dir / "logs",
                replication=self.replication,
                min_isr=min_insync_for(self.replication),
                **_threads(os.cpu_count() or 1),
            )
        )
        (self.data_dir / "log4j2.xml").write_text(_LOG4J2)
        if not (self.data_dir / "logs" / "meta.properties").exists():
            cluster_id = self.cluster_id or uuid.uuid4().hex[:22]
            fmt = subprocess.run(
                [*self._java(), "kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(props),
                 "--ignore-formatted"],
                capture_output=True, text=True, check=False,
            )  # fmt: skip
            if fmt.returncode != 0:
                raise StackError(f"formatting Kafka storage failed:\n{fmt.stdout}{fmt.stderr}")
        self._log_from = self.log.stat().st_size if self.log.exists() else 0
        self.proc = procs.spawn([*self._java(), "kafka.Kafka", str(props)], log=self.log)
        _say(f"starting Kafka {KAFKA_VERSION} node {self.node_id} on {self.bootstrap} (log {self.log})")

    def started(self) -> bool:
        """True once the process has said it started; raises if it exited."""
        if self.proc is None:
            raise StackError(f"Kafka node {self.node_id} is not running")
        if self.proc.poll() is not None:
            raise StackError(
                f"Kafka node {self.node_id} exited with {self.proc.returncode}:\n{procs.tail(self.log)}"
            )
        with self.log.open("rb") as f:
            f.seek(self._log_from)
            return b"Kafka Server started" in f.read()

    def wait_started(self, timeout_s: float = 120.0) -> None:
        try:
            procs.wait_until(self.started, timeout_s=timeout_s, what="Kafka to start", interval_s=0.1)
        except TimeoutError as exc:
            self.stop()
            raise StackError(f"{exc}\n{procs.tail(self.log)}") from None

    def stop(self) -> None:
        """Shut the node down cleanly (SIGTERM), killing it if it hangs. Idempotent."""
        if self.proc is not None:
            procs.stop(self.proc, grace_s=30)
            self.proc = None

    def kill(self) -> None:
        """SIGKILL, as a crash would: nothing flushed, no leadership handed over."""
        if self.proc is not None:
            procs.stop(self.proc, grace_s=30, sig=signal.SIGKILL)
            self.proc = None


@dataclass
class KafkaCluster:
    """`len(ports)` KRaft nodes on loopback, each broker and controller, with a static quorum
    of all of them: the topology of a small production cluster, from the same jars. One node
    is the default (`make run`); `jobstream dev --brokers 3` starts three. The internal
    topics get replication min(3, nodes)."""

    data_dir: Path
    jars: Path
    ports: list[int]
    controller_ports: list[int]
    nodes: list[KafkaBroker] = field(default_factory=list, repr=False)

    def __post_init__(self) -> None:
        if len(self.ports) != len(self.controller_ports) or not self.ports:
            raise StackError("a Kafka cluster needs one port and one controller port per node")
        count = len(self.ports)
        voters = ",".join(f"{i}@127.0.0.1:{c}" for i, c in enumerate(self.controller_ports, start=1))
        cluster_id = self._cluster_id() if count > 1 else ""
        pairs = enumerate(zip(self.ports, self.controller_ports, strict=True), start=1)
        self.nodes = [
            KafkaBroker(
                self.data_dir if count == 1 else self.data_dir / f"node-{i}",
                self.jars,
                port,
                cport,
                heap="512m" if count == 1 else "384m",
                node_id=i,
                voters=voters,
                cluster_id=cluster_id,
                replication=min(3, count),
            )
            for i, (port, cport) in pairs
        ]

    def _cluster_id(self) -> str:
        """The nodes' shared cluster id, kept beside them so a restart reuses it."""
        path = self.data_dir / "cluster.id"
        if path.exists():
            return path.read_text().strip()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        cluster_id = uuid.uuid4().hex[:22]
        path.write_text(cluster_id)
        return cluster_id

    @property
    def bootstrap(self) -> str:
        """Every node's address: a client still finds the cluster with a node down."""
        return ",".join(n.bootstrap for n in self.nodes)

    @property
    def pids(self) -> list[int]:
        return [n.proc.pid for n in self.nodes if n.proc is not None]

    def start(self, timeout_s: float = 120.0) -> None:
        try:
            for node in self.nodes:
                node.launch()
            for node in self.nodes:
                node.wait_started(timeout_s)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """SIGTERM every node at once (one by one, the last would wait for a quorum that is
        gone), then wait for each. Idempotent."""
        for node in self.nodes:
            if node.proc is not None and node.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    node.proc.terminate()
        for node in self.nodes:
            node.stop()


@dataclass
class RedisServer:
    """redis-server with its append-only file in `data_dir`."""

    data_dir: Path
    port: int = 6379
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout_s: float = 30.0) -> None:
        binary = ensure_redis_server()
        if procs.port_open(self.port):
            raise StackError(f"port {self.port} is taken; stop what holds it or set another port")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = self.data_dir / "redis.log"
        self.proc = procs.spawn(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.data_dir),
             "--appendonly", "yes", "--appendfsync", "everysec", "--save", "", "--daemonize", "no",
             "--protected-mode", "no"],
            log=log,
        )  # fmt: skip
        _say(f"starting Redis on {self.url} (append-only file in {self.data_dir})")

        def up() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise StackError(f"redis-server exited with {self.proc.returncode}:\n{procs.tail(log)}")
            return procs.port_open(self.port)

        procs.wait_until(up, timeout_s=timeout_s, what="Redis to start")

    def stop(self) -> None:
        """SIGTERM makes Redis flush its append-only file and exit. Idempotent."""
        if self.proc is not None:
            procs.stop(self.proc, grace_s=15)
            self.proc = None


@dataclass
class LocalStack:
    """Kafka (`brokers` nodes) and Redis under one data folder; a context manager that stops
    both. Node i (from 0) listens on `kafka_port + 2i` and `controller_port + 2i` unless
    `kafka_ports` and `controller_ports` say otherwise; a cluster of more than one node
    keeps its data apart from the single node's (`kafka-<n>nodes/`)."""

    data_dir: Path
    kafka_port: int = 9092
    controller_port: int = 9093
    redis_port: int = 6379
    jar_cache: Path | None = None
    brokers: int = 1
    kafka_ports: list[int] | None = None
    controller_ports: list[int] | None = None
    kafka: KafkaCluster | None = None
    redis: RedisServer | None = None

    def start(self) -> LocalStack:
        jars = ensure_kafka_jars(self.jar_cache or self.data_dir)
        ensure_redis_server()
        self.redis = RedisServer(self.data_dir / "redis", self.redis_port)
        n = self.brokers
        self.kafka = KafkaCluster(
            self.data_dir / ("kafka" if n == 1 else f"kafka-{n}nodes"), jars,
            self.kafka_ports or [self.kafka_port + 2 * i for i in range(n)],
            self.controller_ports or [self.controller_port + 2 * i for i in range(n)],
        )  # fmt: skip
        try:
            self.redis.start()
            self.kafka.start()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        if self.kafka is not None:
            self.kafka.stop()
        if self.redis is not None:
            self.redis.stop()

    def __enter__(self) -> LocalStack:
        return self.start()

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def main(argv: list[str]) -> int:
    """`python -m jobstream.cli.stack ensure`: install what the stack needs (CI and `make test`)."""
    if argv != ["ensure"]:
        print("usage: python -m jobstream.cli.stack ensure", file=sys.stderr)
        return 2
    try:
        if shutil.which("java") is None:
            raise StackError("java is not installed; Kafka needs a JDK 17 or newer")
        jars = ensure_kafka_jars(Path(os.environ.get("JOBSTREAM_DATA_DIR", ".data")))
        redis = ensure_redis_server()
    except StackError as exc:
        _say(str(exc))
        return 1
    _say(f"ready: Kafka {KAFKA_VERSION} jars in {jars}, {redis}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
