"""The suite's Kafka and Redis answer."""

from __future__ import annotations

from redis.asyncio import Redis

from jobstream.settings import Settings


async def test_services_answer(settings: Settings, redis: Redis) -> None:
    """Topics get created on the broker and Redis answers a PING."""
    assert await redis.ping()
    assert settings.topics.status.startswith(settings.topic_prefix)
