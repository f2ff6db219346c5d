"""A histogram for the delivery path's per-frame observations: plain counts, no lock.

``prometheus_client``'s ``Histogram.observe`` takes a lock and scans its
buckets: ~1.6 µs a call, most of what observing each frame's delivery lag
cost (``bench/meter_cost.py``). Every observation of an edge happens on its
event loop's thread, and so does the scrape (``/metrics`` renders in a
handler), so the counts need no lock: ``observe`` is one ``bisect`` and two
additions (~0.2 µs). Exposed as an ordinary Prometheus histogram, with
a fixed set of label values made at start (every series exists from the
first scrape).
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable, Iterator, Sequence

from prometheus_client import CollectorRegistry
from prometheus_client.core import HistogramMetricFamily, Metric
from prometheus_client.registry import Collector


class HistogramCounts:
    """One labelled series: ``observe(value)`` from the event loop's thread only."""

    __slots__ = ("_bounds", "_counts", "sum")

    def __init__(self, bounds: Sequence[float]) -> None:
        self._bounds = tuple(bounds)
        self._counts = [0] * (len(bounds) + 1)  # the last one: above every bound (+Inf)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self._counts[bisect_left(self._bounds, value)] += 1  # le: value <= bound
        self.sum += value

    def cumulative(self) -> list[tuple[str, float]]:
        buckets, total = [], 0
        for bound, count in zip((*self._bounds, float("inf")), self._counts, strict=True):
            total += count
            buckets.append((_le(bound), float(total)))
        return buckets


class HotHistogram(Collector):
    """A histogram with one label, its values fixed (see the module docstring)."""

    def __init__(self, name: str, documentation: str, label: str, values: Iterable[str], *,
                 buckets: Sequence[float], registry: CollectorRegistry) -> None:
        self._name, self._documentation, self._label = name, documentation, label
        self._series = {value: HistogramCounts(buckets) for value in values}
        registry.register(self)

    def labels(self, value: str) -> HistogramCounts:
        """The series for ``value`` (one of the values given): look it up once, observe often."""
        return self._series[value]

    def collect(self) -> Iterator[Metric]:
        family = HistogramMetricFamily(self._name, self._documentation, labels=[self._label])
        for value, series in self._series.items():
            family.add_metric([value], series.cumulative(), series.sum)
        yield family


def _le(bound: float) -> str:
    """A bucket's ``le`` as Prometheus writes it (``+Inf``, ``0.5``, ``1.0``)."""
    return "+Inf" if bound == float("inf") else repr(float(bound))
