"""Script calls made in the same event-loop iteration share one round trip.

A worker runs many generations at once, and their token buffers flush on one
clock (``buffers``): at each tick several streams append together. Sent one by
one, each append costs a round trip (a socket write here, a read event in
Redis); queued until the loop iteration ends and sent as one pipeline, they
cost one. Each caller still gets its own reply or its own error: the calls stay
independent (no transaction), and a round trip lost in transit fails every
call in it, which each caller's seq-checked retry handles as before. In a
cluster, one pipeline per node that serves the calls' slots
(``cluster_scripts``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError, ResponseError

from tokenwire.cluster_scripts import ClusterScripts
from tokenwire.redis_client import RedisClient


@dataclass(slots=True)
class _Call:
    script: AsyncScript
    keys: list[str]
    args: list[str | int]
    reply: asyncio.Future[Any]


class ScriptBatcher:
    def __init__(self, redis: RedisClient) -> None:
        self._redis = redis
        self._cluster = ClusterScripts(redis) if isinstance(redis, RedisCluster) else None
        self._queued: list[_Call] = []
        self._sending: set[asyncio.Task[None]] = set()  # referenced until done
        self._round_trips = 0

    @property
    def round_trips(self) -> int:
        """Pipelines, lone calls and SCRIPT LOADs sent (diagnostics)."""
        cluster = self._cluster.round_trips if self._cluster is not None else 0
        return self._round_trips + cluster

    async def call(self, script: AsyncScript, keys: list[str], args: list[str | int]) -> Any:
        """Run ``script`` with the other calls of this loop iteration; its reply."""
        return await self.submit(script, keys, args)

    def submit(self, script: AsyncScript, keys: list[str], args: list[str | int]
               ) -> asyncio.Future[Any]:
        """Queue ``script`` for this loop iteration's pipeline without waiting:
        the future settles with its reply or its error."""
        loop = asyncio.get_running_loop()
        call = _Call(script, keys, args, loop.create_future())
        self._queued.append(call)
        if len(self._queued) == 1:
            loop.call_soon(self._send_queued)
        return call.reply

    def _send_queued(self) -> None:
        calls, self._queued = self._queued, []
        task = asyncio.create_task(self._send(calls), name="redis-script-batch")
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    async def _send(self, calls: list[_Call]) -> None:
        try:
            replies = await self.run_together([(c.script, c.keys, c.args) for c in calls])
        except Exception as exc:  # the round trip failed: so did every call in it
            for call in calls:
                _settle(call.reply, error=exc)
            return
        for call, reply in zip(calls, replies, strict=True):
            if isinstance(reply, Exception):
                _settle(call.reply, error=reply)
            else:
                _settle(call.reply, reply)

    async def run_together(self, calls: Sequence[tuple[AsyncScript, list[str], list[str | int]]]
                           ) -> list[Any]:
        """One pipelined round trip for ``calls``; per call, its reply or its
        error (returned, not raised). Raises when the round trip itself fails.
        Uses EVALSHA alone: redis-py's script objects would ask Redis with
        ``SCRIPT EXISTS`` first, a second round trip for every pipeline."""
        if self._cluster is not None:
            return await self._cluster.run_together(calls)
        if len(calls) == 1:
            self._round_trips += 1
            script, keys, args = calls[0]
            try:  # the script object's own call (it loads a script Redis forgot)
                return [await script(keys=keys, args=args)]
            except ResponseError as exc:
                return [exc]
        replies = await self._pipeline(calls)
        forgotten = [i for i, reply in enumerate(replies) if isinstance(reply, NoScriptError)]
        if forgotten:  # Redis restarted: load each script once, resend those calls together
            for script in {calls[i][0].sha: calls[i][0] for i in forgotten}.values():
                self._round_trips += 1
                await self._redis.script_load(script.script)
            resent = await self._pipeline([calls[i] for i in forgotten])
            for i, reply in zip(forgotten, resent, strict=True):
                replies[i] = reply
        return replies

    async def _pipeline(self, calls: Sequence[tuple[AsyncScript, list[str], list[str | int]]]
                        ) -> list[Any]:
        self._round_trips += 1
        assert isinstance(self._redis, Redis)
        async with self._redis.pipeline(transaction=False) as pipe:
            for script, keys, args in calls:
                pipe.evalsha(script.sha, len(keys), *keys, *args)
            replies: list[Any] = await pipe.execute(raise_on_error=False)
        return replies


def _settle(future: asyncio.Future[Any], result: Any = None, error: Exception | None = None
            ) -> None:
    if future.done():  # the caller was cancelled
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)
