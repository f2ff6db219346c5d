"""Delivery behaviour over the in-memory broker, through real sockets.

The real ``ClientStream``, hub, transports (SSE and WebSocket) and position
machine, on an aiohttp test server; the stream lives in ``MemoryBroker``, so
faults (a lost live message, a dropped live connection, Redis unreachable, a
new epoch, a vanished record) are injected precisely and the tests take
milliseconds. The Redis broker keeps the same contract: the integration,
end-to-end and chaos tests prove it against a real Valkey.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, get_port_socket

from tests.conftest import make_settings
from tests.support.delivery import delivery_app, frame_event, running, sse_events
from tests.support.waiting import until
from tokenwire import keys
from tokenwire.client import ClientEvent, Transcript
from tokenwire.edge import keys as appkeys
from tokenwire.edge.client_stream import ClientStream, Disconnect
from tokenwire.edge.memory_broker import MemoryBroker
from tokenwire.edge.position import Position
from tokenwire.events import Event
from tokenwire.settings import Settings

Client = TestClient[web.Request, web.Application]
ClientFactory = Callable[..., Awaitable[Client]]


@pytest.fixture
def broker() -> MemoryBroker:
    return MemoryBroker(idle_resync=3600)


async def edge(aiohttp_client: ClientFactory, broker: MemoryBroker, *, small_buffers: bool = False,
               **overrides: Any) -> Client:
    """The delivery app on a test server. ``small_buffers``: its sockets send
    through a small kernel buffer, so a client that stops reading is felt
    after kilobytes, not megabytes."""
    settings: Settings = make_settings("redis://127.0.0.1:1/0", **overrides)
    server_kwargs = {"socket_factory": _small_send_buffer} if small_buffers else {}
    return await aiohttp_client(delivery_app(broker, settings), server_kwargs=server_kwargs)


def _small_send_buffer(host: str, port: int, family: socket.AddressFamily) -> socket.socket:
    sock = get_port_socket(host, port, family)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)  # accepted sockets inherit it
    return sock


async def open_raw_sse(client: Client, stream_id: str, last_event_id: str | None = None
                       ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """An SSE request on a socket with a small receive buffer, read only when the test says."""
    assert client.server.port is not None
    sock = socket.create_connection(("127.0.0.1", client.server.port))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    # A small limit: the reader stops taking bytes from the socket while the test does not read.
    reader, writer = await asyncio.open_connection(sock=sock, limit=4096)
    resume = f"Last-Event-ID: {last_event_id}\r\n" if last_event_id else ""
    writer.write(f"GET /streams/{stream_id}/events HTTP/1.1\r\nHost: t\r\n{resume}\r\n".encode())
    return reader, writer


def raw_events(body: bytes) -> list[ClientEvent]:
    """The SSE messages in a raw (chunked) body: good enough for our own framing."""
    found = []
    for block in body.decode(errors="replace").split("\r\n\r\n"):
        fields = dict(line.split(": ", 1) for line in block.split("\r\n")
                      if line.startswith(("id: ", "event: ", "data: ")))
        if "data" in fields and "event" in fields:  # not the tail of a block read earlier
            found.append(ClientEvent(fields.get("id", ""), fields.get("event", "message"),
                                     json.loads(fields["data"])))
    return found



class SseFollower:
    """One SSE response read in the background into a ``Transcript`` (which
    checks the contract); tests wait on its progress, not on the clock."""

    def __init__(self, client: Client, stream_id: str, transcript: Transcript | None = None,
                 last_event_id: str | None = None) -> None:
        self.transcript = transcript or Transcript()
        self.notice: ClientEvent | None = None  # the ``reconnect`` notice it ended with
        self._progress = asyncio.Event()
        headers = {"Last-Event-ID": last_event_id} if last_event_id else {}
        self._task = asyncio.create_task(self._read(client, stream_id, headers))

    async def _read(self, client: Client, stream_id: str, headers: dict[str, str]) -> None:
        try:
            async with client.get(f"/streams/{stream_id}/events", headers=headers) as response:
                async for event in sse_events(response):
                    if event.type == "reconnect":
                        self.notice = event
                        return
                    self.transcript.apply(event)
                    self._progress.set()
        finally:
            self._progress.set()

    async def reached(self, *, text: str | None = None, events: int = 1,
                      seconds: float = 5.0) -> None:
        """Until the transcript holds ``text`` (or ``events`` events)."""
        async with asyncio.timeout(seconds):
            while (self.transcript.text != text if text is not None
                   else len(self.transcript.events) < events):
                if self._task.done():
                    await self._task  # raises what ended it
                    raise AssertionError(f"ended at {self.transcript.text!r}")
                self._progress.clear()
                await self._progress.wait()

    async def ended(self, seconds: float = 5.0) -> ClientEvent | None:
        """Until the response ends; its ``reconnect`` notice, if any."""
        await asyncio.wait_for(self._task, seconds)
        return self.notice

    async def drop(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


async def test_live_events_reach_sse_and_websocket_in_order_then_the_end(
    aiohttp_client: ClientFactory, broker: MemoryBroker
) -> None:
    client = await edge(aiohttp_client, broker)
    stream_id = running(broker, "Hello")
    ws_transcript = Transcript(allow_merged=False)
    ws = await client.ws_connect(f"/streams/{stream_id}/ws")
    sse = SseFollower(client, stream_id, Transcript(allow_merged=False))
    await sse.reached(text="Hello")
    ws_transcript.apply(frame_event((await ws.receive()).data))
    ws_transcript.apply(frame_event((await ws.receive()).data))  # both are live now
    words = [f" w{i}" for i in range(200)]
    for word in words:
        broker.append(stream_id, word)
        if len(word) % 3 == 0:
            await asyncio.sleep(0)  # let some go out one by one, others queue up
    broker.finish(stream_id)
    async for message in ws:
        ws_transcript.apply(frame_event(message.data))
    assert ws.close_code == 1000
    assert await sse.ended() is None  # ended without a notice
    for transcript in (sse.transcript, ws_transcript):
        assert transcript.text == "Hello" + "".join(words)
        assert transcript.terminal is not None and transcript.terminal.type == "done"
    await until(lambda: broker.hub.subscribers == 0)
    assert not client.app[appkeys.LIFECYCLE].clients


async def test_a_resume_continues_exactly_after_the_cursor(
    aiohttp_client: ClientFactory, broker: MemoryBroker
) -> None:
    client = await edge(aiohttp_client, broker)
    stream_id = running(broker, "a")
    first = SseFollower(client, stream_id)
    await first.reached(text="a")
    await first.drop()  # the connection drops after start and a
    broker.append(stream_id, "b")
    cursor = first.transcript.last_id
    resumed = SseFollower(client, stream_id, Transcript(text="a", epoch=first.transcript.epoch,
                                                       last_seq=first.transcript.last_seq),
                          last_event_id=cursor)
    await resumed.reached(text="ab")
    broker.append(stream_id, "c")
    broker.finish(stream_id)
    assert await resumed.ended() is None
    events = resumed.transcript.events
    assert resumed.transcript.text == "abc" and resumed.transcript.resets == 0
    assert events[0].data["content"].startswith("b")  # right after a: nothing repeated


async def test_a_lost_live_message_and_a_dropped_live_connection_lose_nothing(
    aiohttp_client: ClientFactory, broker: MemoryBroker
) -> None:
    client = await edge(aiohttp_client, broker)
    stream_id = running(broker)
    sse = SseFollower(client, stream_id)  # the re-read events come merged
    await sse.reached(events=1)  # the start: following live now
    broker.source.lose_next(keys.live_channel(stream_id), 3)
    for word in ("x", "y", "z", "last"):  # 3 lost live (then gap signals), the last one not
        broker.append(stream_id, word)
    await sse.reached(text="xyzlast")
    broker.source.go_down()
    broker.append(stream_id, "!")  # published while the live connection is down,
    broker.finish(stream_id)  # the final event too: only the gap signal can tell
    broker.source.come_back()
    await sse.ended()
    assert sse.transcript.text == "xyzlast!" and sse.transcript.terminal is not None


async def test_a_slow_reader_gets_the_same_text_in_fewer_frames(
    aiohttp_client: ClientFactory, broker: MemoryBroker
) -> None:
    """The client does not read while tokens pile up (the socket buffers
    fill), then reads everything: queued tokens were merged, live events past
    its backlog were read back from the stream, and the text is exact."""
    client = await edge(aiohttp_client, broker, small_buffers=True, client_backlog_chars=2048)
    stream_id = running(broker)
    reader, writer = await open_raw_sse(client, stream_id)
    await reader.readuntil(b"event: start")
    words = [f"word{i:05d} " * 8 for i in range(1500)]  # ~190 KB, far over the buffers
    for index, word in enumerate(words):
        broker.append(stream_id, word)
        if index % 50 == 0:
            await asyncio.sleep(0)
    broker.finish(stream_id)
    body = b""
    async with asyncio.timeout(10):
        while b"event: done" not in body:
            body += await reader.read(65536)
    writer.close()
    transcript = Transcript(epoch=broker_epoch(broker, stream_id), last_seq=1)
    for event in raw_events(body):
        transcript.apply(event)
    assert transcript.text == "".join(words) and transcript.terminal is not None
    assert len(transcript.events) < len(words) / 2  # merged frames


async def test_a_stuck_client_is_a_slow_consumer_and_resumes_exactly(
    aiohttp_client: ClientFactory, broker: MemoryBroker
) -> None:
    """A client stops reading while events pile up; once it has stayed behind
    its backlog for ``slow_consumer_seconds`` the edge lets it go. It reads
    what was sent, then the ``slow_consumer`` notice, and resumes exactly.
    (A client that never reads again is aborted by the kernel after
    ``send_timeout_seconds``: ``TCP_USER_TIMEOUT``.)"""
    client = await edge(aiohttp_client, broker, small_buffers=True, send_timeout_seconds=5,
                        slow_consumer_seconds=0.3, client_backlog_chars=1024)
    stream_id = running(broker)
    reader, writer = await open_raw_sse(client, stream_id)
    await reader.readuntil(b"event: start")  # then it stops reading
    pieces = [f"piece {index}; " * 4 for index in range(3000)]  # far over the buffers
    for index, piece in enumerate(pieces):
        broker.append(stream_id, piece)
        if index % 100 == 0:
            await asyncio.sleep(0)
    metrics = client.app[appkeys.METRICS]
    await until(lambda: metrics.slow_consumers._value.get() >= 1)  # the counter's value
    body = b""
    async with asyncio.timeout(5):  # reading again: what was sent, then the notice
        while b"event: reconnect" not in body:
            body += await reader.read(65536)
    writer.close()
    events = raw_events(body)
    assert events[-1].type == "reconnect" and events[-1].data["reason"] == "slow_consumer"
    transcript = Transcript(epoch=broker_epoch(broker, stream_id), last_seq=1)
    for event in events[:-1]:
        transcript.apply(event)
    # (Usually it has only part of the text here; on a loaded machine the edge
    # may have written all of it, merged, before the backlog timer ran out.)
    broker.finish(stream_id)
    assert transcript.last_id is not None
    async with client.ws_connect(f"/streams/{stream_id}/ws",
                                 params={"last_event_id": transcript.last_id}) as resumed:
        async for message in resumed:
            transcript.apply(frame_event(message.data))
    assert transcript.text == "".join(pieces)
    assert transcript.resets == 0 and transcript.terminal is not None


def broker_epoch(broker: MemoryBroker, stream_id: str) -> str:
    """The stream's current epoch (what the ``start`` a raw reader skipped named)."""
    meta = broker._records[stream_id].meta()  # the test's own broker
    assert meta.epoch is not None
    return meta.epoch


