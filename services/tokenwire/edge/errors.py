"""Domain errors → HTTP, in one table; every error body is ``{"error": {"code", "message"}}``.

Transient conditions — Redis unreachable, the edge draining or starting, Redis
out of memory, a limit reached, a stream being rebuilt (``TRANSIENT``: the
503s and 429s) — are answered differently to an SSE request (``Accept:
text/event-stream``, or the events route): a browser's ``EventSource`` gives
up for good on any status but 200, so they get a 200 event stream holding only
a ``reconnect`` notice whose ``retry:`` says what ``Retry-After`` would have
said, and the browser comes back by itself. JSON clients keep the status and
``Retry-After``. Final answers stay final for everyone, because retrying the
same request cannot change them: 400 (malformed), 401 (credentials), 404 (no
such stream), 410 (its record expired), 204 (the client has everything), and
the other 4xx.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

from tokenwire.edge import keys as appkeys
from tokenwire.edge.follower import StreamComplete
from tokenwire.edge.instrumentation import count_refusal
from tokenwire.edge.sse import transient_answer
from tokenwire.errors import (
    Conflict,
    ConversationNotFound,
    Forbidden,
    InvalidValue,
    KeyNotFound,
    MalformedRequest,
    NotFound,
    OverLimit,
    PayloadTooLarge,
    RequestTimeout,
    StreamGone,
    StreamNotFound,
    TokenwireError,
    Unauthorized,
    Unavailable,
    UnsupportedMediaType,
)
from tokenwire.redis_client import TRANSPORT_ERRORS

log = logging.getLogger(__name__)

HTTP_STATUS: dict[type[TokenwireError], int] = {
    MalformedRequest: 400,
    Unauthorized: 401,
    Forbidden: 403,
    StreamNotFound: 404,
    KeyNotFound: 404,
    ConversationNotFound: 404,
    NotFound: 404,
    RequestTimeout: 408,
    Conflict: 409,
    StreamGone: 410,
    PayloadTooLarge: 413,
    UnsupportedMediaType: 415,
    InvalidValue: 422,
    OverLimit: 429,
    Unavailable: 503,
}

#: WebSocket close codes the edge uses; after any but 1000, resume from your cursor.
WS_NORMAL = 1000  # the terminal event was sent
WS_TRY_AGAIN = 1011  # Redis failed mid-stream
WS_SERVICE_RESTART = 1012  # the edge is draining
WS_SLOW_CONSUMER = 4408  # the client fell too far behind
WS_UNAUTHORIZED = 4401  # its token expired: reconnect with a fresh one (no resume of commands)

_AIOHTTP_CODES = {404: "not_found", 405: "method_not_allowed", 413: "too_large"}

#: Routes that always answer with an event stream (``routes.py`` names them).
SSE_ROUTES = frozenset({"stream-events"})
TRANSIENT: tuple[type[TokenwireError], ...] = (Unavailable, OverLimit)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def error_response(
    status: int, code: str, message: str, *, retry_after: float | None = None,
    details: list[dict[str, object]] | None = None,
) -> web.Response:
    body: dict[str, object] = {"code": code, "message": message}
    if details:
        body["details"] = details
    response = web.json_response({"error": body}, status=status)
    if retry_after is not None:
        response.headers["Retry-After"] = str(max(1, round(retry_after)))
    return response


def wants_event_stream(request: web.Request) -> bool:
    route = request.match_info.route.name
    return route in SSE_ROUTES or "text/event-stream" in request.headers.get("Accept", "")


def status_of(exc: TokenwireError) -> int:
    """The HTTP status of a domain error (the one table above)."""
    return next((s for t, s in HTTP_STATUS.items() if isinstance(exc, t)), 500)


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except StreamComplete:
        return web.Response(status=204)
    except TokenwireError as exc:
        count_refusal(request.app[appkeys.METRICS], exc)
        if isinstance(exc, TRANSIENT) and wants_event_stream(request):
            return transient_answer(exc.code, exc.message, exc.retry_after)
        status = status_of(exc)
        details = exc.details if isinstance(exc, InvalidValue) else None
        response = error_response(status, exc.code, exc.message, retry_after=exc.retry_after,
                                  details=details)
        if status == 401:
            response.headers["WWW-Authenticate"] = 'Bearer realm="tokenwire"'
        return response
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = _AIOHTTP_CODES.get(exc.status, "http_error")
        response = error_response(exc.status, code, exc.reason)
        if "Allow" in exc.headers:  # a 405 must say which methods are (RFC 9110)
            response.headers["Allow"] = exc.headers["Allow"]
        return response
    except TRANSPORT_ERRORS as exc:
        log.warning("redis unavailable: %s", exc)
        request.app[appkeys.METRICS].redis_errors.inc()
        message = "the message broker is unreachable"
        if wants_event_stream(request):
            return transient_answer("redis_unavailable", message, 1)
        return error_response(503, "redis_unavailable", message, retry_after=1)
