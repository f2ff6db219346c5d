"""The edge's Prometheus metrics, in a registry of its own (no module-global
collectors).

Labels are bounded: ``route`` is the matched route's template (or
``unmatched``), ``method`` a standard method (or ``other``), ``status`` an
HTTP status, ``reason`` one of Tokenwire's error codes, ``transport`` and
``protocol`` small fixed sets, ``outcome`` a fixed set. Never a stream id,
and no tenant or API key id: those are created at runtime, unbounded by
configuration; per-key usage is the console's (``/v1/admin/usage``), read
from Redis.

The delivery path's metrics (delivery lag, the client's time to first token,
resumes by outcome, hub lag events) are defined here with their buckets and
observed by the delivery code: one labelled child looked up once per
connection (``*_for`` methods, held by ``delivery_meter.DeliveryMeter``) and
one ``observe``/``inc`` per frame written.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Iterator
from functools import partial

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from tokenwire.edge.hot_histogram import HistogramCounts, HotHistogram

#: Append (Redis' clock) → written to the client's socket: a few ms on a
#: healthy edge, seconds for a client catching up.
DELIVERY_LAG_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1,
                        2.5, 5, 10)
#: Stream created → its first token frame written to a client: queue wait,
#: the model's first token and delivery, together.
CLIENT_TTFT_BUCKETS = (0.05, 0.1, 0.25, 0.5, 0.75, 1, 1.5, 2, 3, 5, 10, 20, 30, 60)
#: Outcomes of a resume (a request with a cursor): the events after it exactly,
#: a reset (new epoch, cursor ahead), a snapshot (history trimmed: a reset and
#: the early text as one event), 204 (nothing after it), 410 (the record expired).
RESUME_OUTCOMES = ("exact", "reset", "snapshot", "complete", "gone")
TRANSPORTS = ("sse", "ws")
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class EdgeMetrics:
    def __init__(self) -> None:
        self.registry = registry = CollectorRegistry()
        self.streams_created = Counter(
            "tokenwire_streams_created_total", "Streams created via POST /v1/streams",
            registry=registry,
        )
        self.connections = Gauge(
            "tokenwire_edge_connections", "Open delivery connections", ["transport"],
            registry=registry,
        )
        self.events_sent = Counter(
            "tokenwire_edge_events_sent_total", "Events written to clients", ["transport"],
            registry=registry,
        )
        self.frames_merged = Counter(
            "tokenwire_edge_frames_merged_total",
            "token events folded into an earlier frame for clients that fell behind",
            registry=registry,
        )
        self.slow_consumers = Counter(
            "tokenwire_edge_slow_consumers_total", "clients disconnected for falling behind",
            registry=registry,
        )
        self.requests = Counter(
            "tokenwire_edge_requests", "Requests answered, by route template, method and "
            "status (an event stream counts when it ends)", ["route", "method", "status"],
            registry=registry)
        self.auth_refusals = Counter(
            "tokenwire_edge_auth_refusals", "Requests refused for their credentials (401/403), "
            "by error code", ["reason"], registry=registry)
        self.redis_errors = Counter(
            "tokenwire_edge_redis_errors", "Requests answered 503 because Redis did not answer",
            registry=registry)
        # --- the delivery path (observed by the delivery code) --------------------------
        # Observed per frame: lock-free counts (``hot_histogram``), not ``Histogram``.
        self.delivery_lag = HotHistogram(
            "tokenwire_edge_delivery_lag_seconds",
            "Event appended (Redis' clock) → written to the client's socket; once per frame "
            "(a merged frame once, from its oldest token's append time)",
            "transport", TRANSPORTS, buckets=DELIVERY_LAG_BUCKETS, registry=registry)
        self.client_ttft = HotHistogram(
            "tokenwire_edge_ttft_seconds",
            "Stream created → its first token frame written to a client that followed it "
            "from the start", "transport", TRANSPORTS, buckets=CLIENT_TTFT_BUCKETS,
            registry=registry)
        self.resumes = Counter(
            "tokenwire_edge_resumes", "Requests with a cursor, by outcome: exact, reset "
            "(another epoch, cursor ahead), snapshot (history trimmed), complete (204), "
            "gone (410)", ["outcome"], registry=registry)
        # Subscribers told they may have missed live events: counted here when
        # their own backlog overflows (``subscriber_lagged``), by the hub when
        # its live source signals a gap (``watch_hub``); one counter at scrape.
        self._lagged_subscribers = 0
        self._hub_gap_signals: Callable[[], float] = lambda: 0.0
        registry.register(_HubLagEvents(self))
        for outcome in RESUME_OUTCOMES:
            self.resumes.labels(outcome)
        self._read_queue: Callable[[], Awaitable[dict[str, float]]] | None = None
        self._queue_gauges: dict[str, Gauge] = {}

    def events_sent_to(self, transport: str) -> Counter:
        """The labelled child, looked up once per connection rather than per event."""
        return self.events_sent.labels(transport)

    def delivery_lag_for(self, transport: str) -> HistogramCounts:
        """Looked up once per connection; ``observe(seconds)`` per event."""
        return self.delivery_lag.labels(transport)

    def client_ttft_for(self, transport: str) -> HistogramCounts:
        return self.client_ttft.labels(transport)

    @property
    def hub_lag_events(self) -> float:
        return self._lagged_subscribers + self._hub_gap_signals()

    def subscriber_lagged(self) -> None:
        """One subscriber's live backlog overflowed (a plain int: the hot path)."""
        self._lagged_subscribers += 1

    def resumed(self, outcome: str) -> None:
        self.resumes.labels(outcome).inc()

    def answered(self, route: str, method: str, status: int) -> None:
        method = method if method in _METHODS else "other"
        self.requests.labels(route, method, str(status)).inc()

    def refused(self, reason: str) -> None:
        self.auth_refusals.labels(reason).inc()

    def watch_hub(self, channels: Callable[[], float], subscribers: Callable[[], float],
                  messages: Callable[[], float], gap_signals: Callable[[], float]) -> None:
        """``gap_signals``: subscribers the hub told they may have missed events
        (its live source lost messages, or one was malformed)."""
        self._hub_gap_signals = gap_signals
        for name, doc, fn in (
            ("tokenwire_hub_channels", "Live streams this edge subscribes to", channels),
            ("tokenwire_hub_subscribers", "Local subscribers across all streams", subscribers),
            ("tokenwire_hub_messages", "Live messages received from Redis", messages),
        ):
            Gauge(name, doc, registry=self.registry).set_function(fn)

    def watch_viewers(self, by_protocol: Callable[[str], float], protocols: Iterable[str],
                      streams: Callable[[], float]) -> None:
        """The census's counts (handler level: every protocol, facades included)."""
        viewers = Gauge("tokenwire_edge_viewers", "Clients this edge delivers a stream to, by "
                        "protocol", ["protocol"], registry=self.registry)
        for protocol in protocols:
            viewers.labels(protocol).set_function(partial(by_protocol, protocol))
        Gauge("tokenwire_edge_streams_watched", "Streams with at least one client on this edge",
              registry=self.registry).set_function(streams)

    def watch_redis(self, reachable: Callable[[], float]) -> None:
        Gauge("tokenwire_edge_redis_up", "1 while this edge reaches Redis",
              registry=self.registry).set_function(reachable)

    def watch_queue(self, read: Callable[[], Awaitable[dict[str, float]]]) -> None:
        """Queue gauges, read from Redis when scraped (``refresh``)."""
        self._read_queue = read
        self._queue_gauges = {
            name: Gauge(f"tokenwire_{name}", doc, registry=self.registry)
            for name, doc in (
                ("queue_jobs", "Jobs on the queue not yet acknowledged (waiting or running)"),
                ("queue_waiting", "Jobs no worker has taken yet"),
                ("queue_running", "Jobs a worker holds (delivered, not yet acknowledged)"),
                ("dead_letters", "Jobs on the dead-letter stream"),
            )
        }

    async def refresh(self) -> None:
        """Read what is read from Redis at scrape time (raises its errors)."""
        if self._read_queue is None:
            return
        for name, value in (await self._read_queue()).items():
            self._queue_gauges[name].set(value)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _HubLagEvents(Collector):
    """``tokenwire_hub_lag_events_total``: overflowed subscribers plus the hub's gap signals."""

    def __init__(self, metrics: EdgeMetrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[Metric]:
        yield CounterMetricFamily(
            "tokenwire_hub_lag_events", "Subscribers told they may have missed live events: "
            "their own backlog overflowed (counted once until they caught up), or the hub's "
            "live source lost messages (its connection dropped, a slot moved: each subscriber "
            "of the channels, per signal) or one was malformed; they re-read Redis",
            value=self._metrics.hub_lag_events)
