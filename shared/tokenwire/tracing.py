"""Tracing, optional: OpenTelemetry when the ``tokenwire[otel]`` extra is
installed and the standard ``OTEL_*`` variables ask for it; otherwise nothing.

A request that creates a stream carries W3C ``traceparent``/``tracestate``;
the edge's span of it joins that trace, and its context is stored in the job
(``Job.trace``), so the worker's span of the job, of each generation attempt
and of each call to the model (with the GenAI semantic conventions, and the
``traceparent`` sent on to the model server) join the backend's trace — one
trace id from the ``POST`` to the upstream call. No span per token.

This module imports nothing of OpenTelemetry: ``NO_TRACING`` is what runs
unless ``from_environment`` finds tracing asked for and builds the real one
(``tokenwire.otel``). The services hold a ``Tracing`` and call it the same way
either way.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager
from typing import Literal, Protocol

log = logging.getLogger(__name__)

SpanKind = Literal["internal", "server", "client", "producer", "consumer"]
AttributeValue = str | bool | int | float | list[str]


class Span(Protocol):
    """What the services do with a span."""

    def set(self, key: str, value: AttributeValue | None) -> None:
        """Set an attribute (None: leave it unset)."""

    def fail(self, error_type: str) -> None:
        """The operation failed: status error, ``error.type``."""


class Tracing(Protocol):
    enabled: bool

    def span(self, name: str, kind: SpanKind = "internal",
             attributes: Mapping[str, AttributeValue] | None = None,
             parent: Mapping[str, str] | None = None) -> AbstractContextManager[Span]:
        """A span, current for the block. ``parent``: W3C trace headers
        (``traceparent``, ``tracestate``) to continue; else the current span."""

    def headers(self) -> dict[str, str]:
        """The current span as W3C trace headers (``{}`` without one)."""

    def log_filter(self) -> logging.Filter | None:
        """A filter that puts ``trace_id`` and ``span_id`` on log records."""

    def shutdown(self) -> None:
        """Export what is buffered (the entry point calls it on the way out)."""


class _NoSpan:
    def set(self, key: str, value: AttributeValue | None) -> None:
        pass

    def fail(self, error_type: str) -> None:
        pass


class NoTracing:
    """Tracing off: every call does nothing and costs next to nothing."""

    enabled = False
    _span = _NoSpan()

    @contextlib.contextmanager
    def span(self, name: str, kind: SpanKind = "internal",
             attributes: Mapping[str, AttributeValue] | None = None,
             parent: Mapping[str, str] | None = None) -> Iterator[Span]:
        yield self._span

    def headers(self) -> dict[str, str]:
        return {}

    def log_filter(self) -> logging.Filter | None:
        return None

    def shutdown(self) -> None:
        pass


NO_TRACING: Tracing = NoTracing()


def asked_for(environ: Mapping[str, str]) -> bool:
    """Do the standard variables ask for traces? ``OTEL_SDK_DISABLED=true``
    says no; an exporter other than ``none``, or an OTLP endpoint, says yes."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporter = environ.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporter:
        return exporter != "none"
    return bool(environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
                or environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))


def from_environment(environ: Mapping[str, str], service_name: str) -> Tracing:
    """The entry point's choice: OpenTelemetry if asked for and installed (the
    SDK reads its own ``OTEL_*`` settings: exporter, endpoint, sampler,
    resource), else ``NO_TRACING``."""
    if not asked_for(environ):
        return NO_TRACING
    try:
        from tokenwire.otel import OtelTracing  # noqa: PLC0415 - only when asked for
    except ImportError:
        log.warning("OTEL_* asks for traces, but OpenTelemetry is not installed "
                    "(pip install 'tokenwire[otel]'): tracing stays off")
        return NO_TRACING
    return OtelTracing.from_environment(environ, service_name)
