"""A subscriber's live feed: bounded, lag-aware, with the direct hot path."""

from __future__ import annotations

import asyncio

from tokenwire.edge.subscription import Subscription
from tokenwire.events import Event


def token(seq: int) -> Event:
    return Event("e", seq, "token", '{"content":"x"}')


async def test_a_waiting_reader_gets_events_in_order() -> None:
    live = Subscription("s", maxsize=8)
    reader = asyncio.create_task(live.get(quiet_after=5))
    await asyncio.sleep(0)
    live.deliver(token(1))
    live.deliver(token(2))
    assert await reader == token(1)
    assert await live.get(quiet_after=5) == token(2)


async def test_a_quiet_feed_answers_none_without_lagging() -> None:
    live = Subscription("s", maxsize=8)
    assert await live.get(quiet_after=0.05) is None
    assert not live.lagged


async def test_an_overflow_drops_the_backlog_and_says_lagged_until_recovered() -> None:
    live = Subscription("s", maxsize=2)
    for seq in (1, 2, 3):
        live.deliver(token(seq))
    assert live.lagged
    assert await live.get(quiet_after=1) is None  # "re-read Redis", not a stale event
    live.deliver(token(4))  # ignored while lagged: the reader will read Redis
    live.recover()
    live.deliver(token(5))
    assert await live.get(quiet_after=1) == token(5)


async def test_the_direct_path_takes_what_it_accepts_and_nothing_else() -> None:
    live = Subscription("s", maxsize=8)
    taken: list[Event] = []
    def take_odd(event: Event) -> bool:
        if event.seq % 2 == 0:
            return False
        taken.append(event)
        return True

    live.direct = take_odd
    for seq in (1, 2, 3):
        live.deliver(token(seq))
    assert taken == [token(1)]  # 3 must queue behind 2: order is kept
    assert await live.get(quiet_after=1) == token(2)
    assert await live.get(quiet_after=1) == token(3)
