"""The worker: fetch, dispatch by priority, run with bounded concurrency, report, commit.

`Worker` puts the parts together and owns their lifecycle; each part states its own
guarantees: `intake` (fetching, decoding, the completed-id check), `dispatch` (priority
with aging, ordered keys, due times), `runners` (the pool, drains), `execute` (one
handler run), `outcomes` (status events, retries, dead letters, commits), `assignment`
(owned partitions and their commits), `pauses` (full buffers, idle retry tiers), `ratelimit`.

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
- On revoke and on `stop()` (or `close()`): no new record starts, running ones get `drain_timeout_s`
  to finish, what finished is committed; what did not is left uncommitted, so another
  worker runs it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Awaitable, Coroutine, Iterable
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import IllegalStateError, KafkaError
from redis.asyncio import Redis

from consumer.app import WorkerApp
from consumer.assignment import Assignment
from consumer.control import CancelRequests
from consumer.dispatch import Dispatch
from consumer.donestore import DoneStore
from consumer.execute import Executor
from consumer.intake import Intake, Item
from consumer.metrics import Gauges, JobMetrics, MetricsServer, WorkerCollector
from consumer.outcomes import Outcomes
from consumer.pauses import Pauses, check_interval_s
from consumer.ratelimit import Limit, RateLimiter, TokenBuckets, parse_limits
from consumer.retry import RetryPolicy
from consumer.runners import Runners
from jobstream.kafka import make_producer
from jobstream.kafka_security import kafka_options
from jobstream.lifecycle import Lifecycle
from jobstream.presence import Presence, Vitals
from jobstream.settings import WorkerSettings
from schemas import Priority

log = logging.getLogger("jobstream.worker")


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, worker: Worker) -> None:
        self._worker = worker

    async def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        await self._worker.release(set(revoked))

    async def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        await self._worker.adopt(set(assigned))


class Worker(Lifecycle):
    """One worker process's runtime; a `jobstream.lifecycle.Service`. See the module docstring.

    `close()` drains and leaves the group, bounded by `drain_timeout_s` plus the bounded
    shutdown steps; `stop()` asks for the same and returns at once (a signal handler's call).
    """

    def __init__(self, app: WorkerApp, settings: WorkerSettings) -> None:
        super().__init__()
        self.app = app
        self.settings = settings
        self.id = settings.worker_id or f"{socket.gethostname()}:{os.getpid()}"
        t = settings.topics
        levels = {t.jobs(p): p.rank for p in Priority}
        tiers = [t.retry(name) for name in settings.retry_tier_names]
        self._topics = [*levels, *tiers]
        self._dispatch: Dispatch[Item] = Dispatch(settings.aging_ms, settings.buffer_per_partition)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._stopping = asyncio.Event()
        self.metrics = JobMetrics(app.handlers)
        self._redis = Redis.from_url(settings.redis_url)
        self._done = DoneStore(self._redis, settings.redis_prefix, settings.done_ttl_s)
        self._producer = make_producer(settings, linger_ms=settings.linger_ms)
        self._outcomes = Outcomes(
            settings, self._producer, self._done, self.metrics, self.id, self._stopping.is_set
        )
        self._consumer = AIOKafkaConsumer(
            **kafka_options(settings),
            group_id=t.workers_group,
            client_id=self.id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=2_000,
            session_timeout_ms=settings.session_timeout_ms,
            heartbeat_interval_ms=max(100, settings.session_timeout_ms // 3),
            metadata_max_age_ms=settings.metadata_max_age_ms,  # topics grown: the group rebalances
            group_instance_id=settings.instance_id,  # static membership: see WorkerSettings
        )
        self._assignment = Assignment(self._consumer, self.id)
        self._pauses = pauses = Pauses(self._consumer, self._dispatch, tiers)
        self._check_tiers_s = check_interval_s(RetryPolicy.of(settings).tiers[0].delay_ms)
        limits = {
            **{t: Limit.parse(h.rate_limit) for t, h in app.handlers.items() if h.rate_limit},
            **parse_limits(settings.rate_limits),  # settings override the app
        }
        self._limiter: RateLimiter | None = None
        if limits:
            buckets = TokenBuckets(self._redis, settings.redis_prefix)
            self._limiter = RateLimiter(limits, buckets, self._dispatch)
        self._cancels = CancelRequests(settings, self._cancel_requested)
        execute = Executor(self._outcomes, self._cancels, self.metrics, settings.default_timeout_s, self.id)
        self._runners = Runners(
            self._dispatch, pauses, execute.run, settings.buffer_per_partition, self.id,
            on_copy=self._outcomes.copy_skipped,
            on_starved=None if self._limiter is None else self._limiter.starving,
        )  # fmt: skip
        self._intake = Intake(
            self._consumer, self.id, levels, app.handlers, limits, self._assignment, self._done,
            self._cancels, self._dispatch, pauses, self._runners, self._outcomes, self._stopping, self._spawn,
        )  # fmt: skip
        self._presence = Presence(
            self._redis, settings.redis_prefix, self.id,
            {"app": app.name, "concurrency": settings.concurrency, "types": sorted(app.handlers)},
            Vitals(
                running=self._runners.__len__,
                buffered=self._dispatch.__len__,
                paused=lambda: len(self._dispatch.paused),
                partitions=lambda: sorted(f"{tp.topic}[{tp.partition}]" for tp in self._assignment.trackers),
            ),
            ttl_s=settings.session_timeout_ms / 1000,
        )  # fmt: skip
        self._metrics_server: MetricsServer | None = None
        if settings.metrics_port is not None:
            gauges = Gauges(
                running=self._runners.__len__,
                concurrency=settings.concurrency,
                buffered=self._dispatch.__len__,
                paused=lambda: len(self._dispatch.paused),
                assigned=self._assignment.__len__,
            )
            collector = WorkerCollector(self.metrics, gauges, self.id)
            self._metrics_server = MetricsServer(collector, settings.metrics_host, settings.metrics_port)

    # -- lifecycle ---------------------------------------------------------------------

    @property
    def metrics_port(self) -> int | None:
        """The port `/metrics` is served on (once started), or None."""
        return None if self._metrics_server is None else self._metrics_server.port

    async def _startup(self) -> None:
        if self._metrics_server is not None:
            await self._metrics_server.start()
        await self._producer.start()
        await self._outcomes.status.start()
        await self._done.start()
        await self._cancels.start()
        self._consumer.subscribe(self._topics, listener=_Listener(self))
        await self._consumer.start()
        self._spawn(self._intake.run(), "fetch")
        self._spawn(self._assignment.commit_every(self.settings.commit_interval_ms / 1000), "commit")
        self._spawn(self._park_idle_tiers(), "retry-tiers")
        if self._limiter is not None:
            self._spawn(self._limiter.run(self._runners.wake), "rate-limits")
        for i in range(self.settings.concurrency):
            self._spawn(self._runners.run(), f"runner-{i}")
        self._presence.start()
        log.info(
            "worker %s started: concurrency=%d app=%s", self.id, self.settings.concurrency, self.app.name
        )

    def stop(self) -> None:
        """Ask the worker to drain and leave (`close()` in the background); returns at once.
        Idempotent. `wait_closed()` returns once it has committed what finished and left."""
        if self._stop_fetching():
            self._spawn(self.close(), "shutdown")

    def _stop_fetching(self) -> bool:
        """No new record starts from now on; False if that was already so."""
        if self._stopping.is_set():
            return False
        log.info("worker %s stopping: draining %d running jobs", self.id, len(self._runners))
        self._stopping.set()
        return True

    def abort(self) -> None:
        """Cancel running jobs now (a second Ctrl-C); they stay uncommitted and run elsewhere."""
        self._runners.abort_all()

    async def _shutdown(self) -> None:
        self._stop_fetching()
        try:
            self._dispatch.drop(set(self._assignment.trackers))
            self._runners.stop_timer()
            await self._runners.drain(lambda item: True, self.settings.drain_timeout_s)
            for task in list(self._tasks):
                if task is not asyncio.current_task():
                    task.cancel()
            # each step is bounded: with Kafka or Redis gone, stop anyway; what is not
            # committed is redelivered
            await self._cancels.close()
            await _bounded(self._outcomes.completions.close(), 15, "record completions")
            await _bounded(self._outcomes.status.close(), 15, "flush status events")
            await _bounded(self._done.close(), 10, "record completed ids")
            await _bounded(self._assignment.commit(), 10, "commit")
            await _bounded(self._consumer.stop(), 15, "leave the group")  # the others rebalance at once
        except Exception:
            log.exception("worker %s: error while shutting down", self.id)
        finally:
            await _bounded(self._presence.stop(), 5, "leave the workers' list")  # before Redis closes
            await _bounded(self._producer.close(), 10, "close the producer")
            with contextlib.suppress(Exception):
                await self._redis.aclose()
            if self._metrics_server is not None:
                await _bounded(self._metrics_server.close(), 5, "stop serving metrics")
            log.info("worker %s stopped: %s", self.id, self.metrics.totals())

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _cancel_requested(self, job_id: str) -> None:
        self._runners.cancel_requested(job_id)

    # -- rebalance -----------------------------------------------------------------------

    async def _park_idle_tiers(self) -> None:
        """Retry tiers read to their end leave the fetches until they get records
        (`consumer.pauses`); the check runs every `_check_tiers_s`."""
        while not self._stopping.is_set():
            await asyncio.sleep(self._check_tiers_s)
            try:
                # bounded: `position()` waits as long as a partition has no valid position
                async with asyncio.timeout(max(1.0, 4 * self._check_tiers_s)):
                    await self._pauses.park_idle()
            except TimeoutError:
                log.warning("worker %s: retry tier check took too long; fetching every tier", self.id)
                self._pauses.unpark_all()
            except (KafkaError, IllegalStateError) as exc:  # a rebalance or the broker away: next time
                log.debug("worker %s: retry tiers not checked: %s", self.id, exc)
            except Exception:  # a bug: fetch every tier rather than leave one parked unwatched
                log.exception("worker %s: retry tier check failed; fetching every tier", self.id)
                self._pauses.unpark_all()

    async def adopt(self, assigned: set[TopicPartition]) -> None:
        self._pauses.forget(assigned)  # assigned afresh: unpaused
        await self._assignment.adopt(assigned)
        log.info("worker %s assigned %d partitions", self.id, len(assigned))

    async def release(self, revoked: set[TopicPartition]) -> None:
        """Partitions are going: finish what runs (bounded), commit, forget them."""
        self._pauses.forget(revoked)
        revoked &= set(self._assignment.trackers)
        if not revoked:
            return
        self._dispatch.drop(set(revoked))
        await self._runners.drain(lambda item: item.tp in revoked, self.settings.drain_timeout_s)
        await self._outcomes.flush()
        await self._assignment.commit(revoked)
        self._assignment.forget(revoked)
        log.info("worker %s released %d partitions", self.id, len(revoked))


async def _bounded(step: Awaitable[Any], timeout_s: float, what: str) -> None:
    try:
        await asyncio.wait_for(step, timeout_s)
    except TimeoutError:
        log.warning("shutdown: could not %s within %.0fs; going on", what, timeout_s)
    except Exception as exc:
        log.warning("shutdown: could not %s: %s", what, exc)
