"""API keys: a tenant's credentials, stored hashed in Redis.

A key reads ``twk_<key id>_<secret>``. The key id is public (listings, logs,
limit counters); the secret is 256 random bits, shown once when the key is
created. Redis keeps only the secret's SHA-256, compared in constant time: for
a high-entropy random secret a fast hash is the right storage (there is no
dictionary to brute-force; bcrypt-style slowness protects low-entropy
passwords, and would cost every request tens of milliseconds) — GitHub's and
Stripe's API keys work this way. Every edge reads the same records, so a
revocation reaches all of them within their lookup cache
(``key_cache_seconds``).

Used by the edge (admin API, request authentication) and by ``tokenwire keys``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any, cast

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

from tokenwire import keys
from tokenwire.jobs import ModelName, json_integer
from tokenwire.redis_client import RedisClient

KEY_PREFIX = "twk_"
TENANT_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
_SECRET = re.compile(r"^[A-Za-z0-9_-]{43}$")  # 32 bytes, URL-safe base64 without padding

Tenant = Annotated[str, StringConstraints(pattern=TENANT_PATTERN)]
Limit = Annotated[int, Field(ge=1, le=1_000_000_000)]

#: The limits a key may carry, in the order the admin API and the CLI show them.
LIMIT_FIELDS = ("max_running", "requests_per_minute", "tokens_per_minute", "max_connections")


class KeySpec(BaseModel):
    """What an operator asks for (``POST /v1/admin/keys``, ``tokenwire keys create``).
    A limit left out is no limit."""

    model_config = ConfigDict(extra="forbid")

    tenant: Tenant
    models: list[ModelName] | None = Field(None, min_length=1, max_length=100)
    max_running: Limit | None = None
    requests_per_minute: Limit | None = None
    tokens_per_minute: Limit | None = None
    max_connections: Limit | None = None

    _json_integers = field_validator(*LIMIT_FIELDS, mode="before")(json_integer)


@dataclass(frozen=True, slots=True)
class ApiKey:
    """One key's record (never its secret)."""

    key_id: str
    tenant: str
    secret_sha256: str
    created_at_ms: int
    models: tuple[str, ...] | None = None
    max_running: int | None = None
    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None
    max_connections: int | None = None

    def allows_model(self, model: str) -> bool:
        return self.models is None or model in self.models

    def public(self) -> dict[str, Any]:
        """What the admin API and the CLI show: everything but the hash."""
        return {
            "key_id": self.key_id, "tenant": self.tenant,
            "models": list(self.models) if self.models is not None else None,
            **{name: getattr(self, name) for name in LIMIT_FIELDS},
            "created_at_ms": self.created_at_ms,
        }

    def fields(self) -> dict[str, str | int]:
        """The record's hash fields (the limit scripts read them by these names)."""
        record: dict[str, str | int] = {
            "tenant": self.tenant, "sha256": self.secret_sha256, "created_at": self.created_at_ms,
        }
        if self.models is not None:
            record["models"] = json.dumps(list(self.models))
        for name in LIMIT_FIELDS:
            if (value := getattr(self, name)) is not None:
                record[name] = value
        return record

    @classmethod
    def from_hash(cls, key_id: str, raw: dict[str, str]) -> ApiKey:
        limits = {name: int(raw[name]) for name in LIMIT_FIELDS if name in raw}
        models = tuple(json.loads(raw["models"])) if "models" in raw else None
        return cls(key_id=key_id, tenant=raw["tenant"], secret_sha256=raw["sha256"],
                   created_at_ms=int(raw.get("created_at", 0)), models=models, **limits)


def parse_key(presented: str) -> tuple[str, str] | None:
    """``twk_<key id>_<secret>`` → (key id, secret); None for anything else.
    Only a key id that matches its pattern is ever used to build a Redis key."""
    if not presented.startswith(KEY_PREFIX):
        return None
    key_id, _, secret = presented[len(KEY_PREFIX):].partition("_")
    if not keys.is_key_id(key_id) or not _SECRET.fullmatch(secret):
        return None
    return key_id, secret


def _sha256(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class KeyStore:
    def __init__(self, redis: RedisClient) -> None:
        self._redis = redis

    async def create(self, spec: KeySpec) -> tuple[ApiKey, str]:
        """A new key for ``spec.tenant``; returns its record and the key itself
        (the only time it exists outside the caller's hands)."""
        key_id, secret = keys.new_key_id(), secrets.token_urlsafe(32)
        record = ApiKey(
            key_id=key_id, tenant=spec.tenant, secret_sha256=_sha256(secret),
            created_at_ms=int(time.time() * 1000),
            models=tuple(spec.models) if spec.models is not None else None,
            **{name: getattr(spec, name) for name in LIMIT_FIELDS},
        )
        # Listed first: a record without a listing could not be found to revoke.
        await self._redis.sadd(keys.API_KEYS, key_id)
        await self._redis.hset(keys.api_key(key_id), mapping=record.fields())  # type: ignore[arg-type]
        return record, f"{KEY_PREFIX}{key_id}_{secret}"

    async def get(self, key_id: str) -> ApiKey | None:
        if not keys.is_key_id(key_id):
            return None
        raw = cast(dict[str, str], await self._redis.hgetall(keys.api_key(key_id)))
        return ApiKey.from_hash(key_id, raw) if raw else None

    async def verify(self, presented: str) -> ApiKey | None:
        """The key's record if ``presented`` is a valid, unrevoked key."""
        return await verify(presented, self.get)

    async def list(self) -> list[ApiKey]:
        key_ids = sorted(cast(set[str], await self._redis.smembers(keys.API_KEYS)))
        async with self._redis.pipeline(transaction=False) as pipe:
            for key_id in key_ids:
                pipe.hgetall(keys.api_key(key_id))
            raws = cast(list[dict[str, str]], await pipe.execute())
        records = [ApiKey.from_hash(key_id, raw)
                   for key_id, raw in zip(key_ids, raws, strict=True) if raw]
        return sorted(records, key=lambda record: (record.created_at_ms, record.key_id))

    async def revoke(self, key_id: str) -> bool:
        """Delete the key and its counters; False if there was no such key."""
        if not keys.is_key_id(key_id):
            return False
        async with self._redis.pipeline(transaction=True) as pipe:  # one slot
            pipe.exists(keys.api_key(key_id))
            pipe.delete(*keys.key_limit_keys(key_id))
            existed, _ = await pipe.execute()
        listed = await self._redis.srem(keys.API_KEYS, key_id)
        return bool(existed or listed)


async def verify(presented: str, lookup: Callable[[str], Awaitable[ApiKey | None]]
                 ) -> ApiKey | None:
    """The record ``lookup`` finds for ``presented``'s key id, if its secret
    matches (SHA-256, compared in constant time)."""
    parsed = parse_key(presented)
    if parsed is None:
        return None
    record = await lookup(parsed[0])
    if record is None or not hmac.compare_digest(_sha256(parsed[1]), record.secret_sha256):
        return None
    return record
