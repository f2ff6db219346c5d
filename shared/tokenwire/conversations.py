"""Conversations: a history kept in Redis, one generation (a *turn*) at a time.

A conversation belongs to a tenant and has an id its creator may choose
(``[A-Za-z0-9_-]{1,64}``). Its record and its messages share one hash tag
(``keys.conversation_keys``), so each change is one script on one Cluster slot:

- ``conversation_begin``: refuse while a turn runs (``TurnInProgress``, 409),
  append the user's message, drop the oldest whole turns past the limits, and
  name the turn's stream as the active one — the history the job carries is
  what the script returns.
- ``conversation_end``: the first call for the active turn appends its answer
  and frees the conversation; any later call is stale. That makes "the answer
  is appended exactly once" independent of who calls it: the worker after the
  terminal write, a worker that reclaims a finished job, an edge that notices
  the turn's stream has ended, two edges at once.

What an ended turn appends (``settle``): ``done`` its text, ``cancelled`` the
text that was delivered (marked ``cancelled``), ``error`` nothing. Used by the
edge and the worker; knows Redis, not HTTP.
"""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import dataclass
from typing import Any, cast

from tokenwire import keys
from tokenwire.errors import Conflict, ConversationNotFound, InvalidValue
from tokenwire.redis_client import RedisClient
from tokenwire.scriptfiles import load_script
from tokenwire.settings import Settings
from tokenwire.store import StreamStore

#: A turn whose stream never appeared (its edge died between the two steps)
#: is given up after this long.
ABANDON_AFTER_MS = 30_000


def new_message_id() -> str:
    return "msg_" + secrets.token_urlsafe(12)


def _now_ms() -> int:
    return int(time.time() * 1000)


@dataclass(frozen=True, slots=True)
class ConversationMessage:
    """One message of a history. An assistant message records the stream that
    produced it, how it ended (``done`` / ``cancelled``) and its finish reason."""

    id: str
    role: str
    content: str
    created_at_ms: int
    stream_id: str | None = None
    status: str | None = None
    finish_reason: str | None = None

    @classmethod
    def from_json(cls, raw: str) -> ConversationMessage:
        data = json.loads(raw)
        return cls(id=str(data["id"]), role=str(data["role"]), content=str(data["content"]),
                   created_at_ms=int(data.get("created_at", 0)),
                   stream_id=data.get("stream_id"), status=data.get("status"),
                   finish_reason=data.get("finish_reason"))

    def to_json(self) -> str:
        return json.dumps({"id": self.id, "role": self.role, "content": self.content,
                           "created_at": self.created_at_ms}, ensure_ascii=False)

    def public(self) -> dict[str, Any]:
        body: dict[str, Any] = {"id": self.id, "role": self.role, "content": self.content,
                                "created_at_ms": self.created_at_ms}
        if self.role == "assistant":
            body.update(stream_id=self.stream_id, status=self.status,
                        finish_reason=self.finish_reason)
        return body


@dataclass(frozen=True, slots=True)
class ActiveTurn:
    stream_id: str
    message_id: str  # the assistant message it will append
    since_ms: int


@dataclass(frozen=True, slots=True)
class Conversation:
    id: str
    tenant: str | None
    key_id: str | None  # the API key that created it: its limits count the turns
    system: str
    created_at_ms: int
    updated_at_ms: int
    active: ActiveTurn | None
    last_stream: str | None
    messages: list[ConversationMessage]

    def chat_messages(self, history: list[ConversationMessage] | None = None
                      ) -> list[dict[str, str]]:
        """A job's ``messages``: the system prompt, then the history."""
        system = [{"role": "system", "content": self.system}] if self.system else []
        return system + [{"role": m.role, "content": m.content}
                         for m in (self.messages if history is None else history)]


class TurnInProgress(Conflict):
    """The conversation is generating an answer (one turn at a time: 409)."""

    def __init__(self, stream_id: str, since_ms: int) -> None:
        super().__init__("conversation_busy",
                         "this conversation is answering a message; wait for it or cancel it")
        self.stream_id = stream_id
        self.since_ms = since_ms


