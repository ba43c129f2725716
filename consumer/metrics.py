"""A worker's Prometheus metrics, served on `WorkerSettings.metrics_port` when it is set.

The hot path keeps plain numbers: a dict increment per job outcome and a bisect per run
time, about a microsecond. `WorkerCollector` turns them into metric families only when
Prometheus scrapes, from the server's thread (reads of dicts and lists copied whole,
which the GIL keeps consistent).

- `jobstream_worker_jobs_total{type, outcome}`: outcome is `completed`, `failed` (an
  attempt failed: retried or dead, as the status stream says), `cancelled`, `skipped`
  (completed before: a redelivery), `expired`, or `poison` (type `""`: unreadable);
- `jobstream_worker_dead_letters_total{type, reason}`: dead letters written, by reason
  (`exhausted`, `non_retryable`, `timeout`, `unknown_type`, `expired`, `poison`);
- `jobstream_worker_run_seconds{type}`: handler run time, histogram;
- `jobstream_worker_queue_wait_seconds{type}`: from when a job could run (submitted, or
  due: a delayed job's or a retry's time) to its start here, histogram;
- gauges: `running`, `concurrency`, `buffered` (records fetched, not yet started),
  `paused_partitions`, `assigned_partitions`.

The `type` label takes only the app's handler names, `unknown` (any other type: job types
come from clients, and a label value per made-up type would grow `/metrics` without bound)
and `""` (poison), so the number of series is fixed by the app, not by the traffic.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from jobstream.histogram import LabelledHistograms
from jobstream.lifecycle import Lifecycle

log = logging.getLogger("jobstream.worker")

UNKNOWN_TYPE = "unknown"
RUN_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
WAIT_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0,
)  # fmt: skip


class JobMetrics:
    """Counts per (type, outcome) and run-time histograms per type, as plain numbers.

    A type outside `known` (the handlers' names) counts as `UNKNOWN_TYPE`; `""` (poison)
    stays as it is. So the dicts hold at most (len(known) + 2) types.
    """

    def __init__(self, known: Collection[str]) -> None:
        self._known = frozenset(known) | {""}
        self.outcomes: dict[tuple[str, str], int] = {}
        self.dead: dict[tuple[str, str], int] = {}  # (type, reason) -> dead letters written
        self.runs = LabelledHistograms(RUN_BUCKETS)  # seconds, per type
        self.waits = LabelledHistograms(WAIT_BUCKETS)

    def label(self, job_type: str) -> str:
        """The `type` label of `job_type`: itself if known, else `UNKNOWN_TYPE`."""
        return job_type if job_type in self._known else UNKNOWN_TYPE

    def count(self, job_type: str, outcome: str) -> None:
        key = (self.label(job_type), outcome)
        self.outcomes[key] = self.outcomes.get(key, 0) + 1

    def dead_letter(self, job_type: str, reason: str) -> None:
        key = (self.label(job_type), reason)
        self.dead[key] = self.dead.get(key, 0) + 1

    def ran(self, job_type: str, seconds: float) -> None:
        self.runs.observe(self.label(job_type), seconds)

    def waited(self, job_type: str, seconds: float) -> None:
        """A job of `job_type` started `seconds` after it could have."""
        self.waits.observe(self.label(job_type), seconds)

    def totals(self) -> dict[str, int]:
        """Jobs per outcome, all types together (for the log line at stop)."""
        out: dict[str, int] = {}
        for (_, outcome), n in list(self.outcomes.items()):
            out[outcome] = out.get(outcome, 0) + n
        return out


@dataclass(frozen=True, slots=True)
class Gauges:
    """Where the collector reads the worker's current state."""

    running: Callable[[], int]
    concurrency: int
    buffered: Callable[[], int]
    paused: Callable[[], int]
    assigned: Callable[[], int]


class WorkerCollector:
    """A Prometheus collector over a worker's `JobMetrics` and `Gauges`."""

    def __init__(self, metrics: JobMetrics, gauges: Gauges, worker_id: str) -> None:
        self._metrics = metrics
        self._gauges = gauges
        self._worker = worker_id

    def collect(self) -> Iterator[Metric]:
        jobs = CounterMetricFamily(
            "jobstream_worker_jobs",
            "Jobs that ended on this worker, by type and outcome.",
            labels=["type", "outcome"],
        )
        for (job_type, outcome), n in list(self._metrics.outcomes.items()):
            jobs.add_metric([job_type, outcome], n)
        yield jobs
        dead = CounterMetricFamily(
            "jobstream_worker_dead_letters",
            "Dead letters this worker wrote, by job type and reason.",
            labels=["type", "reason"],
        )
        for (job_type, reason), n in list(self._metrics.dead.items()):
            dead.add_metric([job_type, reason], n)
        yield dead
        m = self._metrics
        yield m.runs.family("jobstream_worker_run_seconds", "Handler run time, by job type.", "type")
        yield m.waits.family(
            "jobstream_worker_queue_wait_seconds",
            "From when a job could run (submitted, or due) to its start, by job type.",
            "type",
        )
        g = self._gauges
        for name, doc, value in (
            ("running", "Jobs running now.", g.running()),
            ("concurrency", "Jobs this worker runs at most at once.", g.concurrency),
            ("buffered", "Records fetched and waiting to start.", g.buffered()),
            ("paused_partitions", "Partitions paused because their buffer is full.", g.paused()),
            ("assigned_partitions", "Partitions assigned to this worker.", g.assigned()),
        ):
            family = GaugeMetricFamily(f"jobstream_worker_{name}", doc, labels=["worker"])
            family.add_metric([self._worker], value)
            yield family


class MetricsServer(Lifecycle):
    """`GET /metrics` on a port of its own, served from a thread (prometheus_client's); a
    `jobstream.lifecycle.Service` (`close()` returns once the serving thread has stopped)."""

    def __init__(self, collector: WorkerCollector, host: str, port: int) -> None:
        super().__init__()
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(collector)
        self._host, self._port = host, port
        self._server: Any = None
        self.port: int | None = None

    async def _startup(self) -> None:
        self._server, _ = start_http_server(self._port, addr=self._host, registry=self.registry)
        self.port = self._server.server_address[1]
        log.info("metrics on http://%s:%d/metrics", self._host, self.port)

    async def _shutdown(self) -> None:
        if self._server is not None:
            server, self._server = self._server, None
            await asyncio.to_thread(server.shutdown)  # waits for the serving loop to end
            server.server_close()
