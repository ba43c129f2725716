"""Where the tests find Kafka and Redis.

1. `KAFKA_BOOTSTRAP_SERVERS` and `REDIS_URL` set: use those.
2. Else, where a Docker engine answers: testcontainers starts them.
3. Else: the local stack (`jobstream.cli.stack`, the code behind `make run`) starts a real
   broker and Redis on free ports in a temporary folder, reusing the jars in `.data/`.

Every test gets its own topic prefix, so tests never see each other's data.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from redis.asyncio import Redis

from jobstream.cli import procs
from jobstream.cli.stack import KafkaBroker, KafkaCluster, LocalStack, RedisServer, ensure_kafka_jars
from jobstream.kafka import ensure_topics
from jobstream.settings import Settings

ROOT = Path(__file__).resolve().parent.parent

# One scalable unit for every timeout in the suite (websockets' tests/utils.py MS).
MS = float(os.environ.get("JOBSTREAM_TEST_TIMEOUT_UNIT", "1")) / 1000


@dataclass(frozen=True)
class Services:
    bootstrap: str
    redis_url: str
    stack: LocalStack | None = None  # set when the suite started them itself


def _docker_answers() -> bool:
    if not os.environ.get("DOCKER_HOST") and not Path("/var/run/docker.sock").exists():
        return False
    try:
        import docker  # type: ignore[import-untyped]

        client = docker.from_env()
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:
        return False


@pytest.fixture(scope="session")
def services() -> Iterator[Services]:
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    redis_url = os.environ.get("REDIS_URL")
    if bootstrap and redis_url:
        yield Services(bootstrap, redis_url)
        return
    if _docker_answers():
        from testcontainers.kafka import KafkaContainer
        from testcontainers.redis import RedisContainer

        with KafkaContainer("apache/kafka:4.1.1").with_kraft() as kafka, RedisContainer("redis:7") as redis:
            host = redis.get_container_host_ip()
            port = redis.get_exposed_port(6379)
            yield Services(kafka.get_bootstrap_server(), f"redis://{host}:{port}/0")
        return
    data = Path(tempfile.mkdtemp(prefix="jobstream-test-"))
    stack = LocalStack(
        data,
        kafka_port=procs.free_port(),
        controller_port=procs.free_port(),
        redis_port=procs.free_port(),
        jar_cache=ROOT / ".data",
    )
    stack.start()
    try:
        assert stack.kafka is not None and stack.redis is not None
        yield Services(stack.kafka.bootstrap, stack.redis.url, stack)
    finally:
        stack.stop()
        shutil.rmtree(data, ignore_errors=True)


@pytest.fixture
def prefix() -> str:
    return f"t{uuid.uuid4().hex[:10]}"


@pytest.fixture
def env(services: Services, prefix: str) -> dict[str, str]:
    """The environment a jobstream process needs to join this test's deployment."""
    return {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": services.bootstrap,
        "REDIS_URL": services.redis_url,
        "JOBSTREAM_TOPIC_PREFIX": prefix,
        "JOBSTREAM_PARTITIONS": "6",
        "JOBSTREAM_STATUS_PARTITIONS": "3",
    }


@pytest.fixture
def private_kafka(tmp_path: Path) -> Iterator[KafkaBroker]:
    """A single-node broker of this test's own (started), to stop and start; stopped at the end."""
    broker = KafkaBroker(
        tmp_path / "private-kafka", ensure_kafka_jars(ROOT / ".data"), procs.free_port(), procs.free_port()
    )
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


SCRAM_USER, SCRAM_PASSWORD = "jobstream", "scram-test-secret"


def make_tls(folder: Path) -> tuple[Path, Path]:
    """A CA of its own (`ca.pem`) and a broker key and certificate for 127.0.0.1 that it
    signed, both in one PEM file (`broker-keystore.pem`, key first), made with openssl."""

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True)

    folder.mkdir(parents=True, exist_ok=True)
    ca, ca_key, key, csr, cert = (
        folder / n for n in ("ca.pem", "ca.key", "broker.key", "broker.csr", "broker.pem")
    )
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=jobstream test CA",
            "-keyout", str(ca_key), "-out", str(ca))  # fmt: skip
    openssl(
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=127.0.0.1",
        "-keyout",
        str(key),
        "-out",
        str(csr),
    )
    (folder / "san.cnf").write_text("subjectAltName=IP:127.0.0.1\n")
    openssl("x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key), "-CAcreateserial",
            "-days", "2", "-extfile", str(folder / "san.cnf"), "-out", str(cert))  # fmt: skip
    keystore = folder / "broker-keystore.pem"
    keystore.write_text(key.read_text() + cert.read_text())
    return ca, keystore


