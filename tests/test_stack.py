"""The local stack behind `make run`: stops without leftovers and keeps its data."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from aiokafka.admin import NewTopic
from redis import Redis

from jobstream.cli import procs
from jobstream.cli.stack import KafkaBroker, LocalStack
from jobstream.kafka import admin_client
from jobstream.settings import Settings

ROOT = Path(__file__).resolve().parent.parent


def _running(pid: int) -> bool:
    """True if `pid` is a live process (a zombie has finished, so it counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _processes_using(folder: Path) -> list[int]:
    """Pids whose command line mentions `folder` (what a leaked broker or Redis would show)."""
    needle = str(folder).encode()
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                if needle in (entry / "cmdline").read_bytes() and _running(int(entry.name)):
                    found.append(int(entry.name))
            except OSError:
                continue  # it exited while we looked
    return found


async def _admin(bootstrap: str, create: str | None = None) -> set[str]:
    """The broker's topics, after creating `create`: listed once the broker's metadata shows
    it (a new broker may answer the create before its metadata has the topic)."""
    async with admin_client(Settings(kafka_bootstrap_servers=bootstrap)) as admin:
        if create is None:
            return set(await admin.list_topics())
        await admin.create_topics([NewTopic(create, 1, 1)])
        async with asyncio.timeout(30):
            while create not in (topics := set(await admin.list_topics())):  # noqa: ASYNC110 - polling the broker
                await asyncio.sleep(0.1)
        return topics


def _start(data: Path, ports: tuple[int, int, int]) -> LocalStack:
    kafka_port, controller_port, redis_port = ports
    stack = LocalStack(
        data,
        kafka_port=kafka_port,
        controller_port=controller_port,
        redis_port=redis_port,
        jar_cache=ROOT / ".data",
    )
    return stack.start()


def test_stop_leaves_nothing_and_restart_keeps_data(tmp_path: Path) -> None:
    """Stopping the stack ends Kafka and Redis; a second start on the same folder keeps the
    cluster id, the topics and the Redis data (append-only file)."""
    data = tmp_path / "stack"
    ports = (procs.free_port(), procs.free_port(), procs.free_port())

    stack = _start(data, ports)
    try:
        assert stack.kafka is not None and stack.redis is not None and stack.redis.proc is not None
        pids = [*stack.kafka.pids, stack.redis.proc.pid]
        topics = asyncio.run(_admin(stack.kafka.bootstrap, create="kept-topic"))
        assert "kept-topic" in topics
        with Redis.from_url(stack.redis.url) as r:
            r.set("kept-key", b"v1")
        meta = (data / "kafka" / "logs" / "meta.properties").read_text()
    finally:
        stack.stop()

    assert not [p for p in pids if _running(p)], "a stack process outlived stop()"
    assert _processes_using(data) == []
    assert not procs.port_open(ports[0]) and not procs.port_open(ports[2])

    stack = _start(data, ports)
    try:
        assert stack.kafka is not None and stack.redis is not None
        assert "kept-topic" in asyncio.run(_admin(stack.kafka.bootstrap))
        with Redis.from_url(stack.redis.url) as r:
            assert r.get("kept-key") == b"v1"
        cluster_id = next(line for line in meta.splitlines() if line.startswith("cluster.id="))
        assert cluster_id in (data / "kafka" / "logs" / "meta.properties").read_text()
    finally:
        stack.stop()
    assert _processes_using(data) == []


def _nice(pid: int, tid: str) -> int:
    """A thread's nice value (its name may hold spaces: fields counted after its closing paren)."""
    return int(Path(f"/proc/{pid}/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()[16])


def test_the_broker_compiles_at_the_lowest_priority_with_threads_for_this_machine(
    private_kafka: KafkaBroker,
) -> None:
    """The broker's JIT compiler threads run at nice 19, its request threads at 0: on a small
    machine its compiling for minutes after start must not slow the jobs (issue 10). Its
    request threads are sized to the machine's cores."""
    assert private_kafka.proc is not None
    pid = private_kafka.proc.pid
    names = {
        tid: Path(f"/proc/{pid}/task/{tid}/comm").read_text().strip()
        for tid in os.listdir(f"/proc/{pid}/task")
    }
    compilers = [tid for tid, name in names.items() if "CompilerThre" in name]  # names cut at 15 characters
    handlers = [tid for tid, name in names.items() if name.startswith("data-plane-kafk")]
    assert compilers and handlers
    assert {_nice(pid, tid) for tid in compilers} == {19}
    assert {_nice(pid, tid) for tid in handlers} == {0}
    props = (private_kafka.data_dir / "server.properties").read_text()
    cores = os.cpu_count() or 1
    assert f"num.io.threads={max(2, cores)}" in props and f"num.network.threads={max(1, cores // 2)}" in props
