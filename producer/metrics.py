"""Prometheus metrics of one app, in a registry of its own.

- `jobstream_api_jobs_submitted_total{priority}`: jobs accepted (in Kafka, or stored to run later);
- `jobstream_api_submit_rejected_total{reason}`: requests or batch items refused;
- `jobstream_api_submit_latency_seconds{route}`: `single` or `batch`, arrival to answer;
- `jobstream_api_projection_write_errors_total`: `queued` states not written to Redis;
- `jobstream_api_http_internal_errors_total`: requests that ended in a bug;
- `jobstream_api_jobs_steered_total`: keyless jobs given an id that keeps them off the
  partitions whose sends were stuck at the time (a leader moving; `jobstream.stalls`);
- `jobstream_api_scheduler_fired_total`: delayed jobs this process's scheduler handed to
  Kafka, and `jobstream_api_scheduler_lateness_seconds`, from each one's due time to its
  hand-over (both absent when the API runs no scheduler); likewise for recurring schedules,
  `jobstream_api_schedule_occurrences_fired_total` and `jobstream_api_schedule_lateness_seconds`
  (from each occurrence's time to its job's hand-over);
- `jobstream_queue_depth{queue, kind}` (consumer lag per priority topic and retry tier),
  `jobstream_delayed_jobs{state}` (`waiting`, `claimed`) and `jobstream_dead_letters_indexed`:
  what `GET /queues` says, read when scraped (cached up to a second).

A per-app `CollectorRegistry` (not the process-global one) lets tests and benchmarks create
many apps in one process without "duplicated timeseries" errors.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from jobstream.histogram import PlainHistogram
from schemas import Priority

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Fires(Protocol):
    @property
    def fired(self) -> int: ...

    @property
    def lateness(self) -> PlainHistogram: ...


class _FiredCollector:
    """Reads the schedulers' own counts when scraped: nothing on their path."""

    def __init__(self, scheduler: Fires, recurring: Fires | None) -> None:
        self._scheduler = scheduler
        self._recurring = recurring

    def collect(self) -> Iterator[Metric]:
        yield CounterMetricFamily(
            "jobstream_api_scheduler_fired",
            "Delayed jobs this process's scheduler handed to Kafka.",
            value=self._scheduler.fired,
        )
        yield self._scheduler.lateness.family(
            "jobstream_api_scheduler_lateness_seconds",
            "From a delayed job's due time to its hand-over to Kafka, per job.",
        )
        if self._recurring is not None:
            yield CounterMetricFamily(
                "jobstream_api_schedule_occurrences_fired",
                "Occurrences of recurring schedules this process handed to Kafka.",
                value=self._recurring.fired,
            )
            yield self._recurring.lateness.family(
                "jobstream_api_schedule_lateness_seconds",
                "From a schedule's occurrence time to its job's hand-over to Kafka, per occurrence.",
            )


class _QueuesCollector:
    """Gauges from the last `GET /queues` snapshot the metrics route read."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[Metric]:
        snap = self._metrics.queues_last
        if snap is None:
            return
        depth = GaugeMetricFamily(
            "jobstream_queue_depth",
            "Jobs waiting per queue: the workers' group lag.",
            labels=["queue", "kind"],
        )
        for q in snap["queues"]:
            if q.get("depth") is not None:
                depth.add_metric([q["name"], q["kind"]], q["depth"])
        yield depth
        delayed = GaugeMetricFamily("jobstream_delayed_jobs", "Delayed jobs in Redis.", labels=["state"])
        delayed.add_metric(["waiting"], snap["delayed"]["waiting"])
        delayed.add_metric(["claimed"], snap["delayed"]["claimed"])
        yield delayed
        yield GaugeMetricFamily(
            "jobstream_dead_letters_indexed",
            "Dead letters in the index.",
            value=snap["dead_letters"]["indexed"],
        )


class Metrics:
    """The producer's counters and histograms. Labelled children of the hot counters are
    looked up once, here, instead of on every request."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.submitted = Counter(
            "jobstream_api_jobs_submitted",
            "Jobs acknowledged by Kafka and answered as queued.",
            ["priority"],
            registry=self.registry,
        )
        self.rejected = Counter(
            "jobstream_api_submit_rejected",
            "Requests or batch items refused, by reason.",
            ["reason"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "jobstream_api_submit_latency_seconds",
            "Time from a submit request's arrival to its answer.",
            ["route"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.projection_errors = Counter(
            "jobstream_api_projection_write_errors",
            "Queued states not written to the Redis projection (the job itself is in Kafka).",
            registry=self.registry,
        )
        self.internal_errors = Counter(
            "jobstream_api_http_internal_errors",
            "Requests that ended in an unexpected exception (a bug).",
            registry=self.registry,
        )
        self.steered = Counter(
            "jobstream_api_jobs_steered",
            "Keyless jobs kept off partitions whose sends were stuck (a leader moving).",
            registry=self.registry,
        )
        self._submitted = {p: self.submitted.labels(p.value) for p in Priority}
        self._latency = {r: self.latency.labels(r) for r in ("single", "batch")}
        self._fired: _FiredCollector | None = None
        self.queues_last: dict[str, Any] | None = None  # the newest `GET /queues` snapshot
        self.registry.register(_QueuesCollector(self))

    def count_submitted(self, priority: Priority, n: int = 1) -> None:
        self._submitted[priority].inc(n)

    def count_rejected(self, reason: str, n: int = 1) -> None:
        self.rejected.labels(reason).inc(n)

    def observe_latency(self, route: str, seconds: float) -> None:
        self._latency[route].observe(seconds)

    def watch_scheduler(self, scheduler: Fires, recurring: Fires | None = None) -> None:
        """Export the schedulers' counts: these ones', when an app's lifespan runs again."""
        if self._fired is not None:
            self.registry.unregister(self._fired)
        self._fired = _FiredCollector(scheduler, recurring)
        self.registry.register(self._fired)

    def render(self) -> bytes:
        return generate_latest(self.registry)
