"""Script calls pipelined per node of a Valkey/Redis Cluster.

redis-py's cluster pipeline refuses ``EVALSHA``, and a script call through the
client is one round trip each. Here the calls of one batch are grouped by the
node that serves their slot (every script's keys share one hash tag, so one
slot) and each group is one pipeline on one connection to that node. Each
call keeps its own reply or error, as in standalone; what the cluster answers
instead of running a script is handled per call, the way redis-py's client
handles it for one command:

- ``MOVED`` (the slot has another owner: a migration ended, a failover): the
  slot map is patched and the call sent to the new owner;
- ``ASK`` (the slot is being migrated and the keys are already on the target):
  sent to the target, preceded by ``ASKING`` on the same connection;
- ``TRYAGAIN`` (a migration has the keys on both sides): sent again shortly;
- ``NOSCRIPT`` (a node that never saw the script: a promoted replica, a
  restarted node): loaded on that node, and the call sent again.

None of these ran the script, so sending it again is safe. A connection that
fails fails every call of its group (the callers' seq-checked retries handle
that, as in standalone), and the slot map is refreshed before the next batch:
after a failover, the next batch goes to the new master.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import hiredis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.commands.core import AsyncScript
from redis.exceptions import AskError, MovedError, NoScriptError, ResponseError, TryAgainError

from tokenwire.redis_client import TRANSPORT_ERRORS, BoundedRedisCluster

#: Rounds of redirections before a call's last redirection is its answer.
MAX_ROUNDS = 8
TRY_AGAIN_DELAY = 0.05

ScriptCall = tuple[AsyncScript, list[str], list[str | int]]


class ClusterScripts:
    def __init__(self, cluster: RedisCluster) -> None:
        self._cluster = cluster
        self._stale_map = False  # a node failed: refresh the slot map first
        self.round_trips = 0

    async def run_together(self, calls: Sequence[ScriptCall]) -> list[Any]:
        """Per call, its reply or its error (returned, not raised)."""
        if self._stale_map:
            self._stale_map = False
            await self._cluster.nodes_manager.initialize()
        replies: list[Any] = [None] * len(calls)
        pending = list(range(len(calls)))
        asking: dict[int, str] = {}  # call index -> node name that said ASK
        for _ in range(MAX_ROUNDS):
            groups: dict[ClusterNode, list[int]] = defaultdict(list)
            for index in pending:
                groups[self._node_for(calls[index], asking.get(index))].append(index)
            sent = await asyncio.gather(*(
                self._send(node, [calls[i] for i in indexes], [i in asking for i in indexes])
                for node, indexes in groups.items()), return_exceptions=True)
            pending, asking, try_again = await self._sort(
                calls, groups, sent, replies)
            if not pending:
                return replies
            if try_again:
                await asyncio.sleep(TRY_AGAIN_DELAY)
        return replies  # each still-pending call holds its last redirection

    def _node_for(self, call: ScriptCall, asked: str | None) -> ClusterNode:
        if asked is not None:
            node = self._cluster.get_node(node_name=asked)
            if node is not None:
                return node
        keys = call[1]
        return self._cluster.nodes_manager.get_node_from_slot(self._cluster.keyslot(keys[0]))

    async def _sort(self, calls: Sequence[ScriptCall], groups: dict[ClusterNode, list[int]],
                    sent: list[list[Any] | BaseException], replies: list[Any]
                    ) -> tuple[list[int], dict[int, str], bool]:
        """File each call's answer; returns the calls to send again (and where)."""
        again: list[int] = []
        asking: dict[int, str] = {}
        try_again = False
        for (node, indexes), answers in zip(groups.items(), sent, strict=True):
            if isinstance(answers, BaseException):
                if not isinstance(answers, Exception):
                    raise answers  # cancelled
                if isinstance(answers, TRANSPORT_ERRORS):
                    self._stale_map = True
                for index in indexes:
                    replies[index] = answers
                continue
            forgotten = [i for i, a in zip(indexes, answers, strict=True)
                         if isinstance(a, NoScriptError)]
            for script in {calls[i][0].sha: calls[i][0] for i in forgotten}.values():
                await node.execute_command("SCRIPT", "LOAD", script.script)
                self.round_trips += 1
            for index, answer in zip(indexes, answers, strict=True):
                replies[index] = answer
                if isinstance(answer, NoScriptError):
                    again.append(index)
                elif isinstance(answer, MovedError):
                    await self._cluster.nodes_manager.move_slot(answer)
                    again.append(index)
                elif isinstance(answer, AskError):
                    asking[index] = f"{answer.host}:{answer.port}"
                    again.append(index)
                elif isinstance(answer, TryAgainError):
                    try_again = True
                    again.append(index)
        return again, asking, try_again

    async def _send(self, node: ClusterNode, calls: list[ScriptCall], asking: list[bool]
                    ) -> list[Any]:
        """One pipeline on one connection to ``node``."""
        packed = []
        for (script, keys, args), asked in zip(calls, asking, strict=True):
            if asked:
                packed.append(hiredis.pack_command(("ASKING",)))
            command: tuple[Any, ...] = ("EVALSHA", script.sha, len(keys), *keys, *args)
            packed.append(hiredis.pack_command(command))
        cluster = self._cluster
        assert isinstance(cluster, BoundedRedisCluster)
        async with cluster.turn():
            self.round_trips += 1
            connection = node.acquire_connection()
            try:
                await node.disconnect_if_needed(connection)
                await connection.send_packed_command(b"".join(packed))
                answers = []
                for asked in asking:
                    if asked:
                        await _reply(node, connection, "ASKING")
                    answers.append(await _reply(node, connection, "EVALSHA"))
                return answers
            except BaseException:
                # The connection's state is unknown (a reply half-read): drop it.
                await connection.disconnect()
                node.update_active_connections_for_reconnect()
                raise
            finally:
                node.release(connection)


async def _reply(node: ClusterNode, connection: Any, command: str) -> Any:
    try:
        return await node.parse_response(connection, command)
    except ResponseError as exc:
        return exc
