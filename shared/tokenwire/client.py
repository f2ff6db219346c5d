"""A Python client for the edge API: create streams, follow them, resume on drops.

    async with TokenwireClient("http://127.0.0.1:8080") as client:
        stream_id = await client.create({"prompt": "hi"})
        transcript = await client.follow(stream_id)
        print(transcript.text)

``Transcript`` applies the event contract (``reset``, ``snapshot``, ``token``) and
checks the cursor invariants as it goes, so a client — or a test — notices a
gap or a duplicate instead of showing wrong text.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Self

import aiohttp


@dataclass(frozen=True, slots=True)
class ClientEvent:
    id: str
    type: str
    data: dict[str, Any]

    @property
    def epoch(self) -> str:
        return self.id.rsplit(".", 1)[0]

    @property
    def seq(self) -> int:
        return int(self.id.rsplit(".", 1)[1])


class ProtocolViolation(AssertionError):
    """The server broke the event contract (a gap, a duplicate, a splice)."""


@dataclass
class Transcript:
    """The text a client assembles from events, with the contract checked."""

    text: str = ""
    epoch: str | None = None
    last_seq: int = 0
    events: list[ClientEvent] = field(default_factory=list)
    resets: int = 0
    terminal: ClientEvent | None = None
    #: Accept a token frame whose cursor jumps: the edge merges queued token events
    #: for a client that is behind or catching up. ``False`` demands steps of 1.
    allow_merged: bool = True

    @property
    def last_id(self) -> str | None:
        return f"{self.epoch}.{self.last_seq}" if self.epoch is not None else None

    def apply(self, event: ClientEvent) -> None:
        if self.terminal is not None:
            raise ProtocolViolation(f"event {event.id} after terminal {self.terminal.id}")
        self.events.append(event)
        if event.type == "reset":
            self.text, self.epoch, self.last_seq = "", event.data["epoch"], 0
            self.resets += 1
            return
        if self.epoch is not None and event.epoch != self.epoch:
            raise ProtocolViolation(f"epoch changed to {event.id} without a reset")
        if event.type == "snapshot":
            if event.seq < self.last_seq:
                raise ProtocolViolation(f"snapshot {event.id} goes back from {self.last_id}")
            self.text = event.data["content"]
        else:
            expected = self.last_seq + 1
            merged = self.allow_merged and event.type == "token" and event.seq > expected
            if event.seq != expected and not merged:
                raise ProtocolViolation(f"got {event.id} after {self.last_id}")
            if event.type == "token":
                self.text += event.data["content"]
        self.epoch, self.last_seq = event.epoch, event.seq
        if event.type in ("done", "error"):
            self.terminal = event


async def parse_sse(content: AsyncIterable[bytes]) -> AsyncIterator[tuple[str | None, str, str]]:
    """Yield ``(id, event, data)`` per SSE message (comments and ``retry:`` skipped).

    ``id`` is the message's own id, None when it has none — unlike
    EventSource, which repeats the last one. Tokenwire sends an id with every
    stream event; only the ``slow_consumer`` notice has none: it is not part of
    the stream, and the response ends after it."""
    event_id: str | None = None
    event_type, data_lines = "message", list[str]()
    async for raw in content:
        line = raw.decode("utf-8").rstrip("\r\n")
        if not line:
            if data_lines:
                yield event_id, event_type, "\n".join(data_lines)
            event_id, event_type, data_lines = None, "message", []
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "id":
            event_id = value
        elif name == "event":
            event_type = value
        elif name == "data":
            data_lines.append(value)


class TokenwireError(Exception):
    def __init__(self, status: int, body: Any) -> None:
        super().__init__(f"HTTP {status}: {body}")
        self.status = status
        self.body = body


class TokenwireClient:
    def __init__(self, base_url: str, session: aiohttp.ClientSession | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self._session = session
        self._owns_session = session is None

    async def __aenter__(self) -> Self:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._owns_session and self._session is not None:
            await self._session.close()

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RuntimeError("use 'async with TokenwireClient(...)'")
        return self._session

    async def create(self, job: dict[str, Any], idempotency_key: str | None = None) -> str:
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        async with self.session.post(f"{self.base_url}/v1/streams", json=job,
                                     headers=headers) as response:
            body = await response.json()
            if response.status != 202:
                raise TokenwireError(response.status, body)
            return str(body["id"])

    async def status(self, stream_id: str) -> dict[str, Any]:
        async with self.session.get(f"{self.base_url}/v1/streams/{stream_id}") as response:
            body: dict[str, Any] = await response.json()
            if response.status != 200:
                raise TokenwireError(response.status, body)
            return body

    async def cancel(self, stream_id: str) -> str:
        async with self.session.post(f"{self.base_url}/v1/streams/{stream_id}/cancel"
                                     ) as response:
            body = await response.json()
            if response.status != 202:
                raise TokenwireError(response.status, body)
            return str(body["status"])

    async def events(
        self, stream_id: str, last_event_id: str | None = None
    ) -> AsyncIterator[ClientEvent]:
        """One SSE connection's events (no reconnect). Ends at the terminal event,
        when the server closes (after a ``slow_consumer`` notice, too: resume
        from ``last_event_id``), or at once on 204."""
        headers = {"Last-Event-ID": last_event_id} if last_event_id else {}
        url = f"{self.base_url}/v1/streams/{stream_id}/events"
        async with self.session.get(url, headers=headers,
                                    timeout=aiohttp.ClientTimeout(sock_read=60)) as response:
            if response.status == 204:
                return
            if response.status != 200:
                raise TokenwireError(response.status, await response.text())
            async for event_id, event_type, data in parse_sse(response.content):
                if event_id is None:
                    return  # slow_consumer: this connection ends; the cursor stands
                yield ClientEvent(event_id, event_type, json.loads(data))

    async def follow(
        self, stream_id: str, transcript: Transcript | None = None, max_reconnects: int = 20
    ) -> Transcript:
        """Follow a stream to its end, reconnecting with ``Last-Event-ID`` on drops."""
        transcript = transcript or Transcript()
        for _ in range(max_reconnects + 1):
            try:
                async for event in self.events(stream_id, transcript.last_id):
                    transcript.apply(event)
                if transcript.terminal is not None:
                    return transcript
                status = await self.status(stream_id)
                if status["status"] in ("done", "error", "cancelled") and (
                    status["cursor"] == transcript.last_id
                ):
                    return transcript
            except (TimeoutError, aiohttp.ClientError):
                pass
            await asyncio.sleep(0.2)
        raise TokenwireError(0, f"gave up after {max_reconnects} reconnects")
