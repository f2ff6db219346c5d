"""The lock-free delivery histogram exposes what prometheus_client's own would."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Histogram, generate_latest

from tokenwire.edge.hot_histogram import HotHistogram

BUCKETS = (0.001, 0.01, 0.5, 1, 10)
#: On a bound (inclusive: ``le``), between bounds, below the first, above the last.
VALUES = (0.001, 0.0005, 0.0099, 0.5, 0.75, 1, 10, 11, 0.0, 250.0)


def lines(registry: CollectorRegistry) -> list[str]:
    return [line for line in generate_latest(registry).decode().splitlines()
            if not line.startswith("#") and "_created" not in line]


def test_its_text_equals_a_prometheus_histogram_of_the_same_values() -> None:
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    hot = HotHistogram("lag_seconds", "lag", "transport", ("sse", "ws"), buckets=BUCKETS,
                       registry=ours)
    reference = Histogram("lag_seconds", "lag", ["transport"], buckets=BUCKETS, registry=theirs)
    reference.labels("ws")  # a series that exists with nothing observed
    for value in VALUES:
        hot.labels("sse").observe(value)
        reference.labels("sse").observe(value)
    assert sorted(lines(ours)) == sorted(lines(theirs))
