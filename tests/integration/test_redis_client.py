"""The process-wide Redis client: commands packed by hiredis reach a real server intact."""

from __future__ import annotations

import pytest
from redis.asyncio import Redis
from redis.exceptions import DataError


async def test_values_of_every_kind_round_trip(redis: Redis) -> None:
    text = 'línea "uno"\r\n\x00 ✓ 🚀'
    await redis.hset("k", mapping={"text": text, "int": 7, "float": 0.25,
                                   "bytes": text.encode()})
    assert await redis.hgetall("k") == {"text": text, "int": "7", "float": "0.25",
                                        "bytes": text}


async def test_a_multi_word_command_name_is_split(redis: Redis) -> None:
    assert "maxclients" in await redis.config_get("maxclients")


async def test_a_value_redis_cannot_store_is_refused_before_sending(redis: Redis) -> None:
    with pytest.raises(DataError):
        await redis.set("k", None)  # type: ignore[arg-type]
    assert await redis.exists("k") == 0
