"""Replays: select dead letters, count them (dry run), or re-enqueue them in the background.

A replay is recorded in the hash `{p}:replay:<replay_id>` (`matched`, `replayed`,
`skipped` and why, `failed`, `state` running|done|failed, `error`, `started_at`,
`finished_at`, `filter`, `options`), kept for `RECORD_TTL_S`. The work itself is
`deadletters.replay_run.ReplayRun`; this module owns the tasks: it keeps a strong reference
to each, and `close()` cancels them, gives back the claims of records not yet handed to
Kafka, and marks those replays failed, before the producer and Redis close.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from typing import Any

import orjson

from deadletters.query import DlqFilter, summary
from deadletters.replay_run import Counts, ReplayOptions, ReplayRun
from deadletters.store import CHUNK, DlqStore
from jobstream.kafka import Partitioner
from jobstream.lifecycle import Lifecycle
from schemas import new_job_id, now_ms

log = logging.getLogger("jobstream.producer.replay")

RECORD_TTL_S = 7 * 86_400
SAMPLE = 10
_INT_FIELDS = ("matched", "replayed", "skipped", "skipped_replayed", "skipped_no_job", "skipped_gone")


class Replayer(Lifecycle):
    """Launches and tracks replays; a `jobstream.lifecycle.Service` with nothing to start.
    `close()` cancels running replays and returns once each has recorded how it ended
    (bounded: each records within 5 s)."""

    def __init__(self, store: DlqStore, producer: Any, publisher: Any, partitioner: Partitioner, topics: Any):
        super().__init__()
        # What replays started from now on pace themselves with (a test stops the clock).
        self.clock: Callable[[], float] = time.monotonic
        self.sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
        self._store = store
        self._redis = store.redis
        self._producer = producer
        self._publisher = publisher
        self._partitioner = partitioner
        self._topics = topics
        self._tasks: dict[str, asyncio.Task[None]] = {}

    async def _shutdown(self) -> None:
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def key(self, replay_id: str) -> str:
        return f"{self._store.prefix}:replay:{replay_id}"

    async def select(self, flt: DlqFilter) -> tuple[list[str], list[dict[str, Any]]]:
        """The ids of every matching record, oldest first, and summaries of the first few."""
        ids: list[str] = []
        first: list[Any] = []
        async for chunk in self._store.matching(flt):
            ids.extend(d.id for d in chunk)
            first.extend(chunk[: SAMPLE - len(first)])
        claims, _ = await self._store.replay_marks([d.id for d in first])
        return ids, [summary(d, by) for d, by in zip(first, claims, strict=True)]

    async def launch(self, flt: DlqFilter, options: ReplayOptions, ids: list[str]) -> str:
        """Record a new replay of `ids` and start it in the background; returns its id."""
        if self._closing:
            raise RuntimeError("replayer is closed")
        replay_id = new_job_id()
        record: dict[Any, Any] = {
            "replay_id": replay_id,
            "state": "running",
            "matched": len(ids),
            **_count_fields(Counts()),
            "started_at": now_ms(),
            "filter": orjson.dumps(flt.describe()).decode(),
            "options": orjson.dumps(asdict(options)).decode(),
        }
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.hset(self.key(replay_id), mapping=record)
            pipe.expire(self.key(replay_id), RECORD_TTL_S)
            await pipe.execute()
        run = ReplayRun(
            replay_id,
            options,
            self._store,
            self._producer,
            self._publisher,
            self._partitioner,
            self._topics,
            clock=self.clock,
            sleep=self.sleep,
        )
        task = asyncio.create_task(self._run(run, ids), name=f"replay-{replay_id}")
        self._tasks[replay_id] = task
        task.add_done_callback(lambda _: self._tasks.pop(replay_id, None))
        log.info("replay started replay_id=%s matched=%d filter=%s", replay_id, len(ids), record["filter"])
        return replay_id

    async def status(self, replay_id: str) -> dict[str, Any] | None:
        raw: dict[Any, Any] = await self._redis.hgetall(self.key(replay_id))
        if not raw:
            return None
        h = {k.decode(): v.decode() for k, v in raw.items()}
        out: dict[str, Any] = {"replay_id": replay_id, "state": h.get("state", "")}
        for name in (*_INT_FIELDS, "failed"):
            out[name] = int(h.get(name) or 0)
        out["skipped_by_reason"] = {
            "already_replayed": out.pop("skipped_replayed"),
            "no_job": out.pop("skipped_no_job"),
            "expired": out.pop("skipped_gone"),
        }
        out["error"] = h.get("error") or None
        out["started_at"] = int(h["started_at"]) if h.get("started_at") else None
        out["finished_at"] = int(h["finished_at"]) if h.get("finished_at") else None
        out["filter"] = orjson.loads(h.get("filter") or "{}")
        out["options"] = orjson.loads(h.get("options") or "{}")
        return out

    async def _run(self, run: ReplayRun, ids: list[str]) -> None:
        state, size = "failed", run.chunk_size(CHUNK)
        try:
            for i in range(0, len(ids), size):
                await run.process(ids[i : i + size])
                await self._save(run)
            state = "done"
        except asyncio.CancelledError:
            run.counts.error = "interrupted: the API shut down before the replay finished"
            raise
        except Exception as exc:
            run.counts.error = f"{type(exc).__name__}: {exc}"
            log.exception("replay failed replay_id=%s", run.replay_id)
        finally:
            await self._finish(run, state)

    async def _finish(self, run: ReplayRun, state: str) -> None:
        """Give back unsent claims and record the outcome; bounded, never raises."""
        try:
            async with asyncio.timeout(5):
                await run.release_held()
                await self._save(run, state=state, finished_at=now_ms())
        except Exception as exc:
            log.error("replay not recorded replay_id=%s state=%s: %r", run.replay_id, state, exc)
        c = run.counts
        log.info(
            "replay %s replay_id=%s replayed=%d skipped=%d failed=%d",
            state, run.replay_id, c.replayed,
            c.skipped_replayed + c.skipped_no_job + c.skipped_gone, c.failed,
        )  # fmt: skip

    async def _save(self, run: ReplayRun, **extra: str | int) -> None:
        fields: dict[Any, Any] = {**_count_fields(run.counts), **extra}
        if run.counts.error:
            fields["error"] = run.counts.error
        await self._redis.hset(self.key(run.replay_id), mapping=fields)


def _count_fields(c: Counts) -> dict[str, int]:
    return {
        "replayed": c.replayed,
        "skipped": c.skipped_replayed + c.skipped_no_job + c.skipped_gone,
        "skipped_replayed": c.skipped_replayed,
        "skipped_no_job": c.skipped_no_job,
        "skipped_gone": c.skipped_gone,
        "failed": c.failed,
    }
