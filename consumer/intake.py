"""Intake: fetching records, decoding them, and handing them to `Dispatch`.

Guarantees:
- Every fetched record of an owned partition is added to its `OffsetTracker` before
  anything else happens to it, so its offset is not committed before its outcome; a record
  the client delivers twice is taken once.
- A record that does not decode is poison: it goes to the dead-letter topic (bytes and
  all) and the worker goes on.
- The completed-id check: a record that may have been delivered before (below its
  partition's end offset at assignment), a follow-up or a scheduled job (whose producer may
  write them twice) is looked up in Redis, in one round trip per fetch; one recorded as
  completed is not run again. Records past that offset cost no round trip.
- Copies in flight together: two records of one follow-up or scheduled job reach the same
  worker (their key or id picks the partition) and, fetched before the first completed, pass the
  check together; they run one at a time (`Dispatch`, order key `COPIES + id`), and a copy
  still waiting when the first ends is not run (`Runners`): the first's outcome carries the
  job on.
- A job asked to be cancelled is not started; a record whose partition was revoked while
  Redis answered is dropped (it is another worker's now).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Collection, Coroutine
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import ConsumerStoppedError, KafkaError

from consumer.app import HandlerSpec
from consumer.assignment import UNKNOWN_END, Assignment
from consumer.control import CancelRequests
from consumer.dispatch import Dispatch
from consumer.donestore import DoneStore
from consumer.offsets import OffsetTracker
from consumer.pauses import Pauses
from schemas import HEADER_DUE, DecodeError, JobEnvelope, decode_job, now_ms

if TYPE_CHECKING:
    from consumer.outcomes import Outcomes
    from consumer.runners import Runners

log = logging.getLogger("jobstream.worker")

# records taken in per fetch. Decoding them holds the event loop (~0.1 ms each on a busy
# machine), and while it is held, finished jobs wait to be recorded (a kill -9 then runs
# them twice); but fewer per fetch, or a loop turn between slices of one, made status
# records smaller and more numerous and cut end-to-end throughput by a fifth (bench 3).
FETCH_RECORDS = 4_000
COPIES = "\0copies:"  # order key prefix of jobs that may come twice (unlike job keys, never ordered)


@dataclass(slots=True, eq=False)
class Item:
    """One fetched record on its way through the worker."""

    tp: TopicPartition
    offset: int
    tracker: OffsetTracker
    job: JobEnvelope
    spec: HandlerSpec | None
    level: int
    order_key: str | None
    due: int | None = None  # a retry record's due time (wall ms)
    limit_key: str | None = None  # its job type, when that type is rate-limited
    task: asyncio.Task[Any] | None = None
    aborted: bool = False

    @property
    def job_id(self) -> str:
        return self.job.id


def due_ms(headers: Any) -> int | None:
    """The `js-due-ms` header of a record, if it has a valid one."""
    for name, value in headers or ():
        if name == HEADER_DUE:
            try:
                return int(value)
            except ValueError:
                return None
    return None


class Intake:
    """The fetch loop; `run()` returns once `stopping` is set or the consumer stopped."""

    def __init__(
        self,
        consumer: AIOKafkaConsumer,
        worker_id: str,
        levels: dict[str, int],
        handlers: dict[str, HandlerSpec],
        limited: Collection[str],
        assignment: Assignment,
        done: DoneStore,
        cancels: CancelRequests,
        dispatch: Dispatch[Item],
        pauses: Pauses,
        runners: Runners,
        outcomes: Outcomes,
        stopping: asyncio.Event,
        spawn: Callable[[Coroutine[Any, Any, None], str], None],
    ) -> None:
        self._consumer = consumer
        self._id = worker_id
        self._levels = levels  # priority topic -> rank; a retry topic has none
        self._handlers = handlers
        self._limited = limited
        self._assignment = assignment
        self._done = done
        self._cancels = cancels
        self._dispatch = dispatch
        self._pauses = pauses
        self._runners = runners
        self._outcomes = outcomes
        self._stopping = stopping
        self._spawn = spawn

    async def run(self) -> None:
        consumer = self._consumer
        while not self._stopping.is_set():
            try:
                batches = await consumer.getmany(timeout_ms=200, max_records=FETCH_RECORDS)
            except ConsumerStoppedError:
                return
            except KafkaError as exc:
                log.warning("worker %s: fetch failed, retrying: %s", self._id, exc)
                await asyncio.sleep(0.5)
                continue
            if batches and not self._stopping.is_set():
                await self.take_in(batches)

    async def take_in(self, batches: dict[TopicPartition, list[Any]]) -> None:
        trackers = self._assignment.trackers
        items: list[Item] = []
        for tp, records in batches.items():
            tracker = trackers.get(tp)
            if tracker is None:
                continue
            level = self._levels.get(tp.topic)  # None on a retry topic: the job's priority
            for record in records:
                try:
                    tracker.add(record.offset)
                except ValueError:
                    continue  # delivered twice by the client; the first copy is in hand
                try:
                    job = decode_job(record.value)
                except DecodeError as exc:
                    self._spawn(self._outcomes.poison(tp, record, tracker, str(exc)), "poison")
                    continue
                spec = self._handlers.get(job.type)
                key = job.key if spec is not None and spec.ordered and job.key is not None else None
                if key is None and (job.not_before or job.parent_id):
                    key = COPIES + job.id  # its producer may write it twice: copies run one at a time
                due = due_ms(record.headers) if level is None else None
                lvl = job.priority.rank if level is None else level
                limited = job.type if job.type in self._limited else None
                items.append(Item(tp, record.offset, tracker, job, spec, lvl, key, due, limited))
        if not items:
            return
        below = self._assignment.seen_below
        # also checked: follow-ups and scheduled jobs, whose producer may write them twice
        wall = now_ms()
        done = await self._done.seen(
            [
                i.job.id
                for i in items
                if i.offset < below.get(i.tp, UNKNOWN_END) or i.job.parent_id or i.job.not_before
            ]
        )
        now = time.monotonic() * 1000
        touched: set[TopicPartition] = set()
        for item in items:
            if trackers.get(item.tp) is not item.tracker:
                continue  # revoked while we asked Redis
            if item.job.id in done:
                self._outcomes.already_completed(item, done[item.job.id])
                continue
            if item.job.id in self._cancels:
                self._outcomes.cancelled(item)
                continue
            self._dispatch.add(item, now, item.due, wall)
            touched.add(item.tp)
        self._pauses.buffer_changed(touched)
        self._runners.release()
