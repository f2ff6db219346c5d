"""Server-Sent Events framed so that every common client parses them with no
special handling: browsers' ``EventSource``, httpx-sse, sseclient-py and the
``openai`` SDK's decoder (which ``json.loads`` every message it yields).

- Every block the edge sends ends with a blank line only if it carries
  ``data``: a block without data still *dispatches* in httpx-sse and the
  openai decoder (an empty message, and ``json.loads("")`` fails).
- ``retry:`` travels inside the first event's block (``DirectSse.head``), or
  inside the ``reconnect`` notice that ends a response early; never alone.
- The heartbeat is a comment line with no blank line after it (``: ping``):
  every spec-compliant parser ignores a comment and dispatches nothing without
  a blank line, yet bytes flow, so proxies and browsers keep the connection.
  (A comment *followed* by a blank line is an empty message to httpx-sse and
  the openai decoder once an ``id`` was seen, because their last-event-id
  buffer is not empty.)
- A response that ends without its terminal event ends with a ``reconnect``
  notice: ``retry:``, ``event: reconnect`` and JSON ``data`` with a
  ``reason``, but no ``id``, so the client's cursor stays at what it got.

One ``keepalive.Heartbeat`` task pings every SSE connection of the edge,
instead of a ping task per response.
"""

from __future__ import annotations

import random

from aiohttp import web
from aiohttp.abc import AbstractStreamWriter

from tokenwire.edge.keepalive import abort_unacknowledged_after
from tokenwire.events import dumps

PING = b": ping\r\n"


def retry_field(retry_ms: int) -> bytes:
    return b"retry: %d\r\n" % retry_ms


def reconnect_notice(reason: str, message: str, retry_ms: int) -> bytes:
    """The last message of a response that ends before its terminal event."""
    data = dumps({"reason": reason, "message": message})
    return retry_field(retry_ms) + f"event: reconnect\r\ndata: {data}\r\n\r\n".encode()


def jittered_retry_ms(base_ms: float) -> int:
    """Spread reconnects: ``base`` ±50 %."""
    return int(base_ms * random.uniform(0.5, 1.5))


def retry_after_ms(retry_after: float | None) -> int:
    """What ``Retry-After`` would have said, in ``retry:`` form: never sooner,
    up to 50 % later, so a crowd does not come back at once."""
    return int(max(retry_after or 1.0, 0.1) * 1000 * random.uniform(1.0, 1.5))


def transient_answer(reason: str, message: str, retry_after: float | None) -> web.Response:
    """A 200 event stream that says 'come back later': an ``EventSource`` gives up
    for good on any non-200 answer, but reconnects by itself after this one."""
    body = reconnect_notice(reason, message, retry_after_ms(retry_after))
    return web.Response(body=body, content_type="text/event-stream",
                        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


class SseResponse(web.StreamResponse):
    """An event-stream response with no task of its own (the edge's one
    ``Heartbeat`` pings it). Like aiohttp-sse, it asks the kernel to abort the
    connection when written data stays unacknowledged for ``send_timeout``:
    a hung peer is found by the next ping."""

    def __init__(self, headers: dict[str, str] | None, send_timeout: float) -> None:
        super().__init__(status=200)
        self.headers.update(headers or {})
        self.headers["Content-Type"] = "text/event-stream"
        self.headers["Cache-Control"] = "no-cache"
        self.headers["X-Accel-Buffering"] = "no"  # nginx: no proxy buffering
        self._send_timeout = send_timeout

    async def prepare(self, request: web.BaseRequest) -> AbstractStreamWriter | None:
        abort_unacknowledged_after(request, self._send_timeout)
        # No Content-Length: aiohttp frames HTTP/1.1 chunked, HTTP/1.0 until close.
        return await super().prepare(request)
