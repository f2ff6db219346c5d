"""``Tracing`` on OpenTelemetry (the ``tokenwire[otel]`` extra). Imported only
when tracing is asked for (``tracing.from_environment``), or by a test.

The tracer provider is this object's own (not the process-global one), so a
test can give it an in-memory exporter; W3C trace context is the propagation
format (``traceparent``, ``tracestate``), whatever ``OTEL_PROPAGATORS`` says,
because that is what the job carries across the queue.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SpanExporter,
)
from opentelemetry.trace import Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from tokenwire.tracing import AttributeValue, Span, SpanKind

log = logging.getLogger(__name__)

_KINDS = {
    "internal": trace.SpanKind.INTERNAL, "server": trace.SpanKind.SERVER,
    "client": trace.SpanKind.CLIENT, "producer": trace.SpanKind.PRODUCER,
    "consumer": trace.SpanKind.CONSUMER,
}
_PROPAGATOR = TraceContextTextMapPropagator()


class _OtelSpan:
    __slots__ = ("_span",)

    def __init__(self, span: trace.Span) -> None:
        self._span = span

    def set(self, key: str, value: AttributeValue | None) -> None:
        if value is not None:
            self._span.set_attribute(key, value)

    def fail(self, error_type: str) -> None:
        self._span.set_attribute("error.type", error_type)
        self._span.set_status(Status(StatusCode.ERROR, error_type))


class _TraceIds(logging.Filter):
    """Puts the current span's ids on each record (JSON logs show them)."""

    def filter(self, record: logging.LogRecord) -> bool:
        context = trace.get_current_span().get_span_context()
        if context.is_valid:
            record.trace_id = trace.format_trace_id(context.trace_id)
            record.span_id = trace.format_span_id(context.span_id)
        return True


class OtelTracing:
    enabled = True

    def __init__(self, provider: TracerProvider) -> None:
        self._provider = provider
        self._tracer = provider.get_tracer("tokenwire")

    @classmethod
    def from_environment(cls, environ: Mapping[str, str], service_name: str) -> OtelTracing:
        """The SDK's own reading of ``OTEL_*`` (service name and resource
        attributes, sampler, OTLP endpoint, headers, timeout); the exporter is
        ``otlp`` (HTTP/protobuf) or ``console``."""
        resource = Resource.create({"service.name": service_name})  # OTEL_SERVICE_NAME wins
        provider = TracerProvider(resource=resource)
        names = environ.get("OTEL_TRACES_EXPORTER", "otlp").lower().split(",")
        for name in (name.strip() for name in names):
            exporter: SpanExporter
            if name == "console":
                exporter = ConsoleSpanExporter()
            elif name == "otlp":
                from opentelemetry.exporter.otlp.proto.http.trace_exporter import (  # noqa: PLC0415
                    OTLPSpanExporter,
                )

                exporter = OTLPSpanExporter()
            else:
                log.warning("unknown OTEL_TRACES_EXPORTER %r ignored (otlp, console)", name)
                continue
            provider.add_span_processor(BatchSpanProcessor(exporter))
        log.info("tracing on", extra={"service": service_name})
        return cls(provider)

    @contextmanager
    def span(self, name: str, kind: SpanKind = "internal",
             attributes: Mapping[str, AttributeValue] | None = None,
             parent: Mapping[str, str] | None = None) -> Iterator[Span]:
        context = _PROPAGATOR.extract(dict(parent)) if parent is not None else None
        with self._tracer.start_as_current_span(name, context=context, kind=_KINDS[kind],
                                                attributes=attributes) as span:
            yield _OtelSpan(span)

    def headers(self) -> dict[str, str]:
        carrier: dict[str, str] = {}
        _PROPAGATOR.inject(carrier)
        return carrier

    def log_filter(self) -> logging.Filter | None:
        return _TraceIds()

    def shutdown(self) -> None:
        """Export what is buffered (the entry point calls it on the way out)."""
        self._provider.shutdown()
