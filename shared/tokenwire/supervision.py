"""Long-lived background tasks that cannot die silently.

A task that a process depends on for as long as it runs (the edge hub's
listener, the worker's claim refresher, ...) runs under ``supervised``: if it
raises, the error is logged with its traceback and the task starts again after
a short, growing pause. Only cancellation (the owner closing it) stops it; a
task that returns normally is finished. An unexpected error is a bug, but one
bad message or one unforeseen exception must not leave the process serving
while a part of it is dead.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)

#: Pause before the first restart; doubled after each failure that came
#: quickly after the previous start, up to ``MAX_PAUSE``.
FIRST_PAUSE = 0.1
MAX_PAUSE = 5.0
#: A run that lasted this long resets the pause: the failure was not a loop.
STABLE_AFTER = 30.0


async def supervised(name: str, run: Callable[[], Awaitable[None]]) -> None:
    """Run ``run()`` until it returns; restart it, logged, whenever it raises."""
    pause = FIRST_PAUSE
    while True:
        started = time.monotonic()
        try:
            await run()
        except Exception:  # supervision: log every failure, never let the task die
            lasted = time.monotonic() - started
            pause = FIRST_PAUSE if lasted >= STABLE_AFTER else min(pause * 2, MAX_PAUSE)
            log.exception("background task %s failed; restarting in %.1fs", name, pause,
                          extra={"task": name})
            await asyncio.sleep(pause)
            continue
        return


def start_supervised(name: str, run: Callable[[], Awaitable[None]]) -> asyncio.Task[None]:
    """``supervised`` as a task named ``name`` (the caller keeps it and cancels it)."""
    return asyncio.create_task(supervised(name, run), name=name)


class Background:
    """One supervised loop an object owns: ``start`` it, ``close`` it.

    The loop runs ``while background.running``: ``close`` clears that before it
    cancels, because redis-py can swallow a cancel that lands in the middle of
    a command (it reconnects and retries), and a loop that only stops on
    cancel then holds its owner's shutdown forever."""

    def __init__(self, name: str, run: Callable[[], Awaitable[None]]) -> None:
        self._name = name
        self._run = run
        self._task: asyncio.Task[None] | None = None
        self.running = False

    def start(self) -> None:
        self.running = True
        self._task = start_supervised(self._name, self._run)

    async def close(self) -> None:
        self.running = False
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