async def test_draining_ends_sse_with_a_notice_and_websockets_with_1012(
    aiohttp_client: ClientFactory, broker: MemoryBroker
) -> None:
    client = await edge(aiohttp_client, broker, drain_seconds=2.0)
    stream_id = running(broker, "a")
    sse = SseFollower(client, stream_id)
    ws = await client.ws_connect(f"/streams/{stream_id}/ws")
    await sse.reached(text="a")
    await until(lambda: len(client.app[appkeys.LIFECYCLE].clients) == 2)
    await client.app[appkeys.LIFECYCLE].drain(5)
    notice = await sse.ended()
    assert notice is not None and notice.data["reason"] == "draining"
    async for _ in ws:
        pass
    assert ws.close_code == 1012
    assert broker.hub.subscribers == 0


async def test_redis_away_briefly_holds_the_client_and_longer_ends_it(
    aiohttp_client: ClientFactory, broker: MemoryBroker
) -> None:
    client = await edge(aiohttp_client, broker, edge_redis_outage_seconds=1.0)
    stream_id = running(broker, "a")
    sse = SseFollower(client, stream_id)
    await sse.reached(text="a")
    broker.go_down()  # the live connection drops, reads fail: held, retried
    broker.append(stream_id, "b")  # lost live: only a read brings it
    broker.come_back()
    await sse.reached(text="ab")
    broker.go_down()
    notice = await sse.ended(10)  # past the outage budget
    assert notice is not None and notice.data["reason"] == "redis_unavailable"
    assert sse.transcript.text == "ab"