@contextmanager
def _scram_broker(folder: Path, tls: Path | None = None) -> Iterator[KafkaBroker]:
    broker = KafkaBroker(
        folder,
        ensure_kafka_jars(ROOT / ".data"),
        procs.free_port(),
        procs.free_port(),
        scram=(SCRAM_USER, SCRAM_PASSWORD),
        sasl_port=procs.free_port(),
        tls=tls,
    )
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture(scope="module")
def scram_kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaBroker]:
    """A single-node broker of this module's own (started) whose `sasl_bootstrap` listener
    (SASL_PLAINTEXT) takes only SCRAM-SHA-512 logins as `SCRAM_USER`/`SCRAM_PASSWORD`."""
    with _scram_broker(tmp_path_factory.mktemp("scram-kafka")) as broker:
        yield broker


@pytest.fixture(scope="module")
def scram_tls_kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[KafkaBroker, Path]]:
    """Like `scram_kafka` over TLS (SASL_SSL, a certificate for 127.0.0.1), with the CA file
    that signed it."""
    folder = tmp_path_factory.mktemp("scram-tls-kafka")
    ca, keystore = make_tls(folder / "tls")
    with _scram_broker(folder / "kafka", tls=keystore) as broker:
        yield broker, ca


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaCluster]:
    """Three KRaft nodes (each broker and controller) of this module's own, started by the
    code behind `make run BROKERS=3`; shared by the module's tests, stopped at its end."""
    nodes = KafkaCluster(
        tmp_path_factory.mktemp("cluster"),
        ensure_kafka_jars(ROOT / ".data"),
        [procs.free_port() for _ in range(3)],
        [procs.free_port() for _ in range(3)],
    )
    nodes.start()
    try:
        yield nodes
    finally:
        nodes.stop()


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A Redis of this test's own (started), to stop, kill or restart; stopped at the end."""
    server = RedisServer(tmp_path / "private-redis", procs.free_port())
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def api_url(env: dict[str, str], settings: Settings, tmp_path: Path) -> Iterator[str]:
    """A `jobstream api` process of this test's deployment (topics created by `settings`)."""
    port = procs.free_port()
    log = tmp_path / "api.log"
    proc = procs.spawn([sys.executable, "-m", "jobstream.cli", "api", "--port", str(port)], env=env, log=log)
    url = f"http://127.0.0.1:{port}"
    try:

        def ready() -> bool:
            if proc.poll() is not None:
                raise AssertionError(f"api exited with {proc.returncode}:\n{procs.tail(log)}")
            try:
                return httpx.get(f"{url}/readyz", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        procs.wait_until(ready, timeout_s=60_000 * MS, what="the API to be ready")
        yield url
    finally:
        procs.stop(proc, grace_s=30)


async def deployment(bootstrap: str, redis_url: str, prefix: str) -> Settings:
    """Settings for a test's deployment on these services, with its topics created."""
    s = Settings(
        kafka_bootstrap_servers=bootstrap,
        redis_url=redis_url,
        topic_prefix=prefix,
        partitions=6,
        status_partitions=3,
    )
    await ensure_topics(s)
    return s


@pytest.fixture
async def settings(services: Services, prefix: str) -> Settings:
    """Settings for this test's deployment, with its topics created."""
    return await deployment(services.bootstrap, services.redis_url, prefix)


@pytest.fixture
async def redis(services: Services) -> AsyncIterator[Redis]:
    client = Redis.from_url(services.redis_url)
    yield client
    await client.aclose()


@pytest.fixture(scope="session", autouse=True)
async def _dump_tasks_on_sigusr1() -> AsyncIterator[None]:
    """`kill -USR1 <pytest pid>` prints every asyncio task's stack: a hung test says where."""
    import signal
    import sys

    loop = asyncio.get_running_loop()

    def dump() -> None:
        for task in asyncio.all_tasks(loop):
            print(f"--- {task.get_name()}: {task!r}", file=sys.stderr)
            task.print_stack(limit=12, file=sys.stderr)

    loop.add_signal_handler(signal.SIGUSR1, dump)
    yield
    loop.remove_signal_handler(signal.SIGUSR1)
