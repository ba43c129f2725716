"""The dead-letter index in Redis: what `GET /dlq` browses and a replay selects from.

Keys (all under the deployment's hash-tagged prefix `{p}`):

- `{p}:dlq:rec:<id>`       the record's JSON as it was on the topic; expires when the
                           topic's retention would drop it (`dead_at + retention`)
- `{p}:dlq:by_time`        sorted set, score `dead_at`, member the id; trimmed to the
                           retention on every write
- `{p}:dlq:replayed:<id>`  the replay id that claimed the record (`SET NX`)
- `{p}:dlq:replayed_as:<id>` the id of the job the replay enqueued for it

Reads walk `by_time` in chunks by position (`dead_at`, then id), not by offset, so a
walk neither skips nor repeats members while records are added or trimmed.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from redis.asyncio import Redis

from deadletters.cursor import Position
from deadletters.query import DlqFilter
from schemas import DeadLetter, DecodeError, decode_dead_letter, now_ms

log = logging.getLogger("jobstream.producer.dlq")

CHUNK = 500
LIST_BUDGET = 20_000  # records one `GET /dlq` examines at most before answering


@dataclass(slots=True)
class Page:
    items: list[DeadLetter] = field(default_factory=list)
    next: Position | None = None


class DlqStore:
    """Reads and writes the index; `redis` is any asyncio Redis client."""

    def __init__(self, redis: Redis, prefix: str, retention_ms: int) -> None:
        self.redis = redis
        self.prefix = prefix
        self.retention_ms = retention_ms
        self.by_time = f"{prefix}:dlq:by_time"

    def rec_key(self, dead_id: str) -> str:
        return f"{self.prefix}:dlq:rec:{dead_id}"

    def claim_key(self, dead_id: str) -> str:
        return f"{self.prefix}:dlq:replayed:{dead_id}"

    def replayed_as_key(self, dead_id: str) -> str:
        return f"{self.prefix}:dlq:replayed_as:{dead_id}"

    async def count(self) -> int:
        """Dead letters indexed and within the retention."""
        oldest = now_ms() - self.retention_ms
        return int(await self.redis.zcount(self.by_time, oldest, "+inf"))

    async def add(self, records: Sequence[tuple[str, int, bytes]], now_ms: int) -> int:
        """Index `(id, dead_at, value)` records in one round trip; returns how many were
        kept (a record already past the retention is not). Idempotent."""
        oldest = now_ms - self.retention_ms
        kept = 0
        async with self.redis.pipeline(transaction=False) as pipe:
            for dead_id, dead_at, value in records:
                if dead_at <= oldest:
                    continue
                pipe.set(self.rec_key(dead_id), value, pxat=dead_at + self.retention_ms)
                pipe.zadd(self.by_time, {dead_id: dead_at})
                kept += 1
            pipe.zremrangebyscore(self.by_time, "-inf", f"({oldest}")
            pipe.pexpire(self.by_time, self.retention_ms)
            await pipe.execute()
        return kept

    async def get(self, dead_id: str) -> DeadLetter | None:
        return (await self.load([dead_id]))[0]

    async def load(self, ids: Sequence[str]) -> list[DeadLetter | None]:
        """The records of `ids`, in order; None for one that expired or does not decode."""
        if not ids:
            return []
        raws: list[Any] = await self.redis.mget([self.rec_key(i) for i in ids])
        out: list[DeadLetter | None] = []
        for dead_id, raw in zip(ids, raws, strict=True):
            if raw is None:
                out.append(None)
                continue
            try:
                out.append(decode_dead_letter(raw))
            except DecodeError as exc:
                log.warning("dlq index record unreadable id=%s: %s", dead_id, exc)
                out.append(None)
        return out

    async def replay_marks(self, ids: Sequence[str]) -> tuple[list[str | None], list[str | None]]:
        """For each id: the replay that claimed it and the job it became (or None)."""
        if not ids:
            return [], []
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.mget([self.claim_key(i) for i in ids])
            pipe.mget([self.replayed_as_key(i) for i in ids])
            claims, news = await pipe.execute()
        return [_text(v) for v in claims], [_text(v) for v in news]

    async def walk(
        self, lo: int | None, hi: int | None, *, newest_first: bool, after: Position | None = None
    ) -> AsyncIterator[list[Position]]:
        """The indexed positions with `lo <= dead_at <= hi`, in chunks, strictly after
        `after` in the walk's order (newest first: `(dead_at, id)` descending)."""
        low, high = ("-inf" if lo is None else lo), ("+inf" if hi is None else hi)
        bound: int | str = high if newest_first else low
        if after is not None:  # start at the cursor, unless the range ends before it
            bound = (
                min(after.dead_at, hi if hi is not None else after.dead_at)
                if newest_first
                else max(after.dead_at, lo if lo is not None else after.dead_at)
            )
        skip = 0  # members at score `bound` already yielded (ties sort by id)
        while True:
            start, end = (bound, low) if newest_first else (bound, high)
            rows: list[Any] = await self.redis.zrange(
                self.by_time, start, end, desc=newest_first, byscore=True, withscores=True,
                offset=skip, num=CHUNK,
            )  # fmt: skip
            if not rows:
                return
            chunk: list[Position] = []
            for member, score in rows:
                pos = Position(int(score), member.decode())
                if (
                    after is not None
                    and pos.dead_at == after.dead_at
                    and ((pos.id >= after.id) if newest_first else (pos.id <= after.id))
                ):
                    continue
                chunk.append(pos)
            last = int(rows[-1][1])
            if isinstance(bound, int) and last == bound:
                skip += len(rows)
            else:
                skip = sum(1 for _, s in rows if int(s) == last)
                bound = last
            if chunk:
                yield chunk

    async def page(self, flt: DlqFilter, limit: int, after: Position | None) -> Page:
        """Up to `limit` matching records, newest first, after `after`. `next` is set when
        the page is full or the scan budget ran out (the next page may then be empty)."""
        page = Page()
        examined = 0
        async for chunk in self.walk(flt.since, flt.until, newest_first=True, after=after):
            for pos, dead in zip(chunk, await self.load([p.id for p in chunk]), strict=True):
                examined += 1
                if dead is not None and flt.matches(dead):
                    page.items.append(dead)
                    if len(page.items) == limit:
                        page.next = pos
                        return page
                if examined >= LIST_BUDGET:
                    page.next = pos
                    return page
        return page

    async def matching(self, flt: DlqFilter) -> AsyncIterator[list[DeadLetter]]:
        """Every matching record, oldest first, in chunks (ids filter: straight lookups)."""
        if flt.ids:
            ids = sorted(flt.ids)
            for i in range(0, len(ids), CHUNK):
                found = [d for d in await self.load(ids[i : i + CHUNK]) if d is not None]
                picked = sorted((d for d in found if flt.matches(d)), key=lambda d: (d.dead_at, d.id))
                if picked:
                    yield picked
            return
        async for chunk in self.walk(flt.since, flt.until, newest_first=False):
            picked = [d for d in await self.load([p.id for p in chunk]) if d is not None and flt.matches(d)]
            if picked:
                yield picked


def _text(value: bytes | None) -> str | None:
    return value.decode() if value is not None else None
