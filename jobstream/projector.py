"""The projector: keeps each job's latest state in Redis from the status topic.

It sits beside the projection it writes (`jobstream.projection`); the gateway runs it
(`gateway.service`, with `settings.projector`). One consumer group (`<prefix>.projector`)
across all gateway replicas, so each record is projected by one of them. Per fetched
batch: decode every record once, apply all events with one `Projection.apply` (it
coalesces per job and pipelines), then commit (`jobstream.topic_sink`: committed only
after Redis has the batch, retried while Redis is down). Applying a batch twice is
harmless (the projection never moves a job backwards).
"""

from __future__ import annotations

import logging
from typing import Any

from aiokafka import TopicPartition
from redis.asyncio import Redis

from jobstream.projection import Projection
from jobstream.settings import GatewaySettings
from jobstream.topic_sink import TopicSink
from schemas import decode_status_batch

log = logging.getLogger("jobstream.gateway.projector")

MAX_RECORDS = 5_000


class Projector(TopicSink[dict[str, Any]]):
    """Consumes the status topic in the projector group; an async context manager."""

    def __init__(self, settings: GatewaySettings, redis: Redis) -> None:
        super().__init__(
            settings, settings.topics.status, settings.topics.projector_group, "projector",
            max_records=MAX_RECORDS,
        )  # fmt: skip
        self._projection = Projection(redis, settings.redis_prefix, settings.state_ttl_s)

    @property
    def applied(self) -> int:
        """Events applied since start."""
        return self.written

    def decode(self, tp: TopicPartition, record: Any) -> list[dict[str, Any]]:
        events = []
        for ev in decode_status_batch(record.value):
            if _projectable(ev):
                events.append(ev)
            else:
                log.warning("status event skipped topic=%s partition=%d offset=%d job=%s: bad fields",
                            tp.topic, tp.partition, record.offset, ev.get("job_id"))  # fmt: skip
        return events

    async def write(self, items: list[dict[str, Any]]) -> None:
        await self._projection.apply(items, timeline=True)


def _projectable(ev: dict[str, Any]) -> bool:
    """The fields `Projection.apply` relies on have the types it expects."""
    return (
        isinstance(ev.get("at"), int)
        and isinstance(ev.get("attempt", 1), int | None)
        and isinstance(ev.get("created_at"), int | None)
        and isinstance(ev.get("type", ""), str)
        and isinstance(ev.get("parent_id"), str | None)
    )
