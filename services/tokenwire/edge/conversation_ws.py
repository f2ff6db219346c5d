"""``GET /v1/conversations/{id}/ws``: a conversation over one WebSocket.

Client → server, one JSON text frame each:

- ``{"type": "message", "content", ...job options}`` starts a turn (needs ``write``);
- ``{"type": "cancel"}`` cancels the active turn (needs ``cancel``).

Server → client:

- ``{"type": "turn", "stream_id", "message_id"}`` before the events of a turn
  (the one a message started, or the active one when the socket opens);
- the turn's events, exactly as on ``/v1/streams/{id}/ws`` (``{"id", "type", ...}``)
  up to its ``done`` / ``error``; the socket stays open for the next message;
- ``{"type": "refused", "status", "code", "message"}`` when a message or a
  cancel is refused (409 ``conversation_busy``, 422, 429, ...).

A reconnect with ``?last_event_id=`` resumes the active turn exactly (or the
rest of the last one, when it ended meanwhile and the cursor is of its epoch).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Any

from aiohttp import WSMsgType, web
from pydantic import ValidationError

from tokenwire.conversations import Conversation
from tokenwire.cursor import Cursor
from tokenwire.edge import keys as appkeys
from tokenwire.edge.auth import Principal
from tokenwire.edge.conversations import MessageRequest, conversation_id_of, options_of
from tokenwire.edge.cors import check_websocket_origin
from tokenwire.edge.errors import WS_SLOW_CONSUMER, WS_TRY_AGAIN, WS_UNAUTHORIZED, status_of
from tokenwire.edge.follower import StreamComplete
from tokenwire.edge.handlers import check_limits, require_websocket, resume_position
from tokenwire.edge.source import open_events
from tokenwire.edge.turns import cancel_turn, current, start_turn
from tokenwire.errors import InvalidValue, TokenwireError, Unauthorized
from tokenwire.events import dumps
from tokenwire.redis_client import TRANSPORT_ERRORS

log = logging.getLogger(__name__)


async def conversation_websocket(request: web.Request) -> web.WebSocketResponse:
    app = request.app
    settings = app[appkeys.SETTINGS]
    check_websocket_origin(request, settings)
    principal = await app[appkeys.AUTH].principal(request)
    conversation_id = conversation_id_of(request)
    tenant = principal.tenant_for_conversation(conversation_id, "read")
    position = resume_position(request, header=False)
    require_websocket(request)  # before any Redis work
    conversation = await current(app, tenant, conversation_id)  # 404 before the upgrade
    # An open socket is a delivery connection for all its life, idle or not:
    # counted against the conversation's key (429 before the upgrade when full).
    key_id = conversation.key_id or (principal.key.key_id if principal.key else None)
    async with app[appkeys.CONNECTIONS].held(key_id):
        ws = web.WebSocketResponse(heartbeat=settings.ws_heartbeat_seconds, compress=False)
        await ws.prepare(request)
        app[appkeys.LIFECYCLE].websockets.add(ws)
        session = _Session(app, ws, principal, tenant, conversation_id)
        try:
            await _resume(app, session, conversation, position)
            async for frame in ws:
                if frame.type == WSMsgType.TEXT:
                    await session.command(frame.data)
        finally:
            await session.close()
    return ws


async def _resume(app: web.Application, session: _Session, conversation: Conversation,
                  position: Cursor | None) -> None:
    """Follow the active turn — or the last one, when the client's cursor says
    it missed that turn's end."""
    if conversation.active is not None:
        session.follow(conversation.active.stream_id, conversation.active.message_id, position)
    elif position is not None and conversation.last_stream is not None:
        meta = await app[appkeys.STORE].meta(conversation.last_stream)
        if meta is not None and meta.epoch == position.epoch:  # its end was missed
            last = conversation.messages[-1].id if conversation.messages else ""
            session.follow(conversation.last_stream, last, position)


