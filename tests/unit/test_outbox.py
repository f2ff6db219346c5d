"""The per-connection outbox: merging, backpressure, slow consumers."""

from __future__ import annotations

import asyncio

import pytest

from tokenwire.edge.outbox import Outbox, SlowConsumer
from tokenwire.events import Event, dumps


def token(seq: int, content: str, epoch: str = "e") -> Event:
    return Event(epoch, seq, "token", dumps({"content": content}))


async def test_queued_tokens_merge_into_one_frame_with_the_last_cursor() -> None:
    outbox = Outbox(max_chars=10_000, slow_after=1)
    await outbox.put(Event("e", 1, "start", "{}"))
    for seq, text in enumerate(["a", "\r\n", "🚀", " b"], start=2):
        await outbox.put(token(seq, text))
    await outbox.put(Event("e", 6, "done", "{}"))
    frames = await outbox.take()
    assert [(f.type, f.seq) for f in frames] == [("start", 1), ("token", 5), ("done", 6)]
    assert frames[1].payload() == {"content": "a\r\n🚀 b"}
    assert outbox.merged == 3


async def test_tokens_of_different_epochs_never_merge() -> None:
    outbox = Outbox(max_chars=10_000, slow_after=1)
    await outbox.put(token(2, "old", epoch="e1"))
    await outbox.put(Event("e2", 0, "reset", dumps({"reason": "x", "epoch": "e2"})))
    await outbox.put(token(2, "new", epoch="e2"))
    assert len(outbox) == 3


async def test_a_full_outbox_waits_for_the_writer() -> None:
    outbox = Outbox(max_chars=30, slow_after=5)
    await outbox.put(Event("e", 1, "start", dumps({"pad": "x" * 40})))  # over the budget
    putter = asyncio.create_task(outbox.put(Event("e", 2, "done", "{}")))
    await asyncio.sleep(0.05)
    assert not putter.done(), "put must wait while the client is behind"
    assert [e.type for e in await outbox.take()] == ["start"]
    await asyncio.wait_for(putter, 1)
    assert [e.type for e in await outbox.take()] == ["done"]


async def test_a_client_stuck_too_long_is_a_slow_consumer() -> None:
    outbox = Outbox(max_chars=30, slow_after=0.1)
    await outbox.put(Event("e", 1, "start", dumps({"pad": "x" * 40})))
    with pytest.raises(SlowConsumer):
        await outbox.put(Event("e", 2, "done", "{}"))


async def test_a_failed_producer_surfaces_at_the_next_take() -> None:
    outbox = Outbox(max_chars=100, slow_after=1)
    await outbox.put(token(2, "queued"))
    outbox.fail(SlowConsumer())
    with pytest.raises(SlowConsumer):
        await outbox.take()


async def test_a_long_backlog_merges_into_one_exact_frame() -> None:
    outbox = Outbox(max_chars=10**7, slow_after=1)
    pieces = [f"{i}\r\n🚀 " for i in range(5000)]
    for seq, piece in enumerate(pieces, start=2):
        await outbox.put(token(seq, piece))
    [frame] = await outbox.take()
    assert frame.seq == 5001 and frame.payload() == {"content": "".join(pieces)}
    assert outbox.merged == 4999
