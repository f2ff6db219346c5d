"""The live source of a standalone (or Sentinel-managed) Redis: one pub/sub connection.

One connection from the client's pool, put in subscribed mode with
``SSUBSCRIBE`` (sharded pub/sub works on a standalone server as on a
cluster), read by one task. It speaks to the connection directly rather than
through redis-py's ``PubSub``: the reader hands each message to the listener
without building a dict per message, and the source counts the confirmations
it is owed, so ``subscribe`` returns exactly when the server confirmed.

When the connection fails — a read error, or no answer to a keep-alive
``PING`` within two intervals (a peer that vanished without closing) — the
source signals a gap on every channel, reconnects (retrying while Redis is
down), subscribes every wanted channel again, and signals a gap on each once
its new subscription is confirmed: the promise of ``live.LiveSource``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
from collections.abc import Collection

from redis.asyncio import Redis
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from tokenwire.edge.live import LiveListener
from tokenwire.redis_client import TRANSPORT_ERRORS
from tokenwire.supervision import start_supervised

log = logging.getLogger(__name__)

#: How long ``subscribe`` waits for the server's confirmations.
CONFIRM_TIMEOUT = 10.0


class _ServerUnsubscribed(Exception):
    """The server dropped a channel we still want: start over on a fresh connection."""


class RedisLiveSource:
    """``live.LiveSource`` over one pub/sub connection (see the module docstring)."""

    def __init__(self, redis: Redis, *, keepalive: float = 5.0) -> None:
        self._pool = redis.connection_pool
        self._keepalive = keepalive
        self._connection: AbstractConnection | None = None
        self._listener: LiveListener | None = None
        self._wanted: set[str] = set()
        # Per channel, on this connection: SSUBSCRIBEs not yet confirmed, and
        # SUNSUBSCRIBEs not yet confirmed.
        self._owed: dict[str, int] = {}
        self._leaving: dict[str, int] = {}
        # Resubscribed after a reconnect: a gap signal once confirmed.
        self._restoring: set[str] = set()
        # The channels the running ``subscribe`` call waits for, and its future.
        self._batch: set[str] = set()
        self._batch_done: asyncio.Future[None] | None = None
        self._up = False
        self._up_event = asyncio.Event()
        self._replies = 0  # every reply read: the keep-alive's "heard from it"
        self._tasks: list[asyncio.Task[None]] = []
        self._closing = False

    @property
    def connected(self) -> bool:
        return self._up

    def start(self, listener: LiveListener) -> None:
        self._listener = listener
        self._tasks = [start_supervised("live-reader", self._read_forever),
                       start_supervised("live-keepalive", self._keep_alive)]

    async def wait_connected(self) -> None:
        await self._up_event.wait()

    async def close(self) -> None:
        self._closing = True
        self._listener = None  # no callback from now on
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._went_down(None)
        if self._connection is not None:
            await self._connection.disconnect()
            await self._pool.release(self._connection)
            self._connection = None

    # --- subscribing (the hub's commander, one call at a time) -------------------------

    async def subscribe(self, channels: Collection[str]) -> None:
        new = [c for c in channels if c not in self._wanted]
        self._wanted.update(new)
        waiting = {c for c in channels if c in self._owed or c in new}
        if not waiting:
            return
        connection = self._connection
        if not self._up or connection is None:
            raise RedisConnectionError("the live connection is down")
        self._batch = waiting
        self._batch_done = done = asyncio.get_running_loop().create_future()
        try:
            if new:
                for channel in new:
                    self._owed[channel] = self._owed.get(channel, 0) + 1
                await connection.send_command("SSUBSCRIBE", *new, check_health=False)
            async with asyncio.timeout(CONFIRM_TIMEOUT):
                await done
        finally:
            self._batch, self._batch_done = set(), None

    async def unsubscribe(self, channels: Collection[str]) -> None:
        drop = [c for c in channels if c in self._wanted]
        self._wanted.difference_update(drop)
        self._restoring.difference_update(drop)
        connection = self._connection
        if not drop or not self._up or connection is None:
            return  # a reconnect subscribes only what is wanted
        for channel in drop:
            self._leaving[channel] = self._leaving.get(channel, 0) + 1
        with contextlib.suppress(*TRANSPORT_ERRORS):  # the reader sees the broken connection
            await connection.send_command("SUNSUBSCRIBE", *drop, check_health=False)

    # --- the reader ------------------------------------------------------------------------

    async def _read_forever(self) -> None:
        while not self._closing:
            connection = await self._connect()
            try:
                while True:
                    reply = await connection.read_response(
                        timeout=math.inf, disconnect_on_error=False, push_request=True)
                    self._replies += 1
                    if isinstance(reply, list) and len(reply) >= 2:
                        self._dispatch(reply)
            except (*TRANSPORT_ERRORS, _ServerUnsubscribed, ResponseError) as exc:
                if self._closing:
                    return
                log.warning("live connection lost: %s", exc or type(exc).__name__)
                self._went_down(exc)
                await connection.disconnect()
            except Exception:  # unforeseen: start again from a clean state (supervised)
                self._went_down(None)
                await connection.disconnect()
                raise

    async def _connect(self) -> AbstractConnection:
        """Connect (retrying while Redis is down) and subscribe every wanted
        channel again; each gets a gap signal once confirmed."""
        failures = 0
        while True:
            try:
                if self._connection is None:
                    self._connection = await self._pool.get_connection()  # type: ignore[no-untyped-call]
                else:
                    await self._connection.connect()  # type: ignore[no-untyped-call]
                connection = self._connection
                await self._resubscribe(connection)
            except TRANSPORT_ERRORS as exc:
                if failures == 0:
                    log.warning("live source cannot reach Redis: %s", exc)
                failures += 1
                if self._connection is not None:
                    await self._connection.disconnect()
                await asyncio.sleep(random.uniform(0.25, 0.75))
                continue
            if failures:
                log.info("live source reconnected")
            self._up = True
            self._up_event.set()
            return connection

    async def _resubscribe(self, connection: AbstractConnection) -> None:
        self._owed, self._leaving = {}, {}
        sent: set[str] = set()
        while self._wanted - sent:  # channels may come and go while we send
            channels = sorted(self._wanted - sent)
            for channel in channels:
                self._owed[channel] = 1
            self._restoring.update(channels)
            sent.update(channels)
            await connection.send_command("SSUBSCRIBE", *channels, check_health=False)
        if gone := sent - self._wanted:  # unsubscribed while we were sending
            self._restoring.difference_update(gone)
            for channel in gone:
                self._leaving[channel] = 1
            await connection.send_command("SUNSUBSCRIBE", *sorted(gone), check_health=False)

    def _dispatch(self, reply: list[str]) -> None:
        kind, channel = reply[0], reply[1]
        if kind == "smessage":
            listener = self._listener
            if channel in self._wanted and listener is not None:
                try:
                    listener.on_live_message(channel, reply[2])
                except Exception:  # the listener's bug: log it, keep reading
                    log.exception("the live listener failed on a message")
        elif kind == "ssubscribe":
            self._confirmed(channel)
        elif kind == "sunsubscribe":
            leaving = self._leaving.get(channel, 0)
            if leaving > 1:
                self._leaving[channel] = leaving - 1
            elif leaving == 1:
                del self._leaving[channel]
            elif channel in self._wanted:
                raise _ServerUnsubscribed(f"the server unsubscribed {channel}")

    def _confirmed(self, channel: str) -> None:
        owed = self._owed.get(channel, 0) - 1
        if owed > 0:
            self._owed[channel] = owed
            return
        self._owed.pop(channel, None)
        if channel in self._restoring:
            self._restoring.discard(channel)
            self._signal_gap([channel])
        batch = self._batch
        if channel in batch:
            batch.discard(channel)
            if not batch and self._batch_done is not None and not self._batch_done.done():
                self._batch_done.set_result(None)

    def _went_down(self, error: BaseException | None) -> None:
        """The connection is gone: every message since may be lost."""
        self._up = False
        self._up_event.clear()
        self._owed, self._leaving, self._restoring = {}, {}, set()
        done = self._batch_done
        if done is not None and not done.done():
            done.set_exception(RedisConnectionError(f"the live connection was lost: {error}"))
        self._signal_gap(None)

    def _signal_gap(self, channels: Collection[str] | None) -> None:
        if self._listener is None:
            return
        try:
            self._listener.on_live_gap(channels)
        except Exception:  # the listener's bug: log it, keep going
            log.exception("the live listener failed on a gap signal")

    # --- keep-alive ----------------------------------------------------------------------------

    async def _keep_alive(self) -> None:
        """A ``PING`` after every silent interval; no reply by the next one
        (two intervals of silence): the connection is dead — drop it, so the
        reader reconnects. A peer that vanished without closing is found
        within three intervals, not after the kernel's retransmissions."""
        pinged_at: int | None = None
        while not self._closing:
            replies = self._replies
            await asyncio.sleep(self._keepalive)
            connection = self._connection
            if not self._up or connection is None or self._replies != replies:
                pinged_at = None
                continue
            if pinged_at is not None and self._replies == pinged_at:
                log.warning("live connection silent after a ping: reconnecting")
                pinged_at = None
                await connection.disconnect()  # the reader's read fails: it reconnects
                continue
            pinged_at = self._replies
            with contextlib.suppress(*TRANSPORT_ERRORS):
                await connection.send_command("PING", check_health=False)
