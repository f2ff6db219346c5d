"""What the edge measures of every request, and how it joins a trace.

- ``metrics_middleware`` counts each answer by route template, method and
  status (``tokenwire_edge_requests_total``) — outside the error middleware,
  so it sees the statuses clients see; an event stream counts when it ends, a
  client that left first as 499.
- ``tracing_middleware`` (only when tracing is on) makes the request a server
  span, continuing the caller's W3C ``traceparent``; a stream created inside
  it stores that span's context in its job (``submit.new_job``), so the
  worker's spans join the same trace.
- ``count_refusal``: credentials refused (401/403), by error code; the error
  middleware and the OpenAI facades' error handler both report here.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.typedefs import Middleware

from tokenwire.edge.metrics import EdgeMetrics
from tokenwire.errors import Forbidden, TokenwireError, Unauthorized
from tokenwire.tracing import Tracing

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
#: What a client that left before its answer counts as (nginx's convention).
CLIENT_CLOSED = 499
_TRACE_HEADERS = ("traceparent", "tracestate")


def route_of(request: web.Request) -> str:
    """The matched route's template (``/v1/streams/{stream_id}/events``), never
    the path itself: a bounded label and span name."""
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "unmatched"


def metrics_middleware(metrics: EdgeMetrics) -> Middleware:
    @web.middleware
    async def count(request: web.Request, handler: Handler) -> web.StreamResponse:
        status = 500
        try:
            response = await handler(request)
            status = response.status
            return response
        except web.HTTPException as exc:
            status = exc.status
            raise
        except asyncio.CancelledError:
            status = CLIENT_CLOSED
            raise
        finally:
            metrics.answered(route_of(request), request.method, status)

    return count


def tracing_middleware(tracing: Tracing) -> Middleware:
    @web.middleware
    async def trace(request: web.Request, handler: Handler) -> web.StreamResponse:
        route = route_of(request)
        parent = {name: request.headers[name] for name in _TRACE_HEADERS
                  if name in request.headers}
        attributes = {"http.request.method": request.method, "http.route": route,
                      "url.scheme": request.scheme, "url.path": request.path}
        with tracing.span(f"{request.method} {route}", "server", attributes,
                          parent=parent) as span:
            response = await handler(request)
            span.set("http.response.status_code", response.status)
            if response.status >= 500:
                span.fail(str(response.status))
            return response

    return trace


def count_refusal(metrics: EdgeMetrics, exc: TokenwireError) -> None:
    if isinstance(exc, Unauthorized | Forbidden):
        metrics.refused(exc.code)
