"""The gateway's Prometheus metrics (`GET /metrics`), read from the hub when scraped.

- `jobstream_gateway_events_in_total`: status events read from the status topic;
- `jobstream_gateway_frames_out_total`, `jobstream_gateway_events_out_total`: live frames
  and the events in them, sent to WebSocket clients;
- `jobstream_gateway_slow_clients_closed_total`: clients closed (1008) for falling behind;
- `jobstream_gateway_flooding_clients_closed_total`: clients closed (1008) for sending
  messages too fast;
- `jobstream_gateway_events_read_back_total`: status events read back from Kafka for
  clients resuming from a cursor the replay ring no longer (or never) held;
- `jobstream_gateway_clients`: connected clients; `jobstream_gateway_subscriptions{kind}`:
  clients following everything, job ids followed, types followed.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from gateway.hub import Hub

CONTENT_TYPE = CONTENT_TYPE_LATEST


class HubCollector:
    def __init__(self, hub: Hub) -> None:
        self._hub = hub

    def collect(self) -> Iterator[Metric]:
        hub, counts = self._hub, self._hub.counts
        for key, name, doc in (
            ("events_in", "events_in", "Status events read from the status topic."),
            ("frames_out", "frames_out", "Live frames sent to WebSocket clients."),
            ("events_out", "events_out", "Status events sent to WebSocket clients in live frames."),
            ("slow_closed", "slow_clients_closed", "Clients closed (1008) for falling too far behind."),
            ("flood_closed", "flooding_clients_closed", "Clients closed (1008) for sending too fast."),
            ("events_read_back", "events_read_back", "Status events read back from Kafka to resume clients."),
        ):
            yield CounterMetricFamily(f"jobstream_gateway_{name}", doc, value=counts[key])
        yield GaugeMetricFamily("jobstream_gateway_clients", "Connected WebSocket clients.", value=len(hub))
        subs = GaugeMetricFamily(
            "jobstream_gateway_subscriptions",
            "Clients following everything (all), job ids followed (jobs), types followed (types).",
            labels=["kind"],
        )
        for kind, n in hub.subscriptions.counts().items():
            subs.add_metric([kind], n)
        yield subs


def registry_for(hub: Hub) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(HubCollector(hub))
    return registry


def render(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)