async def test_a_new_epoch_mid_stream_is_a_reset_then_the_new_epoch(
    aiohttp_client: ClientFactory, broker: MemoryBroker
) -> None:
    client = await edge(aiohttp_client, broker)
    stream_id = running(broker, "doomed")
    sse = SseFollower(client, stream_id, Transcript(allow_merged=False))
    await sse.reached(text="doomed")
    broker.begin(stream_id)  # a worker died; another began again
    broker.append(stream_id, "fresh")
    broker.finish(stream_id)
    await sse.ended()
    assert sse.transcript.resets == 1 and sse.transcript.text == "fresh"


async def test_a_vanished_record_ends_with_record_missing(
    aiohttp_client: ClientFactory, broker: MemoryBroker
) -> None:
    client = await edge(aiohttp_client, broker)
    stream_id = running(broker, "a")
    sse = SseFollower(client, stream_id)
    await sse.reached(text="a")
    broker.forget(stream_id)  # Redis restarted empty...
    broker.source.go_down()  # ...so the live connection dropped too
    broker.source.come_back()
    notice = await sse.ended()
    assert notice is not None and notice.data["reason"] == "record_missing"


async def test_a_client_that_leaves_leaves_no_subscription(
    aiohttp_client: ClientFactory, broker: MemoryBroker
) -> None:
    client = await edge(aiohttp_client, broker)
    stream_ids = [running(broker, "a") for _ in range(20)]
    responses = [await client.get(f"/streams/{s}/events") for s in stream_ids]
    await until(lambda: broker.hub.subscribers == 20)
    for response in responses:
        response.close()  # the connection goes: aiohttp cancels the handler
    await until(lambda: not broker.hub.subscribers and not broker.source.wanted)
    assert not client.app[appkeys.LIFECYCLE].clients


