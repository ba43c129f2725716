"""The worker: fetch, dispatch by priority, run with bounded concurrency, report, commit.

Guarantees:
- At most `concurrency` handlers run at once; records from every assigned partition
  compete for those slots by priority with aging (`Dispatch`).
- A partition's offset is committed only up to the lowest record whose outcome (its
  `completed` or `failed` status event) Kafka has acknowledged (`OffsetTracker`).
- A job's `completed` status goes to Kafka only after its completion is recorded in
  Redis (`Completions`); a redelivered job recorded as completed is not run again (its
  event is sent again when the record was never confirmed). So after a kill -9 no job
  completes twice, and only the jobs the dead worker was running, or had finished within
  its last completion write, run again (README, "What a worker guarantees").
- On revoke and on `stop()`: no new record starts, running ones get `drain_timeout_s`
  to finish, what finished is committed; what did not is left uncommitted, so another
  worker runs it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import ConsumerStoppedError, KafkaError
from redis.asyncio import Redis
from redis.exceptions import RedisError

from consumer.app import HandlerSpec, JobContext, WorkerApp
from consumer.completions import Completed, Completions
from consumer.control import CancelRequests
from consumer.dispatch import Dispatch
from consumer.donestore import DoneStore
from consumer.errors import JobTimeout, ResultError
from consumer.metrics import Gauges, JobMetrics, MetricsServer, WorkerCollector
from consumer.offsets import OffsetTracker
from consumer.partitions import UNKNOWN_END, Partitions
from consumer.pauses import Pauses, due_ms, now_ms
from consumer.ratelimit import Limit, TokenBuckets, parse_limits
from consumer.routing import Failure, Router
from jobstream.kafka import make_producer
from jobstream.settings import WorkerSettings
from jobstream.status import StatusPublisher
from schemas import DecodeError, JobEnvelope, Priority, Source, decode_job

log = logging.getLogger("jobstream.worker")

MAX_RESULT_BYTES = 1024 * 1024
REPUBLISH_DELAY_S = 1.0
# records taken in per fetch. Decoding them holds the event loop (~0.1 ms each on a busy
# machine), and while it is held, finished jobs wait to be recorded (a kill -9 then runs
# them twice); but fewer per fetch, or a loop turn between slices of one, made status
# records smaller and more numerous and cut end-to-end throughput by a fifth (bench 3).
FETCH_RECORDS = 4_000


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
    extra: dict[str, Any] = field(default_factory=dict)


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, worker: Worker) -> None:
        self._worker = worker

    async def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        await self._worker.release(set(revoked))

    async def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        await self._worker.adopt(set(assigned))


class Worker:
    """One worker process's runtime; an async context manager. See the module docstring."""

    def __init__(self, app: WorkerApp, settings: WorkerSettings) -> None:
        self.app = app
        self.settings = settings
        self.id = settings.worker_id or f"{socket.gethostname()}:{os.getpid()}"
        t = settings.topics
        self._levels = {t.jobs(p): p.rank for p in Priority}
        self._topics = [*self._levels, *(t.retry(name) for name in settings.retry_tier_names)]
        self._dispatch: Dispatch[Item] = Dispatch(settings.aging_ms, settings.buffer_per_partition)
        self._due_timer: asyncio.TimerHandle | None = None
        self._running: set[Item] = set()
        self._idle: list[asyncio.Future[None]] = []
        self._changed = asyncio.Event()  # a run ended: drains re-check
        self._tasks: set[asyncio.Task[Any]] = set()
        self._stopping = asyncio.Event()
        self._closed = asyncio.Event()
        self._redis = Redis.from_url(settings.redis_url)
        self._done = DoneStore(self._redis, settings.redis_prefix, settings.done_ttl_s)
        self._completions: Completions[Item] = Completions(self._done, self._send_completed)
        self._producer = make_producer(settings, linger_ms=settings.linger_ms)
        self._status = StatusPublisher(
            self._producer, t.status, settings.status_partitions, hold=self._completions.settle
        )
        self._router = Router(settings, self._producer, self._status, self.id, self._stopping.is_set)
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=settings.kafka_bootstrap_servers,
            group_id=t.workers_group,
            client_id=self.id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=2_000,
            session_timeout_ms=settings.session_timeout_ms,
            heartbeat_interval_ms=max(100, settings.session_timeout_ms // 3),
        )
        self._parts = Partitions(self._consumer, self.id)
        self._pauses = Pauses(self._consumer, self._dispatch)
        self._limits = {
            **{t: Limit.parse(h.rate_limit) for t, h in app.handlers.items() if h.rate_limit},
            **parse_limits(settings.rate_limits),  # settings override the app
        }
        self._buckets = TokenBuckets(self._redis, settings.redis_prefix)
        self._starved = asyncio.Event()
        self._cancels = CancelRequests(settings, self._cancel_requested)
        self.metrics = JobMetrics(app.handlers)
        self._metrics_server: MetricsServer | None = None
        if settings.metrics_port is not None:
            gauges = Gauges(
                running=lambda: len(self._running),
                concurrency=settings.concurrency,
                buffered=lambda: len(self._dispatch),
                paused=lambda: len(self._dispatch.paused),
                assigned=lambda: len(self._parts),
            )
            collector = WorkerCollector(self.metrics, gauges, self.id)
            self._metrics_server = MetricsServer(collector, settings.metrics_host, settings.metrics_port)

    # -- lifecycle ---------------------------------------------------------------------

    async def __aenter__(self) -> Worker:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.stop()
        await self.wait_closed()

    @property
    def metrics_port(self) -> int | None:
        """The port `/metrics` is served on (once started), or None."""
        return None if self._metrics_server is None else self._metrics_server.port

    async def start(self) -> None:
        if self._metrics_server is not None:
            self._metrics_server.start()
        await self._producer.start()
        self._status.start()
        self._done.start()
        await self._cancels.start()
        self._consumer.subscribe(self._topics, listener=_Listener(self))
        await self._consumer.start()
        self._spawn(self._fetch_loop(), "fetch")
        self._spawn(self._parts.commit_every(self.settings.commit_interval_ms / 1000), "commit")
        if self._limits:
            self._spawn(self._limit_loop(), "rate-limits")
        for i in range(self.settings.concurrency):
            self._spawn(self._runner(), f"runner-{i}")
        log.info(
            "worker %s started: concurrency=%d app=%s", self.id, self.settings.concurrency, self.app.name
        )

    def stop(self) -> None:
        """Ask the worker to drain and leave; returns at once. Idempotent."""
        if not self._stopping.is_set():
            log.info("worker %s stopping: draining %d running jobs", self.id, len(self._running))
            self._stopping.set()
            self._spawn(self._shutdown(), "shutdown")

    async def wait_closed(self) -> None:
        """Return when the worker has committed what finished and left the group."""
        await self._closed.wait()

    def abort(self) -> None:
        """Cancel running jobs now (a second Ctrl-C); they stay uncommitted and run elsewhere."""
        for item in list(self._running):
            self._abort(item)

    async def _shutdown(self) -> None:
        try:
            self._dispatch.drop(set(self._parts.trackers))
            if self._due_timer is not None:
                self._due_timer.cancel()
            await self._drain(lambda item: True, self.settings.drain_timeout_s)
            for task in list(self._tasks):
                if task is not asyncio.current_task():
                    task.cancel()
            # each step is bounded: with Kafka or Redis gone, stop anyway; what is not
            # committed is redelivered
            await self._cancels.close()
            await _bounded(self._completions.close(), 15, "record completions")
            await _bounded(self._status.close(), 15, "flush status events")
            await _bounded(self._done.close(), 10, "record completed ids")
            await _bounded(self._parts.commit(), 10, "commit")
            await _bounded(self._consumer.stop(), 15, "leave the group")  # the others rebalance at once
        except Exception:
            log.exception("worker %s: error while shutting down", self.id)
        finally:
            await _bounded(self._producer.stop(), 10, "close the producer")
            with contextlib.suppress(Exception):
                await self._redis.aclose()
            if self._metrics_server is not None:
                await _bounded(self._metrics_server.stop(), 5, "stop serving metrics")
            log.info("worker %s stopped: %s", self.id, self.metrics.totals())
            self._closed.set()

    def _spawn(self, coro: Any, name: str) -> None:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- rebalance -----------------------------------------------------------------------

    async def adopt(self, assigned: set[TopicPartition]) -> None:
        await self._parts.adopt(assigned)
        log.info("worker %s assigned %d partitions", self.id, len(assigned))

    async def release(self, revoked: set[TopicPartition]) -> None:
        """Partitions are going: finish what runs (bounded), commit, forget them."""
        revoked &= set(self._parts.trackers)
        if not revoked:
            return
        self._dispatch.drop(set(revoked))
        await self._drain(lambda item: item.tp in revoked, self.settings.drain_timeout_s)
        await self._completions.flush()
        await self._status.flush()
        await self._parts.commit(revoked)
        self._parts.forget(revoked)
        log.info("worker %s released %d partitions", self.id, len(revoked))

    async def _drain(self, which: Callable[[Item], bool], timeout_s: float) -> None:
        """Wait for matching running jobs to end; abort those still running after `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        while any(which(i) for i in self._running):
            left = deadline - time.monotonic()
            if left <= 0:
                stuck = [i for i in self._running if which(i)]
                log.warning("worker %s: drain timeout, aborting %d jobs", self.id, len(stuck))
                for item in stuck:
                    self._abort(item)
                deadline = time.monotonic() + 5.0  # a handler that ignores cancellation
                timeout_s = 0
                if not stuck:
                    break
                continue
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), left)
            if timeout_s == 0 and time.monotonic() > deadline:
                break

    def _abort(self, item: Item) -> None:
        if item.task is not None and not item.aborted:
            item.aborted = True
            item.task.cancel()

    # -- fetch ---------------------------------------------------------------------------

    async def _fetch_loop(self) -> None:
        consumer = self._consumer
        while not self._stopping.is_set():
            try:
                batches = await consumer.getmany(timeout_ms=200, max_records=FETCH_RECORDS)
            except ConsumerStoppedError:
                return
            except KafkaError as exc:
                log.warning("worker %s: fetch failed, retrying: %s", self.id, exc)
                await asyncio.sleep(0.5)
                continue
            if batches and not self._stopping.is_set():
                await self._take_in(batches)

    async def _take_in(self, batches: dict[TopicPartition, list[Any]]) -> None:
        items: list[Item] = []
        for tp, records in batches.items():
            tracker = self._parts.trackers.get(tp)
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
                    self._spawn(self._poison(tp, record, tracker, str(exc)), "poison")
                    continue
                spec = self.app.handlers.get(job.type)
                key = job.key if spec is not None and spec.ordered and job.key is not None else None
                due = due_ms(record.headers) if level is None else None
                lvl = job.priority.rank if level is None else level
                limited = job.type if job.type in self._limits else None
                items.append(Item(tp, record.offset, tracker, job, spec, lvl, key, due, limited))
        if not items:
            return
        below = self._parts.seen_below
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
            if self._parts.trackers.get(item.tp) is not item.tracker:
                continue  # revoked while we asked Redis
            if item.job.id in done:
                self.metrics.count(item.job.type, "skipped")
                self._already_completed(item, done[item.job.id])
                continue
            if item.job.id in self._cancels:
                self._cancelled(item)
                continue
            self._dispatch.add(item, now, item.due, wall)
            touched.add(item.tp)
        self._pauses.buffer_changed(touched)
        self._release()

    def _release(self) -> None:
        """Let held retry records that are due go on, wake runners, and set the timer for
        the next due time: no polling, and no handler slot held while a record waits."""
        if self._due_timer is not None:
            self._due_timer.cancel()
            self._due_timer = None
        nxt = self._dispatch.release(time.monotonic() * 1000, now_ms())
        self._wake(len(self._dispatch))
        if nxt is not None:
            delay = max(0.0, (nxt - now_ms()) / 1000)
            self._due_timer = asyncio.get_running_loop().call_later(delay, self._release)

    async def _poison(self, tp: TopicPartition, record: Any, tracker: OffsetTracker, why: str) -> None:
        self.metrics.count("", "poison")
        log.warning("poison record %s[%d]@%d: %s", tp.topic, tp.partition, record.offset, why)
        source = Source(topic=tp.topic, partition=tp.partition, offset=record.offset)
        if await self._router.poison(record.value, source, why):
            tracker.done(record.offset)

    def _wake(self, n: int) -> None:
        while n > 0 and self._idle:
            fut = self._idle.pop()
            if not fut.done():
                fut.set_result(None)
                n -= 1

    # -- run -----------------------------------------------------------------------------

    async def _runner(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            item = self._dispatch.take(time.monotonic() * 1000)
            if item is None:
                if self._limits and self._dispatch.starved():
                    self._starved.set()
                fut = loop.create_future()
                self._idle.append(fut)
                await fut
                continue
            if self._dispatch.buffered(item.tp) <= self.settings.buffer_per_partition // 2:
                self._pauses.buffer_changed({item.tp})
            await self._run(item)

    async def _run(self, item: Item) -> None:
        job, spec = item.job, item.spec
        item.task = asyncio.current_task()
        self._running.add(item)
        try:
            if spec is None:
                msg = f"no handler for job type {job.type!r} on this worker"
                await self._fail(item, Failure({"type": "UnknownJobType", "message": msg}))
                return
            if job.id in self._cancels:
                self._cancelled(item)
                return
            if job.expires_at is not None and now_ms() > job.expires_at:
                self.metrics.count(job.type, "expired")
                if await self._router.expired(job, self._source(item)):
                    item.tracker.done(item.offset)
                return
            self._emit(job, "active")
            timeout = job.timeout_s or spec.timeout_s or self.settings.default_timeout_s
            ctx = JobContext(job, self.id, self._progress)
            started = time.perf_counter()
            try:
                async with asyncio.timeout(timeout) as cm:
                    try:
                        result = await spec.func(ctx)
                    finally:
                        self.metrics.ran(job.type, time.perf_counter() - started)
                _check_result(result)
            except asyncio.CancelledError:
                if not item.aborted:
                    raise
                if (task := asyncio.current_task()) is not None:
                    task.uncancel()
                if job.id in self._cancels:
                    self._cancelled(item)
                else:
                    log.info("job %s %s aborted by drain; left for redelivery", job.id, job.type)
                return
            except Exception as exc:
                if isinstance(exc, TimeoutError) and cm.expired():
                    timed_out = JobTimeout(f"job exceeded its timeout of {timeout}s")
                    await self._fail(item, Failure(_error_dict(timed_out), timed_out, timed_out=True))
                else:
                    await self._fail(item, Failure(_error_dict(exc), exc))
            else:
                specs = [*job.then, *ctx.follow_ups]
                children = await self._router.follow_ups(job, specs, result) if specs else []
                if children is not None:  # None: stopping before Kafka took them; runs again
                    self._completed(item, result, children)
        finally:
            self._running.discard(item)
            item.task = None
            self._dispatch.finished(item, time.monotonic() * 1000)
            self._changed.set()

    async def _fail(self, item: Item, failure: Failure) -> None:
        self.metrics.count(item.job.type, "failed")
        job = item.job
        log.info("job %s %s failed attempt %d: %s", job.id, job.type, job.attempt, failure.error["message"])
        if await self._router.failed(job, item.spec, failure, self._source(item)):
            item.tracker.done(item.offset)

    def _progress(self, job: JobEnvelope, percent: float, message: str | None) -> None:
        self._emit(job, "progress", progress={"percent": percent, "message": message})

    def _event(self, job: JobEnvelope, state: str, fields: dict[str, Any]) -> dict[str, Any]:
        event = {"job_id": job.id, "type": job.type, "state": state, "attempt": job.attempt,
                 "at": now_ms(), "worker": self.id, **fields}  # fmt: skip
        if job.parent_id is not None:
            event["parent_id"] = job.parent_id
        return event

    def _emit(self, job: JobEnvelope, state: str, **fields: Any) -> None:
        self._status.publish(self._event(job, state, fields))

    @staticmethod
    def _source(item: Item) -> Source:
        return Source(topic=item.tp.topic, partition=item.tp.partition, offset=item.offset)

    def _cancel_requested(self, job_id: str) -> None:
        for item in list(self._running):
            if item.job.id == job_id:
                log.info("job %s %s cancelled while running", job_id, item.job.type)
                self._abort(item)

    def _cancelled(self, item: Item) -> None:
        self.metrics.count(item.job.type, "cancelled")
        self._outcome(item, self._event(item.job, "cancelled", {}), completed=False)

    def _completed(self, item: Item, result: Any, children: list[str]) -> None:
        self.metrics.count(item.job.type, "completed")
        fields: dict[str, Any] = {"result": result}
        if children:
            fields["children"] = children
        self._completions.add(item, self._event(item.job, "completed", fields))

    def _send_completed(self, batch: list[Completed[Item]]) -> None:
        for item, event in batch:  # recorded in Redis (or Redis failed): now to Kafka
            self._outcome(item, event, completed=True)

    def _already_completed(self, item: Item, unconfirmed: bytes | None) -> None:
        """A redelivered job recorded as completed: skip it. If Kafka's acknowledgement of
        its completed event was never confirmed, its worker may have died before Kafka had
        it: send the recorded event again (a duplicate of an event Kafka has is harmless)."""
        if unconfirmed is None:
            item.tracker.done(item.offset)
            return
        try:
            event = orjson.loads(unconfirmed)
        except orjson.JSONDecodeError:
            item.tracker.done(item.offset)
            return
        job = item.job
        log.info("job %s %s completed by a worker that died; sending its status again", job.id, job.type)
        self._outcome(item, event, completed=True)

    def _outcome(self, item: Item, event: dict[str, Any], completed: bool) -> None:
        """Publish the outcome; once Kafka has it, the record's offset may be committed."""
        job = item.job

        def acked(err: BaseException | None) -> None:
            if err is None:
                item.tracker.done(item.offset)
                if completed:
                    self._done.confirm(job.id)
            else:  # keep the offset pending and try again: an outcome is never dropped
                log.warning("status for job %s not acknowledged (%s); retrying", job.id, err)
                asyncio.get_running_loop().call_later(REPUBLISH_DELAY_S, self._status.publish, event, acked)

        self._status.publish(event, acked)

    async def _limit_loop(self) -> None:
        """Fetch tokens for rate-limited types whose records wait, sleeping until the next
        token is due; records of other types never wait on this."""
        while True:
            starved = self._dispatch.starved()
            if not starved:
                self._starved.clear()
                await self._starved.wait()
                continue
            waits: list[int] = []
            for job_type, held in starved.items():
                limit = self._limits[job_type]
                try:
                    granted, wait = await self._buckets.take(job_type, limit, min(held, limit.batch))
                except (RedisError, OSError) as exc:
                    log.warning("rate limit for %s: Redis unreachable, retrying: %s", job_type, exc)
                    granted, wait = 0, 1_000
                if granted:
                    self._dispatch.grant(job_type, granted, time.monotonic() * 1000)
                    self._wake(granted)
                if granted < held:
                    waits.append(max(wait, 1))
            if waits:
                self._starved.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._starved.wait(), min(waits) / 1000)

    # -- commit --------------------------------------------------------------------------


async def _bounded(step: Any, timeout_s: float, what: str) -> None:
    try:
        await asyncio.wait_for(step, timeout_s)
    except TimeoutError:
        log.warning("shutdown: could not %s within %.0fs; going on", what, timeout_s)
    except Exception as exc:
        log.warning("shutdown: could not %s: %s", what, exc)


def _check_result(result: Any) -> None:
    try:
        size = len(orjson.dumps(result))
    except TypeError as exc:
        raise ResultError(f"the handler's result is not JSON-serializable: {exc}") from None
    if size > MAX_RESULT_BYTES:
        raise ResultError(f"the handler's result is {size} bytes; the limit is {MAX_RESULT_BYTES}")


def _error_dict(exc: BaseException) -> dict[str, Any]:
    tb = "".join(traceback.format_exception(exc))
    return {"type": type(exc).__name__, "message": str(exc) or type(exc).__name__, "traceback": tb[-8_000:]}
