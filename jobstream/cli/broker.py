"""One local Apache Kafka node (KRaft, broker and controller) from its own jars.

`jobstream.cli.stack` runs one of these, or a `KafkaCluster` of several, for `make run`, the
benchmarks and the test suite. The jars come through Maven from `maven/pom.xml` (beside this
module) on first use.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import uuid
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from jobstream.cli import procs
from jobstream.settings import min_insync_for

KAFKA_VERSION = "4.1.1"


class StackError(RuntimeError):
    """A part of the local stack could not be installed or started; the message says why."""


def say(msg: str) -> None:
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
    say(f"resolving Apache Kafka {KAFKA_VERSION} jars with Maven into {target} (first run only)")
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


_SERVER_PROPERTIES = """\
process.roles=broker,controller
node.id={node_id}
controller.quorum.voters={voters}
listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}{sasl_listener}
advertised.listeners=PLAINTEXT://127.0.0.1:{port}{sasl_listener}
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT{sasl_map}
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
broker.heartbeat.interval.ms=500
broker.session.timeout.ms=3000
group.min.session.timeout.ms=500
log.retention.check.interval.ms=60000
num.network.threads={network_threads}
num.io.threads={io_threads}
"""

# A listener where clients log in with SCRAM-SHA-512 (`KafkaBroker.scram`): SASL_PLAINTEXT,
# or SASL_SSL with `KafkaBroker.tls`. The broker keeps its PLAINTEXT listener for its own and
# the controller's traffic: on one node that traffic never leaves the process, and the node
# starts and reports ready the same way with or without SCRAM. The credentials live in the
# metadata log, written when the storage is formatted.
SCRAM_MECHANISM = "SCRAM-SHA-512"


def _scram_properties(protocol: str, keystore: Path | None) -> str:
    """The SCRAM listener's settings; `keystore`: one PEM file, the key then its chain."""
    name = f"listener.name.{protocol.lower()}"
    lines = [
        f"sasl.enabled.mechanisms={SCRAM_MECHANISM}",
        f"{name}.sasl.enabled.mechanisms={SCRAM_MECHANISM}",
        f"{name}.{SCRAM_MECHANISM.lower()}.sasl.jaas.config="
        "org.apache.kafka.common.security.scram.ScramLoginModule required;",
    ]
    if keystore is not None:
        lines += [f"{name}.ssl.keystore.type=PEM", f"{name}.ssl.keystore.location={keystore}"]
    return "\n".join(lines) + "\n"


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
    <Logger name="org.apache.kafka.controller.QuorumController" level="INFO"/>
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
    # (user, password): also listen on `sasl_port` for clients logging in with SCRAM-SHA-512
    # as that user, created when the storage is formatted (a fresh data_dir); over TLS
    # (SASL_SSL) with `tls`, a PEM file holding the broker's key then its certificate chain
    scram: tuple[str, str] | None = field(default=None, repr=False)
    sasl_port: int = 0
    tls: Path | None = None
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    _log_from: int = field(default=0, repr=False)

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def sasl_bootstrap(self) -> str:
        """The SCRAM listener's address (`scram` set)."""
        if self.scram is None:
            raise StackError(f"Kafka node {self.node_id} has no SCRAM listener")
        return f"127.0.0.1:{self.sasl_port}"

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
        if self.scram is not None and (not self.sasl_port or procs.port_open(self.sasl_port)):
            raise StackError(f"SCRAM port {self.sasl_port} is unset or taken; give a free one")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        props = self.data_dir / "server.properties"
        sasl_listener = sasl_map = scram_format = scram_properties = ""
        if self.scram is not None:
            protocol = "SASL_SSL" if self.tls else "SASL_PLAINTEXT"
            sasl_listener = f",{protocol}://127.0.0.1:{self.sasl_port}"
            sasl_map = f",{protocol}:{protocol}"
            scram_properties = _scram_properties(protocol, self.tls)
            user, password = self.scram
            scram_format = f"{SCRAM_MECHANISM}=[name={user},password={password}]"
        props.write_text(
            _SERVER_PROPERTIES.format(
                node_id=self.node_id,
                voters=self.voters or f"{self.node_id}@127.0.0.1:{self.controller_port}",
                port=self.port,
                controller_port=self.controller_port,
                log_dir=self.data_dir / "logs",
                replication=self.replication,
                min_isr=min_insync_for(self.replication),
                sasl_listener=sasl_listener,
                sasl_map=sasl_map,
                **_threads(os.cpu_count() or 1),
            )
            + scram_properties
        )
        (self.data_dir / "log4j2.xml").write_text(_LOG4J2)
        if not (self.data_dir / "logs" / "meta.properties").exists():
            cluster_id = self.cluster_id or uuid.uuid4().hex[:22]
            fmt = subprocess.run(
                [*self._java(), "kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(props),
                 "--ignore-formatted", *(["--add-scram", scram_format] if scram_format else [])],
                capture_output=True, text=True, check=False,
            )  # fmt: skip
            if fmt.returncode != 0:
                raise StackError(f"formatting Kafka storage failed:\n{fmt.stdout}{fmt.stderr}")
        self._log_from = self.log.stat().st_size if self.log.exists() else 0
        self.proc = procs.spawn([*self._java(), "kafka.Kafka", str(props)], log=self.log)
        say(f"starting Kafka {KAFKA_VERSION} node {self.node_id} on {self.bootstrap} (log {self.log})")

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


__all__ = ["KAFKA_VERSION", "SCRAM_MECHANISM", "KafkaBroker", "StackError", "ensure_kafka_jars", "say"]
