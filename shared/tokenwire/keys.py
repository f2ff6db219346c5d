"""Redis key and channel names: the only place that formats them.

Every per-stream key carries the stream id in a hash tag (``{...}``) so that one
stream's keys and its live channel share a Redis Cluster slot; every per-API-key
key (its record and its limit counters) carries the key id the same way, so
one script can check and count a key's limits atomically. Only server-generated
ids (checked against their pattern) ever become part of a key; client text
(an ``Idempotency-Key``, a tenant name) is hashed first.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import zlib
from functools import cache

from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot

#: The single job stream of versions before the partitioned queue: workers
#: still drain it (and its dead letters stay where they are).
LEGACY_JOBS = "tw:jobs"
LEGACY_DEAD_JOBS = "tw:jobs:dead"
WORKERS_GROUP = "workers"
CANCEL_CHANNEL = "tw:cancel"
#: Broadcast on each enqueue (the partition's number): idle workers read it.
JOBS_WAKE_CHANNEL = "tw:jobs:wake"

#: Every API key's id, for listing (a set on its own slot; the records are per key).
API_KEYS = "tw:keys"

# --- operations (the console and its admin API) ------------------------------------------

#: Sorted set of unfinished streams (queued or running), scored by creation time
#: (ms): added before the job is enqueued, removed once the stream ended.
ACTIVE_STREAMS = "tw:streams:active"
#: Stream (capped) of what operators should see: restarts, resets, errors, dead
#: letters, admin actions.
OPS_JOURNAL = "tw:ops:journal"
#: Hash: dead-letter entry id -> the stream id its replay created (a replay
#: happens once), for the legacy ``tw:jobs:dead``; each partition has its own
#: (``dead_replays``).
DEAD_REPLAYS = "tw:jobs:dead:replays"
#: Set while an operator's console is open (with a short expiry): edges report
#: their viewers only then.
CONSOLE_OPEN = "tw:console:open"
#: Sorted set of edges (their census ids), scored by when each last reported (ms).
EDGES = "tw:edges"
_EDGE_ID = re.compile(r"^[a-f0-9]{16}$")


def new_edge_id() -> str:
    """An edge process's id in the viewer census: 64 random bits in hex."""
    return secrets.token_hex(8)


def is_edge_id(value: str) -> bool:
    return bool(_EDGE_ID.fullmatch(value))


def edge_report(edge_id: str) -> str:
    """One edge's census (a hash: its address, and viewers per stream), expiring."""
    return f"tw:edge:{{{edge_id}}}:census"

_STREAM_ID = re.compile(r"^[A-Za-z0-9_-]{22}$")
_CONVERSATION_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_KEY_ID = re.compile(r"^[a-z0-9]{16}$")


# --- the job queue ----------------------------------------------------------------------


def job_partition_of(stream_id: str, partitions: int) -> int:
    """The partition a stream's job goes to, from its id alone: a job enqueued
    twice (a retry whose reply was lost) lands twice in the same stream, where
    ``begin`` runs it once."""
    return zlib.crc32(stream_id.encode()) % partitions


@cache
def _partition_tag(partition: int, partitions: int) -> str:
    """A hash tag whose slot lies in the ``partition``-th of ``partitions``
    equal slot ranges: the partitions spread evenly over any cluster whose
    masters hold contiguous ranges (the usual layout)."""
    low = partition * REDIS_CLUSTER_HASH_SLOTS // partitions
    high = (partition + 1) * REDIS_CLUSTER_HASH_SLOTS // partitions
    salt = 0
    while not low <= key_slot(f"p{partition}-{salt}".encode()) < high:
        salt += 1
    return f"p{partition}-{salt}"


def job_stream(partition: int, partitions: int) -> str:
    """One partition of the job queue (a stream with the group ``workers``)."""
    return f"tw:jobs:{{{_partition_tag(partition, partitions)}}}"


def dead_jobs(partition: int, partitions: int) -> str:
    """The dead letters of one partition (same slot as its stream)."""
    return f"tw:jobs:{{{_partition_tag(partition, partitions)}}}:dead"


def dead_replays(partition: int, partitions: int) -> str:
    """Hash: one partition's dead-letter entry id -> the stream its replay
    created (same slot as its dead letters)."""
    return f"tw:jobs:{{{_partition_tag(partition, partitions)}}}:dead:replays"


# --- streams ----------------------------------------------------------------------------


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


def idempotency(client_key: str, tenant: str | None = None) -> str:
    """A client's Idempotency-Key, scoped to its tenant and hashed: the same key
    from two tenants names two streams, and client text never becomes a key."""
    scoped = client_key if tenant is None else f"{tenant}\n{client_key}"
    digest = hashlib.sha256(scoped.encode()).hexdigest()
    return f"tw:idem:{digest}"


# --- conversations ----------------------------------------------------------------------


def new_conversation_id() -> str:
    """Server-chosen conversation ids look like stream ids (clients may choose their own)."""
    return secrets.token_urlsafe(16)


def is_conversation_id(value: str) -> bool:
    """A client-chosen conversation id: ``[A-Za-z0-9_-]{1,64}``."""
    return bool(_CONVERSATION_ID.fullmatch(value))


def _conversation_tag(tenant: str | None, conversation_id: str) -> str:
    """Conversation ids are chosen by clients and scoped to a tenant: the hash
    tag is a digest of both, so the same id of two tenants names two records
    and client text never becomes part of a key."""
    return hashlib.sha256(f"{tenant or ''}\n{conversation_id}".encode()).hexdigest()[:32]


def conversation_keys(tenant: str | None, conversation_id: str) -> list[str]:
    """The KEYS of every conversation script, in script order: the record (a
    hash: tenant, active turn, ...) and its messages (a list of JSON); one
    hash tag, so one Cluster slot."""
    tag = _conversation_tag(tenant, conversation_id)
    return [f"tw:conv:{{{tag}}}", f"tw:conv:{{{tag}}}:messages"]


# --- API keys ---------------------------------------------------------------------------


def new_key_id() -> str:
    """80 random bits in base36-ish lowercase: public, shown in listings and logs."""
    alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
    return "".join(secrets.choice(alphabet) for _ in range(16))


def is_key_id(value: str) -> bool:
    return bool(_KEY_ID.fullmatch(value))


def api_key(key_id: str) -> str:
    """The key's record: tenant, secret hash, limits."""
    return f"tw:key:{{{key_id}}}"


def key_running(key_id: str) -> str:
    """Sorted set of the key's unfinished streams, scored by when the slot expires."""
    return f"tw:key:{{{key_id}}}:running"


def key_requests(key_id: str) -> str:
    """Sorted set of the key's creations in the last minute, scored by time."""
    return f"tw:key:{{{key_id}}}:requests"


def key_tokens(key_id: str) -> str:
    """Tokens generated for the key in the current one-minute window (expires with it)."""
    return f"tw:key:{{{key_id}}}:tokens"


def key_connections(key_id: str) -> str:
    """Sorted set of open delivery connections on the key's streams, scored by expiry."""
    return f"tw:key:{{{key_id}}}:conns"


def key_limit_keys(key_id: str) -> list[str]:
    """The KEYS argument of every per-API-key script, in script order."""
    return [api_key(key_id), key_running(key_id), key_requests(key_id), key_tokens(key_id),
            key_connections(key_id)]
