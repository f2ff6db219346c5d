"""The worker's Prometheus metrics, in a registry of its own (no module-global
collectors): what a generation costs and how it feels upstream.

Labels are bounded: ``model`` is a model this deployment serves
(``TOKENWIRE_MODELS``, or the default model) or ``other`` — a client may name
any model string, so the label never takes it as it is; error codes and
outcomes are Tokenwire's own small sets. No stream, tenant or key id is ever a
label (per-key usage is the console's, read from Redis). Histogram buckets fit
each quantity (README "Observing Tokenwire").
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

#: Enqueue → first attempt: milliseconds when workers keep up, minutes when not.
QUEUE_WAIT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120,
                      300)
#: Upstream call → first text: hosted models take 0.2 to 2 s, a cold one far longer.
TTFT_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1, 1.5, 2, 3, 5, 10, 20, 60)
#: Between two text deltas of one call: 10 to 50 ms is a model streaming well.
GAP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.035, 0.05, 0.075, 0.1, 0.2, 0.5, 1, 2, 5,
               10)
#: One attempt, start to end: seconds to the upstream deadline (600 s by default).
DURATION_BUCKETS = (0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600)
#: Cancel learnt → terminal ``done`` written: the upstream call is closed at once.
CANCEL_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)

OTHER_MODEL = "other"


class WorkerMetrics:
    def __init__(self, served_models: Iterable[str]) -> None:
        self._models = frozenset(served_models)
        self.registry = registry = CollectorRegistry()
        self.queue_wait = Histogram(
            "tokenwire_worker_queue_wait_seconds",
            "Time from enqueue to a job's first attempt (both on Redis' clock)",
            buckets=QUEUE_WAIT_BUCKETS, registry=registry)
        self.ttft = Histogram(
            "tokenwire_worker_ttft_seconds",
            "Time from an upstream call to its first text (per call, retries included)",
            ["model"], buckets=TTFT_BUCKETS, registry=registry)
        self.inter_token = Histogram(
            "tokenwire_worker_inter_token_seconds",
            "Time between two text deltas of one upstream call",
            ["model"], buckets=GAP_BUCKETS, registry=registry)
        self.generation = Histogram(
            "tokenwire_worker_generation_seconds",
            "Duration of a generation attempt, by how it ended",
            ["outcome"], buckets=DURATION_BUCKETS, registry=registry)
        self.tokens = Counter(
            "tokenwire_worker_tokens", "Model tokens written to streams", ["model"],
            registry=registry)
        self.attempts = Counter(
            "tokenwire_worker_attempts",
            "Generation attempts by outcome: done, cancelled, error, restart (a new attempt "
            "follows), lost (Redis lost the stream), fenced (another worker took it), ended "
            "(the stream ended meanwhile)",
            ["outcome"], registry=registry)
        self.upstream_errors = Counter(
            "tokenwire_worker_upstream_errors",
            "Failed upstream calls by error code (upstream_429, upstream_timeout, ...)",
            ["code"], registry=registry)
        self.cancel_latency = Histogram(
            "tokenwire_worker_cancel_latency_seconds",
            "From the worker learning of a cancel to the terminal event written "
            "(done.cancel_latency_ms)", buckets=CANCEL_BUCKETS, registry=registry)
        self.unwatched_tokens = Counter(
            "tokenwire_worker_unwatched_tokens",
            "Tokens written while no edge reported a viewer (streams with an on_disconnect "
            "policy only)", registry=registry)
        self.abandoned = Counter(
            "tokenwire_worker_abandoned",
            "Generations cancelled by their on_disconnect policy (nobody watched)",
            registry=registry)
        self.redis_retries = Counter(
            "tokenwire_worker_redis_retries",
            "Redis calls of a held job retried after a transport error", ["operation"],
            registry=registry)
        self.dead_letters = Counter(
            "tokenwire_worker_dead_letters",
            "Jobs put on the dead-letter stream, by reason", ["reason"], registry=registry)

    def model_label(self, model: str) -> str:
        return model if model in self._models else OTHER_MODEL

    def watch(self, running: Callable[[], float], capacity: float) -> None:
        """Gauges read at scrape time from the worker's own state."""
        Gauge("tokenwire_worker_running", "Generations running in this worker",
              registry=self.registry).set_function(running)
        Gauge("tokenwire_worker_capacity", "Generations this worker runs at once",
              registry=self.registry).set(capacity)

    def redis_retried(self, operation: str) -> None:
        self.redis_retries.labels(operation).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
