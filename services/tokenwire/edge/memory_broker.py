"""A broker in process memory: the same semantics as Redis, for fast tests of delivery.

Not a mock: ``MemoryBroker`` keeps streams the way the scripts keep them in
Redis (a new epoch replaces the events and text, ``start`` is seq 1, the
terminal event sets the status, history can be trimmed and expire, a record
can vanish), reads are atomic, and live events travel through the real
``Hub`` over ``MemoryLiveSource``, a ``live.LiveSource`` whose messages arrive
on a later turn of the event loop and which keeps the live source's promise —
every message, or a gap signal after it — including through the faults a test
injects: a lost message, a dropped connection, an outage.

The writing side (``create``, ``begin``, ``append``, ``finish``, …) is what
the worker's scripts do; tests call it to produce a stream.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Collection
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field

from redis.exceptions import ConnectionError as RedisConnectionError

from tokenwire import keys
from tokenwire.edge.hub import Hub, LiveSubscriber
from tokenwire.edge.live import LiveListener
from tokenwire.events import Event, dumps
from tokenwire.store import Page, Snapshot, StreamMeta


class MemoryLiveSource:
    """``live.LiveSource`` in memory, with faults on demand."""

    def __init__(self) -> None:
        self._listener: LiveListener | None = None
        self._wanted: set[str] = set()
        self._up = False
        self._up_event = asyncio.Event()
        self._lose: dict[str, int] = {}  # channel -> messages still to lose

    @property
    def connected(self) -> bool:
        return self._up

    @property
    def wanted(self) -> frozenset[str]:
        return frozenset(self._wanted)

    def start(self, listener: LiveListener) -> None:
        self._listener = listener
        self.come_back()

    async def wait_connected(self) -> None:
        await self._up_event.wait()

    async def subscribe(self, channels: Collection[str]) -> None:
        self._wanted.update(channels)
        await asyncio.sleep(0)  # the round trip to the server
        if not self._up:
            raise RedisConnectionError("the memory live source is down")

    async def unsubscribe(self, channels: Collection[str]) -> None:
        self._wanted.difference_update(channels)

    async def close(self) -> None:
        self._listener, self._up = None, False
        self._up_event.clear()

    # --- the server side ----------------------------------------------------------------

    def publish(self, channel: str, payload: str) -> None:
        """A message published now: delivered on a later loop turn, in order,
        if the channel is subscribed now (and still when it arrives)."""
        if not self._up or channel not in self._wanted:
            return
        if self._lose.get(channel, 0) > 0:
            self._lose[channel] -= 1
            asyncio.get_running_loop().call_soon(self._gap, [channel])
            return
        asyncio.get_running_loop().call_soon(self._deliver, channel, payload)

    def _deliver(self, channel: str, payload: str) -> None:
        if self._up and channel in self._wanted and self._listener is not None:
            self._listener.on_live_message(channel, payload)

    def _gap(self, channels: Collection[str] | None) -> None:
        if self._listener is not None:
            self._listener.on_live_gap(channels)

    # --- faults ----------------------------------------------------------------------------

    def lose_next(self, channel: str, count: int = 1) -> None:
        """The next ``count`` messages on ``channel`` are lost (each followed by a gap signal)."""
        self._lose[channel] = self._lose.get(channel, 0) + count

    def go_down(self) -> None:
        """The connection dropped: messages in flight are lost; a gap on every channel."""
        self._up = False
        self._up_event.clear()
        self._gap(None)

    def come_back(self) -> None:
        """Reconnected: every wanted channel is subscribed again, then a gap signal on them."""
        self._up = True
        self._up_event.set()
        if self._wanted:
            asyncio.get_running_loop().call_soon(self._gap, sorted(self._wanted))


@dataclass
class _Record:
    """One stream, as the meta hash, the event stream and the text hold it."""

    stream_id: str
    tenant: str | None = None
    key_id: str | None = None
    status: str = "queued"
    epoch: str | None = None
    attempt: int = 0
    epoch_attempt: int = 0
    last_seq: int = 0
    events: list[Event] = field(default_factory=list)  # the kept ones, in order
    text: str = ""
    tokens: int = 0
    final: str | None = None

    def meta(self) -> StreamMeta:
        return StreamMeta(
            stream_id=self.stream_id, status=self.status, epoch=self.epoch,
            attempt=self.attempt, last_seq=self.last_seq, model="memory", tokens=self.tokens,
            created_at_ms=0, finished_at_ms=None,
            final=Event("", 0, "", self.final).payload() if self.final else None,
            tenant=self.tenant, key_id=self.key_id, epoch_attempt=self.epoch_attempt)


class MemoryBroker:
    """``broker.Broker`` in memory (see the module docstring). ``start``
    before use, ``close`` after."""

    def __init__(self, idle_resync: float = 30.0) -> None:
        self.source = MemoryLiveSource()
        self.hub = Hub(self.source, idle_resync)
        self._records: dict[str, _Record] = {}
        self._epochs = 0
        self._unavailable = False

    def start(self) -> None:
        self.hub.start()

    async def close(self) -> None:
        await self.hub.close()

    def go_down(self) -> None:
        """Redis unreachable: reads fail, the live connection drops (a gap signal)."""
        self._unavailable = True
        self.source.go_down()

    def come_back(self) -> None:
        self._unavailable = False
        self.source.come_back()

    # --- Broker -------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self.hub.connected

    async def meta(self, stream_id: str) -> StreamMeta | None:
        record = await self._reached(stream_id)
        return record.meta() if record is not None else None

    async def snapshot(self, stream_id: str) -> Snapshot | None:
        record = await self._reached(stream_id)
        return Snapshot(record.meta(), record.text) if record is not None else None

    async def read(self, stream_id: str, after_seq: int, count: int) -> Page:
        record = await self._reached(stream_id)
        if record is None:
            return Page(None, after_seq, count, [])
        events = [e for e in record.events if e.seq > after_seq][:count]
        return Page(record.meta(), after_seq, count, events)

    def subscribe(self, stream_id: str, subscriber: LiveSubscriber
                  ) -> AbstractAsyncContextManager[None]:
        return self.hub.subscribe(stream_id, subscriber)

    async def _reached(self, stream_id: str) -> _Record | None:
        await asyncio.sleep(0)  # the round trip: live messages may arrive meanwhile
        if self._unavailable:
            raise RedisConnectionError("the memory broker is unavailable")
        return self._records.get(stream_id)

    # --- the writing side (what the worker's scripts do) ----------------------------------

    def create(self, stream_id: str | None = None, *, tenant: str | None = None,
               key_id: str | None = None) -> str:
        """A queued stream (no epoch yet)."""
        stream_id = stream_id or keys.new_stream_id()
        self._records[stream_id] = _Record(stream_id, tenant=tenant, key_id=key_id)
        return stream_id

    def begin(self, stream_id: str) -> str:
        """A new attempt and epoch: the old events and text are replaced, ``start`` is seq 1."""
        record = self._records[stream_id]
        self._epochs += 1
        record.attempt += 1
        record.epoch, record.epoch_attempt = f"m{self._epochs:04x}", record.attempt
        record.status, record.events, record.text, record.last_seq = "running", [], "", 0
        self._add(record, "start", dumps({"stream_id": stream_id, "model": "memory",
                                          "epoch": record.epoch, "attempt": record.attempt}))
        return record.epoch

    def append(self, stream_id: str, content: str) -> Event:
        record = self._records[stream_id]
        record.text += content
        record.tokens += 1
        return self._add(record, "token", dumps({"content": content}))

    def finish(self, stream_id: str, finish_reason: str = "stop") -> Event:
        record = self._records[stream_id]
        data = dumps({"finish_reason": finish_reason, "tokens": record.tokens,
                      "duration_ms": 0, "tokens_per_second": 0.0,
                      "sha256": hashlib.sha256(record.text.encode()).hexdigest()})
        event = self._add(record, "done", data)
        record.status, record.final = "done", data
        return event

    def trim(self, stream_id: str, keep: int) -> None:
        """``MAXLEN``: keep only the last ``keep`` events."""
        record = self._records[stream_id]
        record.events = record.events[-keep:]

    def expire_events(self, stream_id: str) -> None:
        """The event stream's TTL ran out (the record and text stay)."""
        self._records[stream_id].events = []

    def forget(self, stream_id: str) -> None:
        """Redis lost the stream's record."""
        del self._records[stream_id]

    def _add(self, record: _Record, kind: str, data: str) -> Event:
        if record.epoch is None or record.status != "running":
            raise ValueError(f"stream {record.stream_id} is not running")
        record.last_seq += 1
        event = Event(record.epoch, record.last_seq, kind, data)
        record.events.append(event)
        self.source.publish(keys.live_channel(record.stream_id), event.to_live_message())
        return event
