"""A live subscriber that records what the hub gives it, for tests of the hub and brokers."""

from __future__ import annotations

import asyncio
import random

from tokenwire.edge.hub import Hub
from tokenwire.events import Event


class Recorder:
    """Collects events and gap signals; ``next`` waits for the next event."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.gaps = 0
        self._changed = asyncio.Event()

    def on_event(self, event: Event) -> None:
        self.events.append(event)
        self._changed.set()

    def on_gap(self) -> None:
        self.gaps += 1
        self._changed.set()

    async def next(self, seconds: float = 5.0) -> Event:
        """The first event not yet taken (waits for it)."""
        async with asyncio.timeout(seconds):
            while not self.events:
                self._changed.clear()
                await self._changed.wait()
        return self.events.pop(0)

    async def gap(self, seconds: float = 5.0) -> None:
        """Wait until a gap signal has arrived (and count it as taken)."""
        async with asyncio.timeout(seconds):
            while not self.gaps:
                self._changed.clear()
                await self._changed.wait()
        self.gaps -= 1


async def cancellation_storm(hub: Hub, stream_ids: list[str], rounds: int = 5,
                             subscribers: int = 200) -> None:
    """Rounds of concurrent subscribers, most cancelled at a random moment:
    while their subscription waits for confirmation, while they hold it, or
    while they leave."""

    async def subscriber(stream_id: str) -> None:
        async with hub.subscribe(stream_id, Recorder()):
            await asyncio.sleep(random.uniform(0, 0.01))

    for _ in range(rounds):
        tasks = [asyncio.create_task(subscriber(random.choice(stream_ids)))
                 for _ in range(subscribers)]
        await asyncio.sleep(random.uniform(0, 0.02))
        for task in tasks:
            if random.random() < 0.7:
                task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
