"""Kafka clients as every jobstream process configures them, and topic creation."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from jobstream.settings import Settings

log = logging.getLogger("jobstream.kafka")

DLQ_RETENTION_MS = 14 * 86_400_000


def make_producer(settings: Settings, *, linger_ms: int = 2, request_timeout_ms: int = 30_000) -> Any:
    """An idempotent producer (acks=all). `request_timeout_ms` also bounds how long a record
    may wait in the buffer while the broker is unreachable before its send fails."""
    return AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap_servers,
        enable_idempotence=True,
        acks="all",
        linger_ms=linger_ms,
        max_batch_size=512 * 1024,
        max_request_size=8 * 1024 * 1024,
        request_timeout_ms=request_timeout_ms,
        client_id=f"jobstream-{settings.topic_prefix}",
    )


def topic_specs(settings: Settings) -> list[NewTopic]:
    t = settings.topics
    specs = [NewTopic(name, settings.partitions, 1) for name in t.job_topics]
    specs.extend(NewTopic(t.retry(tier), settings.partitions, 1) for tier in settings.retry_tier_names)
    specs.append(NewTopic(t.status, settings.status_partitions, 1))
    specs.append(
        NewTopic(t.dlq, settings.partitions, 1, topic_configs={"retention.ms": str(DLQ_RETENTION_MS)})
    )
    specs.append(NewTopic(t.control, 1, 1))
    return specs


async def _wait_for_leaders(admin: Any, names: list[str], timeout_s: float = 30.0) -> None:
    """New partitions answer NotLeaderForPartition until their leader is elected; wait."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        described = await admin.describe_topics(names)
        if all(
            t.get("error_code", 0) == 0 and t["partitions"] and all(p["leader"] >= 0 for p in t["partitions"])
            for t in described
        ):
            return
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError(f"topics {names} have no leaders after {timeout_s}s")
        await asyncio.sleep(0.05)


async def ensure_topics(settings: Settings) -> list[str]:
    """Create every topic the deployment needs; existing ones are left as they are.
    Returns the names created."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [s for s in topic_specs(settings) if s.name not in existing]
        if missing:
            with contextlib.suppress(TopicAlreadyExistsError):  # another process raced us
                await admin.create_topics(missing)
            await _wait_for_leaders(admin, [s.name for s in missing])
        return [s.name for s in missing]
    finally:
        await admin.close()
