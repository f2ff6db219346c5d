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
