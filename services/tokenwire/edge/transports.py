"""The transports: one SSE response or one WebSocket, as a ``ClientStream`` writes to it.

Two ways to write. ``send`` writes a batch through aiohttp (awaiting the
socket: backpressure; the caller bounds it with a send timeout). ``write_now``
is the live hot path: most live events reach a client whose socket has nothing
queued ahead of them, and for those the hub's dispatch writes the frame to the
transport at once, from the callback, instead of waking the connection's task:
one ``transport.write`` per viewer and no task switch, with the frame encoded
once per event however many viewers it has. Anything else (a write already
waiting in the kernel buffer, a terminal event, a closed socket) is refused,
and the caller queues it for ``send``.

Writing beside aiohttp's own writer is safe because each side writes whole
frames, each with one ``transport.write``, in call order; the ``ClientStream``
never writes here while a ``send`` of its is in progress.
"""

from __future__ import annotations

import struct
from typing import Protocol

from aiohttp import WSMsgType, web
from aiohttp.abc import AbstractStreamWriter

from tokenwire.edge.delivery_meter import DeliveryMeter
from tokenwire.edge.sse import PING
from tokenwire.events import Event

#: The SSE heartbeat in an HTTP/1.1 chunk (one for every response: no copy each).
_CHUNKED_PING = b"%x\r\n%b\r\n" % (len(PING), PING)


class Transport(Protocol):
    #: Cleared when the client's stream ends: nothing may follow its last write.
    open: bool

    def write_now(self, event: Event) -> bool:
        """Write ``event`` at once if nothing is waiting ahead of it; False otherwise."""

    async def send(self, events: list[Event]) -> None:
        """Write ``events`` in order; returns once the connection's buffer is
        below its high-water mark (so a client that stops reading blocks it)."""

    def ping(self) -> None:
        """A keep-alive, unless the connection is closed or has bytes waiting."""


class _Direct:
    __slots__ = ("_transport", "_writer", "meter", "open")

    def __init__(self, request: web.Request, writer: AbstractStreamWriter, meter: DeliveryMeter
                 ) -> None:
        """``writer``: what ``prepare`` returned; its ``drain`` waits while the
        connection's buffer is over the high-water mark. (aiohttp drains by
        itself only every 64 KiB written through it, and never counts the
        direct writes: without this, a client that stops reading would have
        everything buffered in the edge's memory.)"""
        self._transport = request.transport
        self._writer = writer
        self.meter = meter  # events sent, delivery lag, time to first token
        self.open = True  # cleared when the stream ends: nothing may follow its last write

    def write_now(self, event: Event) -> bool:
        transport = self._transport
        if (not self.open or event.is_terminal or transport is None or transport.is_closing()
                or transport.get_write_buffer_size()):
            return False
        transport.write(self._frame(event))
        self.meter.wrote(event)
        return True

    def _frame(self, event: Event) -> bytes:
        raise NotImplementedError


class SseTransport(_Direct):
    """One prepared SSE response (after ``prepare``: its headers say how aiohttp
    frames the body — HTTP/1.1 chunked, HTTP/1.0 raw until the connection closes).

    ``head`` goes in front of whichever frame is written first, by either path
    (``take_head``): the ``retry:`` field, inside the first event's block,
    never a block of its own (see ``sse``). ``ping`` is the edge heartbeat's
    write."""

    __slots__ = ("_chunked", "_response", "head")

    def __init__(self, request: web.Request, response: web.StreamResponse,
                 writer: AbstractStreamWriter, meter: DeliveryMeter, head: bytes = b"") -> None:
        super().__init__(request, writer, meter)
        self._response = response
        self._chunked = response.headers.get("Transfer-Encoding") == "chunked"
        self.head = head

    async def send(self, events: list[Event]) -> None:
        await self._response.write(self.take_head() + b"".join(e.sse_bytes() for e in events))
        self.meter.wrote_all(events)
        await self._writer.drain()

    def take_head(self) -> bytes:
        head, self.head = self.head, b""
        return head

    def ping(self) -> None:
        """A heartbeat comment line, unless the socket is gone or still has
        bytes waiting (then the connection is not idle anyway)."""
        transport = self._transport
        if (self.open and transport is not None and not transport.is_closing()
                and not transport.get_write_buffer_size()):
            transport.write(_CHUNKED_PING if self._chunked else PING)

    def _frame(self, event: Event) -> bytes:
        frame = event.sse_bytes()
        if self.head:
            frame = self.take_head() + frame
        return self._framed(frame)

    def _framed(self, body: bytes) -> bytes:
        return b"%x\r\n%b\r\n" % (len(body), body) if self._chunked else body


#: A server's ping frame: FIN + opcode 9, no payload, unmasked (RFC 6455, 5.5.2).
WS_PING_FRAME = b"\x89\x00"


class WebSocketTransport(_Direct):
    """One prepared WebSocket without compression: a server's text frame is a
    two-to-ten-byte header and the payload, unmasked (RFC 6455, 5.2)."""

    __slots__ = ("_ws",)

    def __init__(self, request: web.Request, ws: web.WebSocketResponse,
                 writer: AbstractStreamWriter, meter: DeliveryMeter) -> None:
        super().__init__(request, writer, meter)
        self._ws = ws
        self.open = not ws.compress  # deflated frames take aiohttp's own writer

    async def send(self, events: list[Event]) -> None:
        for event in events:  # the bytes encoded once per event, shared by its viewers
            await self._ws.send_frame(event.ws_bytes(), WSMsgType.TEXT)
        self.meter.wrote_all(events)
        await self._writer.drain()

    def write_now(self, event: Event) -> bool:
        return not self._ws.closed and super().write_now(event)  # nothing after a close

    def ping(self) -> None:
        """A ping frame (the edge's WebSocket heartbeat); browsers answer pong."""
        transport = self._transport
        if (self.open and not self._ws.closed and transport is not None
                and not transport.is_closing() and not transport.get_write_buffer_size()):
            transport.write(WS_PING_FRAME)

    def _frame(self, event: Event) -> bytes:
        payload = event.ws_bytes()
        size = len(payload)
        if size < 126:
            head = bytes((0x81, size))  # FIN + text
        elif size < 65536:
            head = struct.pack("!BBH", 0x81, 126, size)
        else:
            head = struct.pack("!BBQ", 0x81, 127, size)
        return head + payload
