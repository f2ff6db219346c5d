"""The live source: what the hub sits on to hear a stream's events as they are appended.

The append script publishes every event on its stream's sharded channel
(``keys.live_channel``: ``tw:{<id>}:live``, payload ``<epoch>.<seq>@<µs>
<type> <data>``, ``@<µs>`` being Redis' append time, absent from older
scripts) in the same atomic step as its ``XADD``. A live source holds the
pub/sub connection(s) that receive those messages and hands each one to a
``LiveListener`` (the hub), which owns who is interested in what and fans out.

Two implementations sit behind this protocol:

- standalone / Sentinel: one pub/sub connection (``SSUBSCRIBE`` works on a
  standalone server as on a cluster);
- Redis/Valkey Cluster: one pub/sub connection per node that owns subscribed
  channels, routed by key slot, following slot moves and failovers.

A live source is a *hint*, never the truth: the stream in Redis is. So its one
promise is not "every message" but "every message, or a gap signal after it":

    For every message published on a channel while the channel is wanted
    (from the start of ``subscribe`` until ``unsubscribe``), the source either
    passes it to ``on_live_message`` — once, in publication order per
    channel — or calls ``on_live_gap`` with that channel (or ``None``, all
    channels) at some moment *after* the message was published.

A reader that re-reads the stream after a gap signal therefore misses nothing:
publish and ``XADD`` are one atomic step, so the re-read sees the message.
In practice a source signals twice for one loss: when it notices it (a
connection error, a ``MOVED``, a ``sunsubscribe`` pushed by the server after a
slot migration), so readers catch up from the stream meanwhile, and again once
the affected channels are active again (confirmed) — the second signal is the
one the promise needs; without it, a message published between the first
signal and the resubscription would be lost silently.

The hub calls ``subscribe``/``unsubscribe`` from one task, one call at a time
(never two concurrently): an implementation may rely on that.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Protocol


class LiveListener(Protocol):
    """What a live source calls (the hub). Both callbacks run synchronously in
    the source's reader task: they never block, and must return quickly (the
    hot path: every live event of every stream passes here). An exception
    raised by a callback is the listener's bug: the source logs it and goes on
    reading — it never stops delivery."""

    def on_live_message(self, channel: str, payload: str) -> None:
        """One message published on ``channel`` (a wanted one), its payload
        decoded as UTF-8 text, unparsed (the listener parses it, and skips a
        malformed one)."""

    def on_live_gap(self, channels: Collection[str] | None) -> None:
        """Messages on ``channels`` (``None``: on every channel) may have been
        lost. See the module docstring for when this must be called. Calling
        it more often than needed is always safe (readers re-read the stream);
        calling it for a channel that is no longer wanted is harmless."""


class LiveSource(Protocol):
    """Pub/sub connection(s) to Redis for the live channels one edge wants.

    Lifecycle: ``start`` once, then ``subscribe``/``unsubscribe`` any number of
    times, then ``close``. The source keeps the set of *wanted* channels (those
    passed to ``subscribe`` and not since to ``unsubscribe``) and restores it
    by itself after a reconnect, a failover or a slot move, each followed by a
    gap signal for the channels it restored."""

    @property
    def connected(self) -> bool:
        """Whether ``subscribe`` can succeed now: the connection(s) the source
        needs are up (for a cluster source: it knows the slot map and reaches
        the nodes it uses). False from a lost connection until it is back.
        Read by readiness (``/readyz``) and by the hub, which fails a new
        subscriber at once (a transient error) instead of letting it wait."""

    def start(self, listener: LiveListener) -> None:
        """Start the reader task(s) and return at once: the source connects in
        the background and keeps retrying while Redis is unreachable (an edge
        starts while Redis is down, unready). Long-lived tasks run under
        ``tokenwire.supervision`` (a failure is logged and the task restarts).
        ``listener`` receives every callback from now until ``close``."""

    async def wait_connected(self) -> None:
        """Return once the source is connected (at once if it is): for
        start-up and tests. Never raises; cancel it to stop waiting."""

    async def subscribe(self, channels: Collection[str]) -> None:
        """Make ``channels`` wanted, and return once the server has confirmed
        every one of them (it is then active: a message published from now on
        is delivered or followed by a gap signal, so a stream read made after
        this returns cannot miss an event published in between). Channels
        already wanted and active are confirmed at once; an empty collection
        returns at once.

        Raises a transport error — an instance of one of
        ``tokenwire.redis_client.TRANSPORT_ERRORS`` (``redis.exceptions
        .ConnectionError``, ``TimeoutError``, …) — when the confirmation
        cannot come: not connected, the connection failed meanwhile, or no
        confirmation within the source's own bound (a few seconds). The
        channels then stay wanted: the source subscribes them when it can and
        calls ``on_live_gap`` for them once they are active, so a later
        ``subscribe`` of the same channels is safe (idempotent)."""

    async def unsubscribe(self, channels: Collection[str]) -> None:
        """Make ``channels`` unwanted: no callback for them once this returns
        (even if the server still sends something already in flight: the
        source filters it). Tells the server without waiting for its
        confirmation, and never raises for a transport error (a lost
        connection forgets every subscription anyway, and an unwanted channel
        is not restored). Channels not wanted are ignored."""

    async def close(self) -> None:
        """Stop the tasks and close the connection(s); no callback afterwards."""
