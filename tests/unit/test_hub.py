"""The hub over the in-memory live source: fan-out, gap signals, no leaks, bad input."""

from __future__ import annotations

import asyncio
import contextlib

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from tests.support.delivery import running
from tests.support.live import Recorder, cancellation_storm
from tests.support.waiting import until
from tokenwire import keys
from tokenwire.edge.memory_broker import MemoryBroker
from tokenwire.events import Event


async def test_every_local_subscriber_gets_each_event_once_in_order(broker: MemoryBroker) -> None:
    stream_id = running(broker)
    recorders = [Recorder() for _ in range(3)]
    async with (broker.subscribe(stream_id, recorders[0]),
                broker.subscribe(stream_id, recorders[1]),
                broker.subscribe(stream_id, recorders[2])):
        assert broker.hub.channels == 1 and broker.hub.subscribers == 3
        sent = [broker.append(stream_id, word) for word in ("a", "b", "c")]
        for recorder in recorders:
            assert [await recorder.next() for _ in sent] == sent
    assert broker.hub.subscribers == 0


async def test_a_malformed_message_is_skipped_with_a_gap_and_the_next_one_arrives(
    broker: MemoryBroker,
) -> None:
    stream_id = running(broker)
    recorder = Recorder()
    async with broker.subscribe(stream_id, recorder):
        for poison in ("no spaces at all", "e.notanumber token {}", ""):
            broker.source.publish(keys.live_channel(stream_id), poison)
        event = broker.append(stream_id, "x")
        assert await recorder.next() == event
    assert broker.hub.malformed_messages == 3
    assert recorder.gaps == 3  # its subscribers re-read the stream: nothing is lost


async def test_one_failing_subscriber_does_not_starve_the_others(broker: MemoryBroker) -> None:
    class Broken(Recorder):
        def on_event(self, event: Event) -> None:
            raise RuntimeError("a bug in one subscriber")

    stream_id = running(broker)
    broken, healthy = Broken(), Recorder()
    async with broker.subscribe(stream_id, broken), broker.subscribe(stream_id, healthy):
        event = broker.append(stream_id, "x")
        assert await healthy.next() == event
        await broken.gap()  # told to re-read instead


async def test_a_lost_message_and_a_dropped_connection_are_followed_by_gap_signals(
    broker: MemoryBroker,
) -> None:
    stream_id = running(broker)
    recorder = Recorder()
    async with broker.subscribe(stream_id, recorder):
        broker.source.lose_next(keys.live_channel(stream_id))
        broker.append(stream_id, "lost")
        await recorder.gap()
        broker.source.go_down()
        await recorder.gap()  # at the loss
        with pytest.raises(RedisConnectionError):  # new subscribers fail at once meanwhile
            async with broker.subscribe(stream_id, Recorder()):
                pass
        broker.source.come_back()
        await recorder.gap()  # once the channel is active again: a re-read now misses nothing
        event = broker.append(stream_id, "after")
        assert await recorder.next() == event


async def test_a_quiet_stream_gets_an_idle_resync_and_a_busy_one_does_not() -> None:
    broker = MemoryBroker(idle_resync=0.2)
    broker.start()
    try:
        quiet, busy = running(broker), running(broker)
        quiet_recorder, busy_recorder = Recorder(), Recorder()
        async with (broker.subscribe(quiet, quiet_recorder),
                    broker.subscribe(busy, busy_recorder)):
            async with asyncio.timeout(5):
                resyncs = 0
                while resyncs < 2:  # the busy stream keeps talking meanwhile
                    broker.append(busy, ".")
                    await busy_recorder.next()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(quiet_recorder.gap(), 0.02)
                        resyncs += 1
            assert busy_recorder.gaps == 0
    finally:
        await broker.close()


async def test_subscribers_cancelled_at_any_point_leave_nothing_behind(
    broker: MemoryBroker,
) -> None:
    await cancellation_storm(broker.hub, [running(broker) for _ in range(8)])
    # The commander catches up with the hang-ups.
    await until(lambda: not broker.hub.redis_channels and not broker.source.wanted)
    assert broker.hub.subscribers == 0 and broker.hub.channels == 0
    recorder = Recorder()  # still working: a new subscriber is confirmed and fed
    stream_id = running(broker)
    async with broker.subscribe(stream_id, recorder):
        event = broker.append(stream_id, "y")
        assert await recorder.next() == event
