"""Script calls of one loop iteration share a round trip (in a cluster: one per
node), each with its own outcome — on standalone Valkey and on a cluster, where
a call also follows its slot when it moves (MOVED) or is being moved (ASK)."""

from __future__ import annotations

import asyncio

import pytest
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.crc import key_slot
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from tests.support.valkey_cluster import SLOT_RANGES, ValkeyCluster
from tokenwire.pipelining import ScriptBatcher
from tokenwire.redis_client import RedisClient

INCR = "return redis.call('INCRBY', KEYS[1], ARGV[1])"
FAIL = "return redis.error_reply('boom ' .. KEYS[1])"


def nodes_serving(redis: RedisClient, keys: list[str]) -> int:
    """The servers these keys live on: one, or their masters in a cluster."""
    if not isinstance(redis, RedisCluster):
        return 1
    slots = {key_slot(key.encode()) for key in keys}
    return len({redis.nodes_manager.get_node_from_slot(slot).name for slot in slots})


@pytest.mark.both_backends
async def test_calls_made_together_go_in_one_round_trip(redis: RedisClient) -> None:
    batcher = ScriptBatcher(redis)
    incr = redis.register_script(INCR)
    await redis.script_load(INCR)  # as services do at startup
    keys = [f"k{i}" for i in range(20)]
    replies = await asyncio.gather(*(batcher.call(incr, [key], [i]) for i, key in enumerate(keys)))
    assert replies == list(range(20))
    assert batcher.round_trips == nodes_serving(redis, keys)
    assert [await redis.get(key) for key in keys] == [str(i) for i in range(20)]


@pytest.mark.both_backends
async def test_one_failing_call_fails_alone(redis: RedisClient) -> None:
    batcher = ScriptBatcher(redis)
    incr, fail = redis.register_script(INCR), redis.register_script(FAIL)
    await redis.script_load(FAIL)
    outcomes = await asyncio.gather(batcher.call(incr, ["a"], [1]), batcher.call(fail, ["b"], []),
                                    batcher.call(incr, ["c"], [2]), return_exceptions=True)
    assert outcomes[0] == 1 and outcomes[2] == 2
    assert isinstance(outcomes[1], ResponseError) and "boom b" in str(outcomes[1])


@pytest.mark.both_backends
async def test_scripts_redis_forgot_are_loaded_once_and_the_calls_resent_together(
    redis: RedisClient
) -> None:
    batcher = ScriptBatcher(redis)
    incr = redis.register_script(INCR)
    await redis.script_flush()
    keys = [f"k{i}" for i in range(20)]
    replies = await asyncio.gather(*(batcher.call(incr, [key], [i]) for i, key in enumerate(keys)))
    assert replies == list(range(20))
    # Per server: the refused pipeline, one SCRIPT LOAD, the resend.
    assert batcher.round_trips == 3 * nodes_serving(redis, keys)


async def test_a_lost_round_trip_fails_every_call_in_it(redis: RedisClient) -> None:
    dead = Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.5)  # nothing listens
    batcher = ScriptBatcher(dead)
    incr = redis.register_script(INCR)
    outcomes = await asyncio.gather(*(batcher.call(incr, [f"k{i}"], [1]) for i in range(3)),
                                    return_exceptions=True)
    assert all(isinstance(o, RedisConnectionError) for o in outcomes)
    assert batcher.round_trips == 1
    await dead.aclose()


# --- a cluster: calls follow their slot ------------------------------------------------


def key_on(first: int, last: int) -> str:
    """A key whose slot lies in ``first..last``."""
    return next(key for key in (f"{{slot-{i}}}n" for i in range(100_000))
                if first <= key_slot(key.encode()) <= last)


@pytest.mark.cluster_only
async def test_a_call_follows_its_slot_to_a_new_master(
    redis: RedisClient, valkey_cluster: ValkeyCluster
) -> None:
    batcher = ScriptBatcher(redis)
    incr = redis.register_script(INCR)
    moving, staying = key_on(*SLOT_RANGES[0]), key_on(*SLOT_RANGES[1])
    assert list(await asyncio.gather(batcher.call(incr, [moving], [1]),
                                     batcher.call(incr, [staying], [1]))) == [1, 1]
    slot = key_slot(moving.encode())
    target = valkey_cluster.node_of_slot(SLOT_RANGES[2][0])
    source = await asyncio.to_thread(valkey_cluster.migrate_slot, slot, target)
    try:  # the client's map still names the source: MOVED, then the target
        assert list(await asyncio.gather(batcher.call(incr, [moving], [1]),
                                         batcher.call(incr, [staying], [1]))) == [2, 2]
    finally:
        await asyncio.to_thread(valkey_cluster.migrate_slot, slot, source)


@pytest.mark.cluster_only
async def test_a_call_in_a_slot_being_migrated_is_asked_at_the_target(
    redis: RedisClient, valkey_cluster: ValkeyCluster
) -> None:
    batcher = ScriptBatcher(redis)
    incr = redis.register_script(INCR)
    key = key_on(*SLOT_RANGES[1])
    await batcher.call(incr, [key], [5])
    slot = key_slot(key.encode())
    target = valkey_cluster.node_of_slot(SLOT_RANGES[0][0])
    source = await asyncio.to_thread(valkey_cluster.start_migration, slot, target)
    try:
        assert await asyncio.to_thread(valkey_cluster.move_keys, slot, source, target) == 1
        # The key is on the target, the slot still on the source: ASK, ASKING.
        assert await batcher.call(incr, [key], [1]) == 6
        with target.client() as node:
            assert node.execute_command("CLUSTER", "COUNTKEYSINSLOT", slot) == 1
    finally:
        await asyncio.to_thread(valkey_cluster.finish_migration, slot, target)
        await asyncio.to_thread(valkey_cluster.migrate_slot, slot, source)
