"""A supervised task that fails is logged and restarted; cancelling stops it."""

from __future__ import annotations

import asyncio

import pytest

from tokenwire import supervision
from tokenwire.supervision import start_supervised


async def test_a_failing_task_is_logged_and_restarted(caplog: pytest.LogCaptureFixture,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(supervision, "FIRST_PAUSE", 0.001)
    runs = 0

    async def flaky() -> None:
        nonlocal runs
        runs += 1
        if runs < 3:
            raise ValueError(f"bad message {runs}")

    await asyncio.wait_for(supervision.supervised("flaky", flaky), 5)
    assert runs == 3
    failures = [r for r in caplog.records if r.name == "tokenwire.supervision"]
    assert len(failures) == 2 and failures[0].exc_info is not None
    assert "flaky" in failures[0].getMessage()


async def test_cancelling_a_supervised_task_stops_it() -> None:
    started = asyncio.Event()

    async def forever() -> None:
        started.set()
        await asyncio.Event().wait()

    task = start_supervised("forever", forever)
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_a_background_loop_that_swallows_its_cancel_still_stops() -> None:
    """As redis-py can, mid-command: the cancel is caught and the call retried."""
    turning = asyncio.Event()

    async def stubborn() -> None:
        while background.running:
            turning.set()
            try:
                await asyncio.sleep(0.01)
            except asyncio.CancelledError:
                asyncio.current_task().uncancel()  # type: ignore[union-attr]

    background = supervision.Background("stubborn", stubborn)
    background.start()
    await turning.wait()
    await asyncio.wait_for(background.close(), 5)
    assert not background.running