class _Session:
    """One socket: its commands, and the relay of the turn it follows."""

    def __init__(self, app: web.Application, ws: web.WebSocketResponse, principal: Principal,
                 tenant: str | None, conversation_id: str) -> None:
        self._app = app
        self._ws = ws
        self._principal = principal
        self._tenant = tenant
        self._conversation_id = conversation_id
        self._relay: asyncio.Task[None] | None = None

    async def command(self, text: str) -> None:
        try:
            command = json.loads(text)
        except (ValueError, RecursionError):
            await self._refuse(InvalidValue("malformed_json", "send one JSON object per frame"))
            return
        kind = command.get("type") if isinstance(command, dict) else None
        try:
            self._principal.check_unexpired()
        except Unauthorized as exc:  # a token expires; an open socket must not outlive it
            await self._refuse(exc)
            await self._close(WS_UNAUTHORIZED, b"token expired: reconnect with a fresh one")
            return
        try:
            if kind == "message":
                await self._message(command)
            elif kind == "cancel":
                await cancel_turn(self._app, self._principal, self._conversation_id)
            else:
                raise InvalidValue("unknown_command", 'send {"type": "message"} or "cancel"')
        except TokenwireError as exc:
            await self._refuse(exc)

    async def _message(self, command: dict[str, Any]) -> None:
        fields = {k: v for k, v in command.items() if k != "type"}
        try:
            message = MessageRequest.model_validate(fields, strict=True)
        except ValidationError as exc:
            raise InvalidValue("invalid_message", str(exc.errors()[0]["msg"])) from exc
        settings = self._app[appkeys.SETTINGS]
        check_limits(message, settings, "invalid_message")
        if len(message.content) > settings.conversation_max_chars:
            raise InvalidValue("invalid_message", "the message is longer than a conversation keeps")
        turn = await start_turn(self._app, self._principal, self._conversation_id,
                                message.content, options_of(message))
        if self._relay is not None and not self._relay.done():
            self._relay.cancel()  # the previous turn has ended (or this one could not start)
        self.follow(turn.stream_id, turn.message_id, None)

    def follow(self, stream_id: str, message_id: str, position: Cursor | None) -> None:
        self._relay = asyncio.create_task(self._send_turn(stream_id, message_id, position),
                                          name=f"conversation-{stream_id}")

    async def _send_turn(self, stream_id: str, message_id: str, position: Cursor | None
                         ) -> None:
        try:
            await self._send(dumps({"type": "turn", "stream_id": stream_id,
                                    "message_id": message_id}))
            try:
                events = await open_events(self._app, stream_id, position, tenant=self._tenant)
            except StreamComplete:
                return
            # The socket's own lease counts the connection; the census, the viewer.
            with self._app[appkeys.CENSUS].watching(stream_id, "conversation_ws"):
                async for event in events.events():
                    await self._send(event.ws_frame())
        except ConnectionResetError:
            return  # the client left (before TRANSPORT_ERRORS: it is a ConnectionError)
        except TimeoutError:
            await self._close(WS_SLOW_CONSUMER, b"slow consumer, resume from your cursor")
        except TRANSPORT_ERRORS as exc:
            log.warning("redis failed mid-turn, client will resume: %s", exc,
                        extra={"stream_id": stream_id})
            await self._close(WS_TRY_AGAIN, b"broker unavailable, resume")
        except TokenwireError as exc:
            await self._refuse(exc)

    async def _send(self, text: str) -> None:
        async with asyncio.timeout(self._app[appkeys.SETTINGS].send_timeout_seconds):
            await self._ws.send_str(text)

    async def _refuse(self, exc: TokenwireError) -> None:
        with contextlib.suppress(ConnectionError, TimeoutError, RuntimeError):
            await self._send(dumps({"type": "refused", "status": status_of(exc),
                                    "code": exc.code, "message": exc.message}))

    async def _close(self, code: int, reason: bytes) -> None:
        with contextlib.suppress(ConnectionError, TimeoutError):
            await self._ws.close(code=code, message=reason)

    async def close(self) -> None:
        if self._relay is not None:
            self._relay.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._relay
