"""Every Lua script the code registers keeps its keys on one Cluster slot.

A script whose keys span slots is refused by a cluster (``CROSSSLOT``) — or
worse, works on standalone Redis and fails the day a deployment moves to a
cluster. Each script is run here, with the arguments the code gives it, on
the standalone Valkey while ``MONITOR`` records what the server executed;
every recorded call's keys are then checked with ``CLUSTER KEYSLOT`` on a
real cluster node. The run must cover every script the stores register,
and the stores must be every place that registers one.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest
from redis.asyncio import Redis
from redis.commands.core import AsyncScript

from tests.support.streams import new_job
from tests.support.valkey_cluster import ValkeyCluster
from tokenwire.apikeys import KeySpec, KeyStore
from tokenwire.conversations import ConversationStore, new_message_id
from tokenwire.events import dumps
from tokenwire.limits import KeyLimiter
from tokenwire.redis_client import RedisClient
from tokenwire.settings import Settings
from tokenwire.store import Attempt, PendingEvent, StreamStore

ROOT = Path(__file__).resolve().parents[2]


class Monitor:
    """Every ``EVALSHA``/``EVAL`` the server executes: (sha or body, keys)."""

    def __init__(self, url: str) -> None:
        self._client = Redis.from_url(url, decode_responses=True)
        self.calls: list[tuple[str, list[str]]] = []
        self._task: asyncio.Task[None] | None = None
        self._started = asyncio.Event()

    async def __aenter__(self) -> Monitor:
        self._task = asyncio.create_task(self._watch())
        await self._started.wait()
        return self

    async def __aexit__(self, *_: object) -> None:
        await asyncio.sleep(0.2)  # the last commands reach the monitor
        assert self._task is not None
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        await self._client.aclose()

    async def _watch(self) -> None:
        async with self._client.monitor() as monitor:
            self._started.set()
            while True:
                command = await monitor.next_command()
                self._record(str(command["command"]))

    def _record(self, line: str) -> None:
        # "EVALSHA <sha> <numkeys> <key>... <arg>...": keys never hold spaces.
        parts = line.split(" ")
        if parts[0].upper() in ("EVALSHA", "EVAL") and len(parts) > 2:
            count = int(parts[2])
            self.calls.append((parts[1], parts[3:3 + count]))


@pytest.fixture
def registered(redis: RedisClient, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The scripts registered on ``redis`` from now on: sha -> source."""
    found: dict[str, str] = {}
    original = redis.register_script

    def recording(script: str) -> AsyncScript:
        registered_script = original(script)
        found[registered_script.sha] = script
        return registered_script

    monkeypatch.setattr(redis, "register_script", recording)
    return found


async def run_every_script(redis: RedisClient, settings: Settings) -> None:
    """Each script once, as the edge and the worker call it."""
    store = StreamStore(redis, settings)
    limiter = KeyLimiter(redis, settings, store.batcher)
    conversations = ConversationStore(redis, settings)
    record, _ = await KeyStore(redis).create(KeySpec(
        tenant="acme", max_running=5, requests_per_minute=5, tokens_per_minute=1000,
        max_connections=5))
    job = new_job(tenant="acme", key_id=record.key_id)
    await store.create(job, None, "fp", admission=limiter)  # admit, enqueue
    attempt = await store.begin(job, "1-0", "w1")  # begin
    assert isinstance(attempt, Attempt)
    limiter.spend(record.key_id, 2)  # spend
    await store.append(attempt, 2, [PendingEvent("token", dumps({"content": "hi"}), "hi")])
    await store.touch([job.stream_id])  # touch
    await limiter.open_connection(record.key_id)  # connect
    await store.cancel(job.stream_id, "acme")  # cancel
    await store.append(attempt, 3, [PendingEvent("done", dumps({"finish_reason": "stop"}))],
                       final_status="done")  # append (allow-oom)
    await conversations.create("acme", "chat-1", record.key_id)
    stream_id = new_job().stream_id
    await conversations.begin_turn("acme", "chat-1", stream_id=stream_id,
                                   message_id=new_message_id(), user_message=None)
    await conversations.end_turn("acme", "chat-1", stream_id, "done", content="ok")


def script_name(source: str) -> str:
    """The ``scripts/*.lua`` file a registered script was made from."""
    files = sorted((ROOT / "shared" / "tokenwire" / "scripts").glob("*.lua"))
    names = [f.stem for f in files if "prelude" not in f.stem and f.read_text() in source]
    return names[0] if names else source[:60]


async def test_every_script_keeps_its_keys_on_one_slot(
    redis: RedisClient, settings: Settings, registered: dict[str, str],
    valkey_cluster: ValkeyCluster
) -> None:
    async with Monitor(settings.redis_url) as monitor:
        await run_every_script(redis, settings)
    assert registered, "no script was registered"
    run = {sha for sha, _ in monitor.calls}
    missing = [script_name(source) for sha, source in registered.items() if sha not in run]
    assert not missing, f"scripts never run here: {missing}"
    with valkey_cluster.nodes[0].client() as node:
        for sha, script_keys in monitor.calls:
            assert script_keys, f"script {sha[:8]} has no keys: a cluster cannot route it"
            slots = {node.execute_command("CLUSTER", "KEYSLOT", key) for key in script_keys}
            assert len(slots) == 1, f"script {sha[:8]} spans slots: {script_keys}"


def test_the_stores_are_every_place_that_registers_a_script() -> None:
    """A new ``register_script`` elsewhere must join ``run_every_script``."""
    places = {str(path.relative_to(ROOT)): len(re.findall(r"register_script\(", path.read_text()))
              for folder in ("shared", "services") for path in (ROOT / folder).rglob("*.py")}
    assert {path: count for path, count in places.items() if count} == {
        "shared/tokenwire/store.py": 6, "shared/tokenwire/limits.py": 3,
        "shared/tokenwire/conversations.py": 3}
