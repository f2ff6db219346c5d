"""Opening a stream (404, 410, 204) and the adapters' pull iterator, over the in-memory broker."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from tests.support.waiting import until
from tokenwire.client import ClientEvent, Transcript
from tokenwire.cursor import Cursor
from tokenwire.edge.follower import Follower, RecordMissing, StreamComplete
from tokenwire.edge.memory_broker import MemoryBroker
from tokenwire.errors import StreamGone, StreamNotFound
from tokenwire.events import Event


def client_event(event: Event) -> ClientEvent:
    return ClientEvent(event.id, event.type, event.payload())


async def test_what_cannot_be_followed_is_answered_before_any_response(
    broker: MemoryBroker,
) -> None:
    with pytest.raises(StreamNotFound):
        await Follower.open(broker, None, "nope", None)
    with pytest.raises(StreamGone):  # it held a cursor: the record expired
        await Follower.open(broker, None, "nope", Cursor("e", 3))
    stream_id = broker.create(tenant="acme")
    with pytest.raises(StreamNotFound):  # another tenant's stream reads as unknown
        await Follower.open(broker, None, stream_id, None, tenant="other")
    epoch = broker.begin(stream_id)
    broker.append(stream_id, "all")
    broker.finish(stream_id)
    with pytest.raises(StreamComplete):  # it has everything
        await Follower.open(broker, None, stream_id, Cursor(epoch, 3), tenant="acme")
    broker.expire_events(stream_id)
    with pytest.raises(StreamComplete):  # finished, and its events expired: 204
        await Follower.open(broker, None, stream_id, None, tenant="acme")


async def test_a_consumer_slower_than_the_stream_lags_and_catches_up_exactly(
    broker: MemoryBroker,
) -> None:
    """A queue of 2 live events overflows at once; the follower re-reads the stream."""
    stream_id = broker.create()
    broker.begin(stream_id)
    follower = await Follower.open(broker, None, stream_id, None, queue_size=2)
    transcript = Transcript()
    words = [f"{i} " for i in range(300)]

    async def produce() -> None:
        for index, word in enumerate(words):
            broker.append(stream_id, word)
            if index % 10 == 0:
                await asyncio.sleep(0)
        broker.finish(stream_id)

    producer = asyncio.create_task(produce())
    async with asyncio.timeout(10):
        async for event in follower.events():
            transcript.apply(client_event(event))
            await asyncio.sleep(0)  # slower than the producer
    await producer
    assert transcript.text == "".join(words) and transcript.terminal is not None


async def test_an_overflow_of_the_live_queue_is_told_once_until_it_caught_up(
    broker: MemoryBroker,
) -> None:
    """What the edge counts as a hub lag event: the consumer is level, its queue
    of 2 overflows by a burst of live events, it re-reads the stream — told
    once for the burst, and once again for the next burst after it caught up."""
    stream_id = broker.create()
    broker.begin(stream_id)
    lagged: list[None] = []
    follower = await Follower.open(broker, None, stream_id, None, queue_size=2,
                                   on_lag=lambda: lagged.append(None))
    events = follower.events()

    def told(times: int) -> Callable[[], bool]:
        return lambda: len(lagged) == times

    transcript = Transcript()
    transcript.apply(client_event(await anext(events)))  # ``start``: level from now on
    for burst in range(2):
        await asyncio.sleep(0)  # the generator waits for live events
        words = [f"{burst}.{i} " for i in range(5)]
        for word in words:  # no consumer in between: 2 queued, the rest left to a read
            broker.append(stream_id, word)
        await until(told(burst + 1))  # dispatched by the hub's reader
        for _ in words:
            transcript.apply(client_event(await anext(events)))
    broker.finish(stream_id)
    async for event in events:
        transcript.apply(client_event(event))
    assert transcript.text == "".join(f"{b}.{i} " for b in range(2) for i in range(5))
    assert len(lagged) == 2


async def test_a_late_joiner_can_start_from_one_snapshot(broker: MemoryBroker) -> None:
    stream_id = broker.create()
    broker.begin(stream_id)
    for word in ("so ", "far "):
        broker.append(stream_id, word)
    follower = await Follower.open(broker, None, stream_id, None, want_snapshot=True)
    events = follower.events()
    first = await anext(events)
    assert first.type == "snapshot" and first.payload() == {"content": "so far "}
    broker.append(stream_id, "and on")
    assert (await anext(events)).payload() == {"content": "and on"}
    await events.aclose()


async def test_a_record_that_vanishes_ends_the_iterator(broker: MemoryBroker) -> None:
    stream_id = broker.create()
    broker.begin(stream_id)
    follower = await Follower.open(broker, None, stream_id, None)
    events = follower.events()
    assert (await anext(events)).type == "start"
    broker.forget(stream_id)
    broker.source.go_down()
    broker.source.come_back()
    with pytest.raises(RecordMissing):
        await anext(events)
    assert broker.hub.subscribers == 0
