"""One connection's share of the delivery-path metrics, observed where frames are written.

A ``DeliveryMeter`` is made once per SSE or WebSocket connection: the labelled
children (events sent, delivery lag, time to first token) are looked up then,
never per event. Each frame the transport writes costs one counter ``inc``
and — while the observations are on (``TOKENWIRE_DELIVERY_METRICS``) and the
event carries its append time — one read of Redis' clock and one histogram
``observe``; a batch written in one ``send`` reads the clock once. Nothing is
allocated per event.

A merged token frame (``outbox``: tokens folded together for a client that
fell behind) is one frame: its delivery lag is observed once, from the
append time of its oldest token — the longest any of its text waited.

Time to first token (stream created → its first token frame written) is
observed once per connection, for a client that followed the stream from its
start: it asked with no cursor and no ``?snapshot=1``, and connected before
the stream's first token was appended (a late joiner's "first token" is a
replay, not a wait).
"""

from __future__ import annotations

from prometheus_client import Counter

from tokenwire.edge.hot_histogram import HistogramCounts
from tokenwire.edge.metrics import EdgeMetrics
from tokenwire.events import Event
from tokenwire.redis_clock import RedisClock


class DeliveryMeter:
    """See the module docstring. ``clock`` None: the per-write observations
    are off (only events sent is counted)."""

    __slots__ = ("_clock", "_joined_at_us", "_lag", "_metrics", "_sent", "_ttft",
                 "_ttft_from_us")

    def __init__(self, metrics: EdgeMetrics, transport: str, clock: RedisClock | None, *,
                 created_at_ms: int | None = None) -> None:
        """``created_at_ms``: the stream's creation (Redis' clock) when this client
        follows it from the start (no cursor, no snapshot); None otherwise."""
        self._metrics = metrics
        self._sent: Counter = metrics.events_sent_to(transport)
        self._clock = clock
        self._lag: HistogramCounts = metrics.delivery_lag_for(transport)
        self._ttft: HistogramCounts = metrics.client_ttft_for(transport)
        self._ttft_from_us = (created_at_ms * 1000 if clock is not None and created_at_ms
                              else None)
        self._joined_at_us = clock.now_us() if clock is not None else 0.0

    def wrote(self, event: Event) -> None:
        """One frame written to the client's socket."""
        self._sent.inc()
        clock = self._clock
        if clock is not None and event.appended_at_us is not None:
            self._observe(event, clock.now_us())

    def wrote_all(self, events: list[Event]) -> None:
        """Frames written in one ``send``: the clock read once."""
        self._sent.inc(len(events))
        clock = self._clock
        if clock is None:
            return
        now_us = clock.now_us()
        for event in events:
            if event.appended_at_us is not None:
                self._observe(event, now_us)

    def _observe(self, event: Event, now_us: float) -> None:
        appended_at_us = event.appended_at_us
        assert appended_at_us is not None
        self._lag.observe((now_us - appended_at_us) / 1e6)
        if self._ttft_from_us is not None and event.type == "token":
            if appended_at_us >= self._joined_at_us:  # it waited for this token
                self._ttft.observe((now_us - self._ttft_from_us) / 1e6)
            self._ttft_from_us = None  # once per connection

    def lagged(self) -> None:
        """This client's live backlog overflowed: it re-reads the stream."""
        self._metrics.subscriber_lagged()

    def resumed(self, outcome: str) -> None:
        self._metrics.resumed(outcome)


def resume_outcome(emitted: list[Event], settled: bool) -> str | None:
    """How a resume turned out, from what a read emitted for it: ``snapshot``
    (history trimmed: the client gets the early text as one event), ``reset``
    (another epoch, a cursor ahead), ``exact`` (the events after the cursor,
    or none yet); None while undecided (the read emitted nothing and another
    read follows: ``settled`` False)."""
    for event in emitted:
        if event.type == "reset":
            return "snapshot" if event.payload().get("reason") == "history_trimmed" else "reset"
        if event.type == "snapshot":
            return "snapshot"
    return "exact" if emitted or settled else None
