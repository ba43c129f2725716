"""The local stack: real Apache Kafka (KRaft, from its own jars: one node, or a cluster of
several) and Redis (AOF). One node is `jobstream.cli.broker`.

`make run` and the test suite start these from the same code. What is missing is
installed on first use: the Kafka jars through Maven from `maven/pom.xml` (beside this module), and
`redis-server` through apt-get when running as root. Data lives under one folder
(default `.data/`), so a second start reuses the jars and the data.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from jobstream.cli import procs
from jobstream.cli.broker import KAFKA_VERSION, KafkaBroker, StackError, ensure_kafka_jars, say


def ensure_redis_server() -> str:
    """The path of `redis-server`, installed with apt-get when missing and running as root."""
    return ensure_command("redis-server", "redis-server", "or point REDIS_URL at a running Redis")


def ensure_command(command: str, package: str, otherwise: str) -> str:
    """The path of `command`, from Debian's `package` through apt-get when it is missing and
    this runs as root; else `StackError` saying how to get it (`otherwise`: another way)."""
    found = shutil.which(command)
    if found:
        return found
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise StackError(
            f"{command} is not installed: install it (e.g. `sudo apt-get install {package}`) {otherwise}"
        )
    say(f"installing {package} with apt-get")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-q", "--no-install-recommends", package]
    for cmd in (["apt-get", "update", "-q"], install):
        if subprocess.run(cmd, env=env, check=False).returncode != 0:
            raise StackError(f"`{' '.join(cmd)}` failed; install {package} by hand")
    found = shutil.which(command)
    if not found:
        raise StackError(f"apt-get installed {package} but {command} is not on PATH")
    return found


_ACTIVE_CONTROLLER = re.compile(r"Becoming the active controller at epoch (\d+)")


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

    def active_controller(self) -> KafkaBroker | None:
        """The running node that leads the controller quorum: the one whose log names the
        highest epoch in "Becoming the active controller at epoch N" (a new election after
        a loss is always a higher epoch). None before any node has said so."""
        best: tuple[int, KafkaBroker] | None = None
        for node in self.nodes:
            if node.proc is None or node.proc.poll() is not None or not node.log.exists():
                continue
            for epoch in _ACTIVE_CONTROLLER.findall(node.log.read_text(errors="replace")):
                if best is None or int(epoch) > best[0]:
                    best = (int(epoch), node)
        return None if best is None else best[1]

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
    """redis-server with its append-only file in `data_dir`; with `password`, clients must
    give it (`url` carries it)."""

    data_dir: Path
    port: int = 6379
    password: str | None = field(default=None, repr=False)
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def start(self, timeout_s: float = 30.0) -> None:
        binary = ensure_redis_server()
        if procs.port_open(self.port):
            raise StackError(f"port {self.port} is taken; stop what holds it or set another port")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = self.data_dir / "redis.log"
        self.proc = procs.spawn(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.data_dir),
             "--appendonly", "yes", "--appendfsync", "everysec", "--save", "", "--daemonize", "no",
             "--protected-mode", "no", *(["--requirepass", self.password] if self.password else [])],
            log=log,
        )  # fmt: skip
        say(f"starting Redis on 127.0.0.1:{self.port} (append-only file in {self.data_dir})")

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
        say(str(exc))
        return 1
    say(f"ready: Kafka {KAFKA_VERSION} jars in {jars}, {redis}")
    return 0


__all__ = [
    "KAFKA_VERSION", "KafkaBroker", "KafkaCluster", "LocalStack", "RedisServer", "StackError",
    "ensure_kafka_jars", "ensure_redis_server", "main",
]  # fmt: skip


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
