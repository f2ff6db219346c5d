"""The operations journal: what an operator should see, most recent last.

A capped Redis stream (``tw:ops:journal``) of rare, notable happenings —
a generation restarted (its clients get ``reset``), Redis lost a stream, a
stream ended with ``error``, a job was dead-lettered, an operator cancelled a
stream or replayed a dead letter. Workers and edges write it; the console
reads it (``GET /v1/admin/journal``). Writing is best effort: the journal is
telemetry, and a failed write is logged, never retried or raised — a
generation must not wait on it.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Literal, cast

from redis.exceptions import RedisError

from tokenwire import keys
from tokenwire.redis_client import TRANSPORT_ERRORS, RedisClient

log = logging.getLogger(__name__)

#: Entries kept (approximately: ``MAXLEN ~``).
MAX_ENTRIES = 1000

Kind = Literal["restart", "lost", "error", "dead_letter", "cancel", "replay"]


@dataclass(frozen=True, slots=True)
class Entry:
    id: str
    at_ms: int
    kind: str
    stream_id: str
    detail: dict[str, str]

    def public(self) -> dict[str, object]:
        return {"id": self.id, "at_ms": self.at_ms, "kind": self.kind,
                "stream_id": self.stream_id, **self.detail}


class Journal:
    def __init__(self, redis: RedisClient) -> None:
        self._redis = redis

    async def record(self, kind: Kind, stream_id: str, **detail: str | int) -> None:
        fields: dict[str, str | int] = {"kind": kind, "stream_id": stream_id,
                                        "at": int(time.time() * 1000), **detail}
        try:
            await self._redis.xadd(keys.OPS_JOURNAL, fields,  # type: ignore[arg-type]
                                   maxlen=MAX_ENTRIES, approximate=True)
        except (*TRANSPORT_ERRORS, RedisError) as exc:
            log.warning("could not write the operations journal: %s", exc,
                        extra={"stream_id": stream_id, "kind": kind})

    async def recent(self, count: int) -> list[Entry]:
        """The last ``count`` entries, newest first."""
        entries = cast(list[tuple[str, dict[str, str]]],
                       await self._redis.xrevrange(keys.OPS_JOURNAL, count=count))
        recent = []
        for entry_id, fields in entries:
            detail = {k: v for k, v in fields.items() if k not in ("kind", "stream_id", "at")}
            recent.append(Entry(entry_id, int(fields.get("at", 0)), fields.get("kind", ""),
                                fields.get("stream_id", ""), detail))
        return recent
