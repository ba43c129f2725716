"""The dead letters' long-lived parts, opened and closed together: index, indexer, replayer.

`open_dead_letters()` opens the indexer (it joins its group in the background and retries
while Kafka or the topic is missing), then the replayer, and closes them in reverse: running
replays are cancelled (and record so), then the indexer leaves its group. The API opens
them inside its runtime (`producer.runtime`) and puts them in its lifespan state as
`dead_letters`, where the routes (`deadletters.routes`) find them: this package never
imports the API.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Protocol

from redis.asyncio import Redis

from deadletters.index import DlqIndexer
from deadletters.replay import Replayer
from deadletters.store import DlqStore
from jobstream.kafka import DLQ_RETENTION_MS, Partitioner
from jobstream.settings import Settings
from jobstream.status_publisher import StatusPublisher


class Health(Protocol):
    """What the routes ask of the API's health monitor (`producer.health.HealthMonitor`)."""

    def is_up(self, name: str) -> bool: ...

    @property
    def retry_after_s(self) -> int: ...


@dataclass(frozen=True, slots=True)
class DeadLetters:
    """The dead letters' parts while the API runs. Built only by `open_dead_letters()`."""

    store: DlqStore
    indexer: DlqIndexer
    replayer: Replayer
    health: Health  # the API's verdicts: a replay needs Kafka, browsing needs Redis


@contextlib.asynccontextmanager
async def open_dead_letters(
    settings: Settings,
    redis: Redis,
    producer: Any,
    publisher: StatusPublisher,
    partitioner: Partitioner,
    health: Health,
) -> AsyncIterator[DeadLetters]:
    """Open the indexer and the replayer on the API's clients; close them in reverse."""
    store = DlqStore(redis, settings.redis_prefix, DLQ_RETENTION_MS)
    async with contextlib.AsyncExitStack() as stack:
        indexer = await stack.enter_async_context(DlqIndexer(settings, store))
        replayer = await stack.enter_async_context(
            Replayer(store, producer, publisher, partitioner, settings.topics)
        )
        yield DeadLetters(store, indexer, replayer, health)
