"""Prometheus metrics with a per-app registry (no module-global collectors)."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest


class EdgeMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.streams_created = Counter(
            "tokenwire_streams_created_total", "Streams created via POST /v1/streams",
            registry=self.registry,
        )
        self.connections = Gauge(
            "tokenwire_edge_connections", "Open delivery connections", ["transport"],
            registry=self.registry,
        )
        self.events_sent = Counter(
            "tokenwire_edge_events_sent_total", "Events written to clients", ["transport"],
            registry=self.registry,
        )
        self.frames_merged = Counter(
            "tokenwire_edge_frames_merged_total",
            "token events folded into an earlier frame for clients that fell behind",
            registry=self.registry,
        )
        self.slow_consumers = Counter(
            "tokenwire_edge_slow_consumers_total", "clients disconnected for falling behind",
            registry=self.registry,
        )

    def events_sent_to(self, transport: str) -> Counter:
        """The labelled child, looked up once per connection rather than per event."""
        return self.events_sent.labels(transport)

    def watch_hub(self, channels: Callable[[], float], subscribers: Callable[[], float],
                  messages: Callable[[], float]) -> None:
        for name, doc, fn in (
            ("tokenwire_hub_channels", "Live streams this edge subscribes to", channels),
            ("tokenwire_hub_subscribers", "Local subscribers across all streams", subscribers),
            ("tokenwire_hub_messages", "Live messages received from Redis", messages),
        ):
            Gauge(name, doc, registry=self.registry).set_function(fn)

    def render(self) -> bytes:
        return generate_latest(self.registry)
