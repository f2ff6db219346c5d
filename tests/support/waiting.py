"""Waiting for a condition another process brings about (bounded, polled)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable


async def eventually(check: Callable[[], Awaitable[bool]], seconds: float,
                     interval: float = 0.05) -> None:
    """Return once ``check()`` is true; ``TimeoutError`` after ``seconds``."""
    async with asyncio.timeout(seconds):
        while True:
            if await check():
                return
            await asyncio.sleep(interval)


async def until(condition: Callable[[], bool], seconds: float = 5.0,
                interval: float = 0.01) -> None:
    """Return once ``condition()`` holds (state this process changes, such as
    a hub's subscriber count); ``TimeoutError`` after ``seconds``."""

    async def check() -> bool:
        return condition()

    await eventually(check, seconds, interval)
