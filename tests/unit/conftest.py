"""Fixtures of the fast tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tokenwire.edge.memory_broker import MemoryBroker


@pytest.fixture
async def broker() -> AsyncIterator[MemoryBroker]:
    """An in-memory broker, started (no idle resync unless a test makes its own)."""
    broker = MemoryBroker(idle_resync=3600)
    broker.start()
    yield broker
    await broker.close()
