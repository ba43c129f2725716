"""Histograms kept as plain numbers on a hot path, turned into Prometheus families only when
scraped (a bisect and two additions per observation, no lock: one event loop writes them):
one (`PlainHistogram`), or one per label value (`LabelledHistograms`)."""

from __future__ import annotations

from bisect import bisect_left

from prometheus_client.core import HistogramMetricFamily

LATENESS_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class PlainHistogram:
    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last: over every bound (+Inf)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value

    def family(self, name: str, doc: str) -> HistogramMetricFamily:
        family = HistogramMetricFamily(name, doc)
        self.add_to(family, [])
        return family

    def add_to(self, family: HistogramMetricFamily, labels: list[str]) -> None:
        cumulative, buckets = 0, []
        for bound, n in zip((*(str(b) for b in self.bounds), "+Inf"), list(self.counts), strict=True):
            cumulative += n
            buckets.append((bound, float(cumulative)))
        family.add_metric(labels, buckets, sum_value=self.sum)


class LabelledHistograms:
    """A `PlainHistogram` per value of one label, made at its first observation: the caller
    bounds the values (e.g. job types a worker knows)."""

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.by_label: dict[str, PlainHistogram] = {}

    def observe(self, label: str, value: float) -> None:
        h = self.by_label.get(label)
        if h is None:
            h = self.by_label[label] = PlainHistogram(self.bounds)
        h.observe(value)

    def family(self, name: str, doc: str, label: str) -> HistogramMetricFamily:
        family = HistogramMetricFamily(name, doc, labels=[label])
        for value, h in list(self.by_label.items()):
            h.add_to(family, [value])
        return family
