"""The synchronous write of live SSE events.

Most live events reach a client whose socket has nothing queued ahead of them.
For those, the hub's dispatch writes the frame to the transport at once, from
the callback, instead of waking the connection's writer task: one
``transport.write`` per viewer and no task switch, with the frame encoded once
per event however many viewers it has. Anything else (a write already waiting
in the kernel buffer, a terminal event, a closed socket) is refused, and the
caller queues it for the writer task, which is the path with backpressure and
a send timeout.

Writing beside aiohttp's own writer is safe because both write whole chunks,
each with one ``transport.write``, in call order: aiohttp's writer, the
aiohttp-sse ping and this class never split a frame.
"""

from __future__ import annotations

from aiohttp import web
from prometheus_client import Counter

from tokenwire.events import Event


class SseSocket:
    """Synchronous writes of single frames to one prepared SSE response."""

    __slots__ = ("_chunked", "_sent", "_transport", "open")

    def __init__(self, request: web.Request, response: web.StreamResponse, sent: Counter
                 ) -> None:
        # After prepare(): the headers say how aiohttp frames the body
        # (HTTP/1.1: chunked; HTTP/1.0: raw bytes until the connection closes).
        self._chunked = response.headers.get("Transfer-Encoding") == "chunked"
        self._transport = request.transport
        self._sent = sent
        self.open = True  # cleared when the relay ends: nothing may follow its last write

    def write_now(self, event: Event) -> bool:
        """Write ``event`` if nothing is waiting ahead of it; False otherwise."""
        transport = self._transport
        if (not self.open or event.is_terminal or transport is None or transport.is_closing()
                or transport.get_write_buffer_size()):
            return False
        frame = event.sse_bytes()
        transport.write(b"%x\r\n%b\r\n" % (len(frame), frame) if self._chunked else frame)
        self._sent.inc()
        return True
