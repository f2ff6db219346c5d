"""Script calls of one loop iteration share a round trip, each with its own outcome."""

from __future__ import annotations

import asyncio

from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from tokenwire.pipelining import ScriptBatcher

INCR = "return redis.call('INCRBY', KEYS[1], ARGV[1])"
FAIL = "return redis.error_reply('boom ' .. KEYS[1])"


async def test_calls_made_together_go_in_one_round_trip(redis: Redis) -> None:
    batcher = ScriptBatcher(redis)
    incr = redis.register_script(INCR)
    await redis.script_load(INCR)  # as services do at startup
    replies = await asyncio.gather(*(batcher.call(incr, [f"k{i}"], [i]) for i in range(20)))
    assert replies == list(range(20))
    assert batcher.round_trips == 1
    assert await redis.mget([f"k{i}" for i in range(20)]) == [str(i) for i in range(20)]


async def test_one_failing_call_fails_alone(redis: Redis) -> None:
    batcher = ScriptBatcher(redis)
    incr, fail = redis.register_script(INCR), redis.register_script(FAIL)
    await redis.script_load(FAIL)
    outcomes = await asyncio.gather(batcher.call(incr, ["a"], [1]), batcher.call(fail, ["b"], []),
                                    batcher.call(incr, ["c"], [2]), return_exceptions=True)
    assert outcomes[0] == 1 and outcomes[2] == 2
    assert isinstance(outcomes[1], ResponseError) and "boom b" in str(outcomes[1])


async def test_scripts_redis_forgot_are_loaded_once_and_the_calls_resent_together(
    redis: Redis
) -> None:
    batcher = ScriptBatcher(redis)
    incr = redis.register_script(INCR)
    await redis.script_flush()
    replies = await asyncio.gather(*(batcher.call(incr, [f"k{i}"], [i]) for i in range(20)))
    assert replies == list(range(20))
    assert batcher.round_trips == 3  # the refused pipeline, one SCRIPT LOAD, the resend


async def test_a_lost_round_trip_fails_every_call_in_it(redis: Redis) -> None:
    dead = Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.5)  # nothing listens
    batcher = ScriptBatcher(dead)
    incr = redis.register_script(INCR)
    outcomes = await asyncio.gather(*(batcher.call(incr, [f"k{i}"], [1]) for i in range(3)),
                                    return_exceptions=True)
    assert all(isinstance(o, RedisConnectionError) for o in outcomes)
    assert batcher.round_trips == 1
    await dead.aclose()
