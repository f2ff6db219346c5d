"""Redis key and channel names: the only place that formats them.

Every per-stream key carries the stream id in a hash tag (``{...}``) so that one
stream's keys and its live channel share a Redis Cluster slot. Only
server-generated ids ever become part of a key.
"""

from __future__ import annotations

import hashlib
import re
import secrets

JOBS = "tw:jobs"
DEAD_JOBS = "tw:jobs:dead"
WORKERS_GROUP = "workers"
CANCEL_CHANNEL = "tw:cancel"

_STREAM_ID = re.compile(r"^[A-Za-z0-9_-]{22}$")


def new_stream_id() -> str:
    """128 random bits, URL-safe, 22 characters."""
    return secrets.token_urlsafe(16)


def is_stream_id(value: str) -> bool:
    return bool(_STREAM_ID.fullmatch(value))


def new_epoch() -> str:
    """One incarnation of a stream; 60 random bits, no dot (the cursor separator)."""
    return secrets.token_hex(6)[:11]


def events(stream_id: str) -> str:
    return f"tw:{{{stream_id}}}:events"


def meta(stream_id: str) -> str:
    return f"tw:{{{stream_id}}}:meta"


def text(stream_id: str) -> str:
    """The epoch's text so far, appended in the same script call as its events."""
    return f"tw:{{{stream_id}}}:text"


def live_channel(stream_id: str) -> str:
    """Sharded pub/sub channel on which every appended event is published."""
    return f"tw:{{{stream_id}}}:live"


def stream_keys(stream_id: str) -> list[str]:
    """The KEYS argument of every per-stream script, in script order."""
    return [meta(stream_id), events(stream_id), text(stream_id), live_channel(stream_id)]


def idempotency(client_key: str) -> str:
    """A client's Idempotency-Key, hashed: client text never becomes part of a key."""
    digest = hashlib.sha256(client_key.encode()).hexdigest()
    return f"tw:idem:{digest}"
