"""The live source of a Valkey/Redis Cluster (``live.LiveSource``): one pub/sub
connection per node that owns subscribed channels, routed by key slot.

redis-py's ``ClusterPubSub`` polls its nodes one by one, does not follow a
failed-over master and ignores the ``sunsubscribe`` a node pushes when a slot
leaves it; valkey-glide resubscribes after 14 to 19 s and never reports the gap.
This source holds plain connections (redis-py's connection and parser) and
follows the cluster itself:

- a channel is subscribed (``SSUBSCRIBE``, one command per channel) on the
  master that serves its slot, as the cluster client's slot map says;
- a connection that fails (the master died), a ``sunsubscribe`` the server
  pushes (its slot moved: a migration, a failover), or a ``MOVED`` answer to
  ``SSUBSCRIBE`` (the map was stale) makes its channels *homeless*: the
  listener hears a gap for them at once (readers catch up from the stream
  meanwhile), the slot map is refreshed, and they are subscribed again on
  their owner — retried every ``REPAIR_DELAY`` until a new master is
  elected — and once confirmed, a second gap (the one the protocol needs:
  nothing published in between is lost);
- channels on healthy nodes are not touched;
- each connection is pinged when it has been quiet for ``PING_AFTER``; one
  that does not answer within ``PING_TIMEOUT`` is given up (a node that
  vanished without closing its sockets).

Everything runs in the source's tasks (a reader per connection, one repairer,
one pinger) under ``tokenwire.supervision``; the hub calls ``subscribe`` and
``unsubscribe`` one at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections import defaultdict, deque
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from typing import Any

from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import MovedError, RedisClusterException, RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from tokenwire.edge.live import LiveListener
from tokenwire.redis_client import TRANSPORT_ERRORS
from tokenwire.supervision import start_supervised

log = logging.getLogger(__name__)

#: How long ``subscribe`` waits for the server's confirmation.
CONFIRM_TIMEOUT = 5.0
#: Between two attempts to place homeless channels (a failover takes ~1 to 2 s).
REPAIR_DELAY = 0.1
PING_AFTER = 1.0
PING_TIMEOUT = 3.0


@dataclass(eq=False)
class _Link:
    """One pub/sub connection to one node, and the channels it carries."""

    node: ClusterNode
    connection: AbstractConnection
    channels: set[str] = field(default_factory=set)  # placed here (asked or confirmed)
    #: replies owed, in order: ("ssubscribe" | "sunsubscribe" | "pong", channel)
    owed: deque[tuple[str, str]] = field(default_factory=deque)
    last_read: float = field(default_factory=time.monotonic)
    ping_sent: float | None = None
    reader: asyncio.Task[None] | None = None
    lost: bool = False

    async def send(self, commands: list[tuple[str, str]]) -> None:
        """Pipeline ``commands`` ((``SSUBSCRIBE``|``SUNSUBSCRIBE``|``PING``, channel));
        their replies are owed in this order."""
        packed: list[bytes] = []
        for command, channel in commands:
            args = (command,) if command == "PING" else (command, channel)
            packed += self.connection.pack_command(*args)
            self.owed.append((_REPLY_OF[command], channel))
        # No socket timeout on this connection: the bytes are written before any await.
        await self.connection.send_packed_command(packed, check_health=False)


_REPLY_OF = {"SSUBSCRIBE": "ssubscribe", "SUNSUBSCRIBE": "sunsubscribe", "PING": "pong"}


class ClusterLiveSource:
    def __init__(self, cluster: RedisCluster) -> None:
        self._cluster = cluster
        self._listener: LiveListener | None = None
        self._wanted: set[str] = set()
        self._active: set[str] = set()  # confirmed on their link
        self._homeless: set[str] = set()  # wanted, on no live link
        self._owed_gap: set[str] = set()  # a gap signal is due when they are active again
        self._placed: dict[str, _Link] = {}
        self._links: dict[str, _Link] = {}  # node name -> link
        self._connecting: dict[str, asyncio.Future[_Link]] = {}
        self._confirmations: dict[str, asyncio.Future[None]] = {}
        self._repair = asyncio.Event()
        self._stale_map = True
        self._map_known = asyncio.Event()
        self._map_failing = False  # the last refresh of the slot map failed
        self._placing_failed = False  # the last repair could not place every channel
        self._tasks: list[asyncio.Task[None]] = []
        self._chores: set[asyncio.Task[None]] = set()  # short tasks, referenced until done
        self._closing = False

    # --- LiveSource --------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._map_known.is_set() and not self._map_failing

    @property
    def connections(self) -> int:
        """Pub/sub connections open now (one per node with subscribed channels)."""
        return sum(1 for link in self._links.values() if not link.lost)

    def start(self, listener: LiveListener) -> None:
        self._listener = listener
        self._repair.set()  # the first repair loads the slot map
        self._tasks = [start_supervised("cluster-live-repair", self._repair_loop),
                       start_supervised("cluster-live-pinger", self._ping_loop)]

    async def wait_connected(self) -> None:
        await self._map_known.wait()

    async def subscribe(self, channels: Collection[str]) -> None:
        self._wanted.update(channels)
        waiting = [c for c in channels if c not in self._active]
        if not waiting:
            return
        if not self.connected:
            self._make_homeless(waiting, gap=True)
            raise RedisConnectionError("the cluster's slot map is unknown")
        loop = asyncio.get_running_loop()
        futures = [self._confirmations.setdefault(c, loop.create_future()) for c in waiting]
        unplaced = [c for c in waiting if c not in self._placed]
        self._homeless.update(unplaced)  # _place takes each off once it is sent
        try:
            await self._place(unplaced)
        except TRANSPORT_ERRORS:
            # The node is unreachable (a master died: its replica takes over in
            # a second or two). Fail now rather than hold the hub's one caller;
            # the repairer places the channels, then signals a gap.
            self._stale_map = True
            self._repair.set()
            self._owed_gap.update(c for c in waiting if c not in self._active)
            raise
        try:
            async with asyncio.timeout(CONFIRM_TIMEOUT):
                await asyncio.gather(*(asyncio.shield(f) for f in futures))
        except TimeoutError:
            # Still wanted: once active they get a gap signal (the caller gave up).
            self._owed_gap.update(c for c in waiting if c not in self._active)
            raise RedisTimeoutError("no confirmation of the live subscriptions") from None

    async def unsubscribe(self, channels: Collection[str]) -> None:
        by_link: dict[_Link, list[str]] = defaultdict(list)
        for channel in channels:
            if channel not in self._wanted:
                continue
            self._forget(channel)
            link = self._placed.pop(channel, None)
            if link is not None:
                link.channels.discard(channel)
                by_link[link].append(channel)
        for link, dropped in by_link.items():
            if link.lost:
                continue
            if not link.channels:  # nothing left on this node: close its connection
                self._close_link(link)
                continue
            # A failure is its reader's to see; an unwanted channel is not restored.
            with contextlib.suppress(*TRANSPORT_ERRORS):
                await link.send([("SUNSUBSCRIBE", c) for c in dropped])

    async def close(self) -> None:
        self._closing = True
        for task in [*self._tasks, *self._chores]:
            task.cancel()
        await asyncio.gather(*self._tasks, *self._chores, return_exceptions=True)
        for link in list(self._links.values()):
            self._close_link(link)
        readers = [link.reader for link in self._links.values() if link.reader is not None]
        await asyncio.gather(*readers, return_exceptions=True)
        self._links.clear()

    # --- placing channels ----------------------------------------------------------------

    async def _place(self, channels: Iterable[str]) -> None:
        """Subscribe ``channels`` on the masters of their slots."""
        by_node: dict[str, list[str]] = defaultdict(list)
        nodes: dict[str, ClusterNode] = {}
        for channel in channels:
            node = self._cluster.nodes_manager.get_node_from_slot(self._cluster.keyslot(channel))
            nodes[node.name] = node
            by_node[node.name].append(channel)
        for name, asked in by_node.items():
            link = await self._link(nodes[name])
            # Connecting took a moment: the hub may have given some up, or placed
            # them itself, meanwhile.
            placed = [c for c in asked if c in self._wanted and c not in self._placed]
            if not placed:
                continue
            for channel in placed:
                self._placed[channel] = link
                self._homeless.discard(channel)
            link.channels.update(placed)
            await link.send([("SSUBSCRIBE", c) for c in placed])

    async def _link(self, node: ClusterNode) -> _Link:
        """The live link to ``node``, connected now if need be (one at a time)."""
        link = self._links.get(node.name)
        if link is not None and not link.lost:
            return link
        connecting = self._connecting.get(node.name)
        if connecting is None:
            connecting = asyncio.ensure_future(self._connect(node))
            self._connecting[node.name] = connecting
            connecting.add_done_callback(lambda _: self._connecting.pop(node.name, None))
        return await asyncio.shield(connecting)

    async def _connect(self, node: ClusterNode) -> _Link:
        # RESP2: in subscribed mode every reply is an array (``pong`` included).
        options = {**node.connection_kwargs, "socket_timeout": None,
                   "health_check_interval": 0, "protocol": 2}
        connection = node.connection_class(**options)
        try:
            await connection.connect()  # type: ignore[no-untyped-call]
        except BaseException:
            await connection.disconnect()
            raise
        link = _Link(node, connection)
        self._links[node.name] = link
        link.reader = asyncio.create_task(self._read(link), name=f"cluster-live-{node.name}")
        return link

    def _make_homeless(self, channels: Iterable[str], *, gap: bool) -> None:
        """Wanted ``channels`` lost their subscription (or never got one): place
        them again; with ``gap``, tell the listener now and once they are back."""
        lost = [c for c in channels if c in self._wanted]
        for channel in lost:
            self._active.discard(channel)
            link = self._placed.pop(channel, None)
            if link is not None:
                link.channels.discard(channel)
                if not link.channels and not link.lost:
                    self._close_link(link)
            self._homeless.add(channel)
        if gap and lost:
            self._owed_gap.update(lost)
            self._signal_gap(lost)
        if lost:
            self._repair.set()

    def _forget(self, channel: str) -> None:
        self._wanted.discard(channel)
        self._active.discard(channel)
        self._homeless.discard(channel)
        self._owed_gap.discard(channel)
        future = self._confirmations.pop(channel, None)
        if future is not None and not future.done():
            future.set_exception(RedisConnectionError("unsubscribed before confirmation"))
            future.exception()  # retrieved: nobody may be waiting any more

    # --- the repairer --------------------------------------------------------------------

    async def _repair_loop(self) -> None:
        while not self._closing:
            await self._repair.wait()
            self._repair.clear()
            try:
                if self._stale_map or not self._map_known.is_set():
                    await self._refresh_map()
                homeless = list(self._homeless)
                if homeless:
                    await self._place(homeless)
                if homeless:
                    log.info("cluster live source: %d channels placed again (%s)",
                             len(homeless), ", ".join(sorted(
                                 {self._placed[c].node.name for c in homeless
                                  if c in self._placed})))
                self._placing_failed = False
            except (*TRANSPORT_ERRORS, RedisClusterException, RedisError) as exc:
                if not self._placing_failed:  # once per outage, not every retry
                    log.warning("cluster live source: cannot place %d channels yet: %s",
                                len(self._homeless), exc)
                self._placing_failed = True
                self._stale_map = True
                await asyncio.sleep(REPAIR_DELAY)
                self._repair.set()

    async def _refresh_map(self) -> None:
        try:
            await self._cluster.initialize()  # once: the client's own set-up
            await self._cluster.nodes_manager.initialize()
        except BaseException:
            self._map_failing = True
            raise
        self._stale_map = self._map_failing = False
        self._map_known.set()

    # --- a link's reader ---------------------------------------------------------------

    async def _read(self, link: _Link) -> None:
        try:
            while not link.lost:
                try:
                    reply = await link.connection.read_response(
                        timeout=math.inf, disconnect_on_error=True)
                except ResponseError as exc:
                    link.last_read = time.monotonic()
                    self._refused(link, exc)
                    continue
                link.last_read = time.monotonic()
                link.ping_sent = None
                self._dispatch(link, reply)
        except (*TRANSPORT_ERRORS, OSError) as exc:
            if not link.lost and not self._closing:
                log.warning("cluster live source: lost %s (%d channels): %s",
                            link.node.name, len(link.channels), exc)
        finally:
            self._link_lost(link)

    def _dispatch(self, link: _Link, reply: Any) -> None:
        if not isinstance(reply, list) or len(reply) < 2:  # PONG outside subscribed mode
            if link.owed and link.owed[0][0] == "pong":
                link.owed.popleft()
            return
        kind = str(reply[0]).lower()
        channel = str(reply[1])
        if kind == "smessage":
            if channel in self._active and self._placed.get(channel) is link:
                self._deliver(channel, reply[2])
            return
        if link.owed and link.owed[0] == (kind, channel):
            link.owed.popleft()
            if kind == "ssubscribe":
                self._confirmed(link, channel)
            return
        if kind == "sunsubscribe" and self._placed.get(channel) is link:
            # Pushed by the server: the slot left this node (a migration, a failover).
            log.info("cluster live source: %s dropped %s (slot moved)", link.node.name, channel)
            self._stale_map = True
            self._make_homeless([channel], gap=True)

    def _refused(self, link: _Link, exc: ResponseError) -> None:
        """An error answers the oldest command still owed."""
        if not link.owed:
            log.warning("cluster live source: unexpected error from %s: %s", link.node.name, exc)
            return
        _, channel = link.owed.popleft()
        if self._placed.get(channel) is not link:
            return
        if isinstance(exc, MovedError):  # the map was stale: patch it, then place again
            chore = asyncio.create_task(self._moved(channel, exc))
            self._chores.add(chore)
            chore.add_done_callback(self._chores.discard)
            return
        log.warning("cluster live source: %s refused %s: %s", link.node.name, channel, exc)
        self._stale_map = True
        self._make_homeless([channel], gap=False)

    async def _moved(self, channel: str, moved: MovedError) -> None:
        await self._cluster.nodes_manager.move_slot(moved)
        self._make_homeless([channel], gap=False)

    def _confirmed(self, link: _Link, channel: str) -> None:
        if channel not in self._wanted or self._placed.get(channel) is not link:
            return
        if any(owed == channel for _, owed in link.owed):
            return  # a later command for it (unsubscribed, subscribed again) decides
        self._active.add(channel)
        future = self._confirmations.pop(channel, None)
        if future is not None and not future.done():
            future.set_result(None)
        if channel in self._owed_gap:
            self._owed_gap.discard(channel)
            self._signal_gap([channel])

    def _link_lost(self, link: _Link) -> None:
        link.lost = True
        if self._links.get(link.node.name) is link:
            del self._links[link.node.name]
        if link.channels and not self._closing:
            self._stale_map = True
            self._make_homeless(list(link.channels), gap=True)
        chore = asyncio.create_task(link.connection.disconnect())
        self._chores.add(chore)
        chore.add_done_callback(self._chores.discard)

    def _close_link(self, link: _Link) -> None:
        link.lost = True
        if self._links.get(link.node.name) is link:
            del self._links[link.node.name]
        if link.reader is not None:
            link.reader.cancel()

    # --- the listener ------------------------------------------------------------------

    def _deliver(self, channel: str, payload: Any) -> None:
        assert self._listener is not None
        try:
            self._listener.on_live_message(channel, str(payload))
        except Exception:  # the listener's bug: log it, keep reading
            log.exception("live listener failed on a message", extra={"channel": channel})

    def _signal_gap(self, channels: list[str]) -> None:
        if self._listener is None:
            return
        try:
            self._listener.on_live_gap(channels)
        except Exception:
            log.exception("live listener failed on a gap signal")

    # --- health --------------------------------------------------------------------------

    async def _ping_loop(self) -> None:
        while not self._closing:
            await asyncio.sleep(PING_AFTER / 2)
            now = time.monotonic()
            for link in list(self._links.values()):
                if link.lost:
                    continue
                if link.ping_sent is not None and now - link.ping_sent > PING_TIMEOUT:
                    log.warning("cluster live source: %s stopped answering", link.node.name)
                    self._close_link(link)
                    self._link_lost(link)
                elif link.ping_sent is None and now - link.last_read > PING_AFTER:
                    link.ping_sent = now
                    try:
                        await link.send([("PING", "")])
                    except TRANSPORT_ERRORS:
                        continue  # its reader sees the failure
