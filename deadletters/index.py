"""The dead-letter indexer: keeps `DlqStore` in step with the dead-letter topic.

One consumer group (`<prefix>.dlq-indexer`) across all API replicas, reading from the
earliest retained record, so each record is indexed by one of them. Per fetched batch:
decode every record, write them all with one pipelined `DlqStore.add`, then commit
(`jobstream.topic_sink`: committed only after Redis has the batch, retried while Redis is
down). Indexing a record twice is harmless. A record that does not decode is logged and
skipped: it cannot be replayed, and stopping on it would hide every record behind it.
"""

from __future__ import annotations

from typing import Any

from aiokafka import TopicPartition

from deadletters.store import DlqStore
from jobstream.settings import Settings
from jobstream.topic_sink import TopicSink
from schemas import decode_dead_letter, now_ms

MAX_RECORDS = 2_000


def indexer_group(settings: Settings) -> str:
    return f"{settings.topic_prefix}.dlq-indexer"


class DlqIndexer(TopicSink[tuple[str, int, bytes]]):
    """Consumes the dead-letter topic into the index; an async context manager."""

    def __init__(self, settings: Settings, store: DlqStore) -> None:
        super().__init__(
            settings, settings.topics.dlq, indexer_group(settings), "dlq-indexer",
            max_records=MAX_RECORDS,
        )  # fmt: skip
        self._store = store

    @property
    def indexed(self) -> int:
        """Records written since start."""
        return self.written

    def decode(self, tp: TopicPartition, record: Any) -> list[tuple[str, int, bytes]]:
        dead = decode_dead_letter(record.value)
        return [(dead.id, dead.dead_at, record.value)]

    async def write(self, items: list[tuple[str, int, bytes]]) -> None:
        await self._store.add(items, now_ms())
