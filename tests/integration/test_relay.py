"""Delivery to slow and stuck clients: the real follower, hub and Redis, with a
``send`` that stands in for a slow socket."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from tests.conftest import make_settings
from tests.integration.test_store import started
from tokenwire.client import ClientEvent, Transcript
from tokenwire.cursor import Cursor
from tokenwire.edge.delivery import relay
from tokenwire.edge.follower import Follower
from tokenwire.edge.hub import Hub
from tokenwire.edge.outbox import SlowConsumer
from tokenwire.events import Event, dumps
from tokenwire.settings import Settings
from tokenwire.store import Attempt, PendingEvent, StreamStore


@pytest.fixture
async def hub(redis: Redis) -> AsyncIterator[Hub]:
    hub = Hub(redis, queue_size=16)
    hub.start()
    await hub.wait_connected()
    yield hub
    await hub.close()


async def produce(store: StreamStore, attempt: Attempt, pieces: list[str], pause: float) -> None:
    for seq, piece in enumerate(pieces, start=2):
        await store.append(attempt, seq, [PendingEvent("token", dumps({"content": piece}), piece)])
        await asyncio.sleep(pause)
    await store.append(attempt, len(pieces) + 2, [PendingEvent("done", "{}")],
                       final_status="done")


def to_client(event: Event) -> ClientEvent:
    return ClientEvent(event.id, event.type, event.payload())


async def test_a_slow_client_gets_the_same_text_in_fewer_frames(
    redis: Redis, redis_url: str, hub: Hub
) -> None:
    settings = make_settings(redis_url)
    store = StreamStore(redis, settings)
    attempt = await started(store)
    pieces = [f"w{i} " for i in range(200)]
    transcript = Transcript()

    async def slow_send(batch: list[Event]) -> None:
        for event in batch:
            transcript.apply(to_client(event))  # checks cursors and epochs
        await asyncio.sleep(0.02)  # a phone on a bad network: ~50 writes/s

    follower = Follower(store, hub, attempt.stream_id, None, idle_resync=2)
    producer = asyncio.create_task(produce(store, attempt, pieces, pause=0.001))
    outbox = await asyncio.wait_for(relay(follower, settings, slow_send), 20)
    await producer
    assert transcript.text == "".join(pieces)
    assert transcript.terminal is not None
    assert outbox.merged > 0
    assert len(transcript.events) < len(pieces) / 2


class RecordingSocket:
    """Stands in for ``DirectSse``/``DirectWebSocket``: takes every live event it
    is offered, as a socket with an empty send buffer would."""

    def __init__(self, transcript: Transcript) -> None:
        self.open = True
        self.written = 0
        self._transcript = transcript

    def write_now(self, event: Event) -> bool:
        if not self.open or event.is_terminal:
            return False
        self._transcript.apply(to_client(event))  # checks cursors: no overtaking
        self.written += 1
        return True


async def test_direct_writes_never_overtake_a_batch_being_written(
    redis: Redis, redis_url: str, hub: Hub
) -> None:
    """A WebSocket writes a batch frame by frame and may wait in between; live
    events arriving meanwhile must queue behind the rest of the batch."""
    settings = make_settings(redis_url)
    store = StreamStore(redis, settings)
    attempt = await started(store)
    pieces = [f"p{i} " for i in range(300)]
    transcript = Transcript()
    socket = RecordingSocket(transcript)
    batches = 0

    async def frame_by_frame(batch: list[Event]) -> None:
        nonlocal batches
        batches += 1
        for event in batch:
            if batches <= 3:  # a congested start: each frame waits on drain first
                await asyncio.sleep(0.02)
            transcript.apply(to_client(event))

    follower = Follower(store, hub, attempt.stream_id, None, idle_resync=2)
    producer = asyncio.create_task(produce(store, attempt, pieces, pause=0.003))
    await asyncio.wait_for(relay(follower, settings, frame_by_frame, socket), 20)
    await producer
    assert transcript.text == "".join(pieces) and transcript.terminal is not None
    assert socket.written > 0 and batches > 3  # both paths took part


async def test_a_stuck_client_is_disconnected_and_resumes_exactly(
    redis: Redis, redis_url: str, hub: Hub
) -> None:
    settings = make_settings(redis_url, client_backlog_chars=1024, slow_consumer_seconds=0.3,
                             send_timeout_seconds=0.3)
    store = StreamStore(redis, settings)
    attempt = await started(store)
    pieces = [f"piece {i}; " for i in range(300)]
    transcript = Transcript()

    async def stuck_send(batch: list[Event]) -> None:
        if len(transcript.events) >= 3:
            await asyncio.sleep(3600)  # the socket stops draining
        for event in batch:
            transcript.apply(to_client(event))

    follower = Follower(store, hub, attempt.stream_id, None, idle_resync=2)
    producer = asyncio.create_task(produce(store, attempt, pieces, pause=0))
    with pytest.raises(SlowConsumer):
        await asyncio.wait_for(relay(follower, settings, stuck_send), 10)
    await producer
    # It reconnects with its cursor and gets exactly the rest.
    assert transcript.last_id is not None
    resumed = Follower(store, hub, attempt.stream_id, Cursor.parse(transcript.last_id),
                       idle_resync=2)

    async def send(batch: list[Event]) -> None:
        for event in batch:
            transcript.apply(to_client(event))

    await asyncio.wait_for(relay(resumed, settings, send), 10)
    assert transcript.text == "".join(pieces)
    assert transcript.resets == 0


async def test_a_lagging_live_feed_falls_back_to_redis_without_loss(
    redis: Redis, redis_url: str
) -> None:
    """A hub queue of 2 overflows at once; the follower re-reads the stream."""
    settings: Settings = make_settings(redis_url)
    store = StreamStore(redis, settings)
    tiny = Hub(redis, queue_size=2)
    tiny.start()
    await tiny.wait_connected()
    try:
        attempt = await started(store)
        pieces = [f"{i} " for i in range(300)]
        transcript = Transcript()

        async def send(batch: list[Event]) -> None:
            for event in batch:
                transcript.apply(to_client(event))
            await asyncio.sleep(0.001)

        follower = Follower(store, tiny, attempt.stream_id, None, idle_resync=2)
        producer = asyncio.create_task(produce(store, attempt, pieces, pause=0))
        await asyncio.wait_for(relay(follower, settings, send), 20)
        await producer
    finally:
        await tiny.close()
    assert transcript.text == "".join(pieces)