class ConversationStore:
    def __init__(self, redis: RedisClient, settings: Settings) -> None:
        self._redis = redis
        self._settings = settings
        self._create = redis.register_script(
            load_script("conversation_create", prelude="conversation_prelude"))
        self._begin = redis.register_script(
            load_script("conversation_begin", prelude="conversation_prelude"))
        self._end = redis.register_script(
            load_script("conversation_end", prelude="conversation_prelude", allow_oom=True))

    async def load_scripts(self) -> None:
        for script in (self._create, self._begin, self._end):
            await self._redis.script_load(script.script)

    async def create(self, tenant: str | None, conversation_id: str, key_id: str | None,
                     system: str = "") -> bool:
        """Create the conversation; False when it already exists (left as it is)."""
        reply = await self._create(
            keys=keys.conversation_keys(tenant, conversation_id),
            args=[tenant or "", conversation_id, _now_ms(), key_id or "", system,
                  self._settings.conversation_ttl_seconds])
        return str(reply) == "created"

    async def get(self, tenant: str | None, conversation_id: str) -> Conversation | None:
        record_key, messages_key = keys.conversation_keys(tenant, conversation_id)
        async with self._redis.pipeline(transaction=True) as pipe:  # one slot
            pipe.hgetall(record_key)
            pipe.lrange(messages_key, 0, -1)
            raw, messages = await pipe.execute()
        record = cast(dict[str, str], raw)
        if not record:
            return None
        active = None
        if record.get("active"):
            active = ActiveTurn(record["active"], record.get("active_message", ""),
                                int(record.get("active_since", 0)))
        return Conversation(
            id=conversation_id, tenant=record.get("tenant") or None,
            key_id=record.get("key_id") or None, system=record.get("system", ""),
            created_at_ms=int(record.get("created_at", 0)),
            updated_at_ms=int(record.get("updated_at", 0)), active=active,
            last_stream=record.get("last_stream") or None,
            messages=[ConversationMessage.from_json(m) for m in cast(list[str], messages)])

    async def begin_turn(
        self, tenant: str | None, conversation_id: str, *, stream_id: str, message_id: str,
        user_message: ConversationMessage | None, create: bool = False,
        key_id: str | None = None, truncate_from: str = "", regenerate: bool = False,
    ) -> list[ConversationMessage]:
        """Make ``stream_id`` the conversation's active turn; returns the history
        it answers. Raises ``ConversationNotFound``, ``TurnInProgress``, or
        ``InvalidValue`` (``truncate_from`` names no message; ``regenerate`` and
        nothing to answer again)."""
        settings = self._settings
        reply = await self._begin(
            keys=keys.conversation_keys(tenant, conversation_id),
            args=[tenant or "", conversation_id, _now_ms(), "1" if create else "0",
                  key_id or "", stream_id, message_id,
                  user_message.to_json() if user_message is not None else "", truncate_from,
                  "1" if regenerate else "0", settings.conversation_max_messages,
                  settings.conversation_max_chars, settings.conversation_ttl_seconds])
        outcome = str(reply[0])
        if outcome == "missing":
            raise ConversationNotFound()
        if outcome == "busy":
            raise TurnInProgress(str(reply[1]), int(reply[2]))
        if outcome == "unknown_message":
            raise InvalidValue("unknown_message", "no message of this conversation has this id")
        if outcome == "nothing_to_regenerate":
            raise InvalidValue("nothing_to_regenerate",
                               "the conversation has no message of the user to answer again")
        return [ConversationMessage.from_json(str(raw)) for raw in reply[1:]]

    async def end_turn(self, tenant: str | None, conversation_id: str, stream_id: str,
                       outcome: str, *, content: str = "", finish_reason: str = "") -> bool:
        """End the turn of ``stream_id`` if it is the active one (see the module
        docstring); False when it was ended already."""
        settings = self._settings
        reply = await self._end(
            keys=keys.conversation_keys(tenant, conversation_id),
            args=[stream_id, outcome, content, finish_reason, _now_ms(),
                  settings.conversation_max_messages, settings.conversation_max_chars,
                  settings.conversation_ttl_seconds])
        return str(reply) == "ok"

    async def settle(self, tenant: str | None, conversation_id: str, stream_id: str,
                     streams: StreamStore, *, turn_since_ms: int | None = None) -> bool:
        """End the turn of ``stream_id`` if its stream has ended; True when the
        turn is over (now or before), False while it still runs. A stream that
        never appeared is given up ``ABANDON_AFTER_MS`` after ``turn_since_ms``."""
        snap = await streams.snapshot(stream_id)
        if snap is None:
            if turn_since_ms is None or _now_ms() - turn_since_ms < ABANDON_AFTER_MS:
                return False
            await self.end_turn(tenant, conversation_id, stream_id, "abandoned")
            return True
        if not snap.meta.finished:
            return False
        final = snap.meta.final or {}
        outcome = snap.meta.status  # done | cancelled | error
        await self.end_turn(tenant, conversation_id, stream_id, outcome,
                            content=snap.text if outcome != "error" else "",
                            finish_reason=str(final.get("finish_reason") or ""))
        return True