class FrameByFrame:
    """A transport whose ``send`` yields before each frame (as a WebSocket
    waiting on its socket does), and whose socket is busy for every fifth
    direct write it is offered (then the event takes the ``send`` path)."""

    def __init__(self, transcript: Transcript) -> None:
        self.open = True
        self.direct = 0
        self.batches = 0
        self.offered = 0
        self._transcript = transcript

    def write_now(self, event: Event) -> bool:
        self.offered += 1
        if not self.open or event.is_terminal or self.offered % 5 == 0:
            return False
        self._transcript.apply(to_client(event))  # checks cursors: no overtaking
        self.direct += 1
        return True

    async def send(self, events: list[Event]) -> None:
        self.batches += 1
        for event in events:
            await asyncio.sleep(0)
            self._transcript.apply(to_client(event))

    def ping(self) -> None:
        return None


def to_client(event: Event) -> ClientEvent:
    return ClientEvent(event.id, event.type, event.payload())


async def test_direct_writes_never_overtake_a_batch_being_written(broker: MemoryBroker) -> None:
    broker.start()
    try:
        stream_id = running(broker, "a")
        transcript = Transcript()
        transport = FrameByFrame(transcript)
        settings = make_settings("redis://127.0.0.1:1/0")
        stream = ClientStream(broker, stream_id, Position(None), transport, settings)
        run = asyncio.create_task(stream.run())
        words = [f" {i}" for i in range(300)]
        await until(lambda: transcript.text == "a")
        async with asyncio.timeout(5):
            for index, word in enumerate(words):
                broker.append(stream_id, word)
                if index % 7 == 0:
                    await asyncio.sleep(0)
            broker.finish(stream_id)
            assert await run is Disconnect.DONE
        assert transcript.text == "a" + "".join(words) and transcript.terminal is not None
        assert transport.direct > 0 and transport.batches > 1  # both paths took part
    finally:
        await broker.close()
