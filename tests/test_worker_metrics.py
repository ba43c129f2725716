"""`consumer.metrics`: the worker's histograms as Prometheus reads them (pure)."""

from __future__ import annotations

from consumer.metrics import Gauges, JobMetrics, WorkerCollector


def _buckets(metrics: JobMetrics, name: str) -> dict[tuple[str, str], float]:
    gauges = Gauges(lambda: 0, 1, lambda: 0, lambda: 0, lambda: 0)
    family = next(f for f in WorkerCollector(metrics, gauges, "w").collect() if f.name == name)
    return {(s.labels["type"], s.labels["le"]): s.value for s in family.samples if s.name.endswith("_bucket")}


def test_queue_wait_is_a_cumulative_histogram_per_known_type() -> None:
    m = JobMetrics({"a"})
    for seconds in (0.0005, 0.003, 0.003, 2.0):
        m.waited("a", seconds)
    m.waited("made.up", 0.02)
    b = _buckets(m, "jobstream_worker_queue_wait_seconds")
    assert (b[("a", "0.001")], b[("a", "0.005")], b[("a", "1.0")], b[("a", "2.5")]) == (1, 3, 3, 4)
    assert b[("a", "+Inf")] == 4
    assert b[("unknown", "0.025")] == 1 and ("made.up", "+Inf") not in b
