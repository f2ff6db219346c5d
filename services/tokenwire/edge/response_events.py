"""A stream as the OpenAI Responses API's events, numbered from its cursor.

``sequence_number`` is a pure function of the Tokenwire event it comes from,
so every edge numbers the same event alike and ``starting_after=N`` resumes
exactly. Within an epoch (``o`` = the attempt that began it, from 1; ``B`` =
``(o - 1) * STRIDE``):

====================  ===========================================================
``B + 0``, ``B + 1``  ``response.created``, ``response.queued``
``B + 2 .. B + 4``    the ``start`` event (seq 1): ``response.in_progress``,
                      ``response.output_item.added``, ``response.content_part.added``
``B + k + 3``         the ``token`` event of seq ``k`` (k >= 2): ``response.output_text.delta``
``B + n + 3 ..``      the terminal event (seq ``n``): ``response.output_text.done``,
                      ``response.content_part.done``, ``response.output_item.done``,
                      ``response.completed`` / ``response.incomplete``; or ``response.failed``
``B + STRIDE - 1``    ``error`` ``stream_reset``: the generation restarted after
                      text of this epoch was sent (the protocol cannot take text back)
====================  ===========================================================

A later epoch's numbers are larger than any of an earlier one's, so numbers
never repeat; a position in an earlier epoch after which text was seen can
only be answered with the ``stream_reset`` error: retrieve from the start.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from tokenwire.cursor import Cursor
from tokenwire.events import Event
from tokenwire.store import StreamMeta

STRIDE = 1_000_000_000
_HEAD = 4  # local numbers 0..4 come before the first token


@dataclass(frozen=True, slots=True)
class Position:
    """Where to read the stream from, for a client after ``starting_after``."""

    cursor: Cursor | None  # None: the epoch from its start
    after: int  # skip every event numbered at or below this
    reset_from: int = 0  # the client saw text of this earlier epoch (its ordinal)


def base_of(ordinal: int) -> int:
    return (max(ordinal, 1) - 1) * STRIDE


def position_after(starting_after: int | None, meta: StreamMeta) -> Position:
    ordinal = max(meta.epoch_attempt, 1)
    base = base_of(ordinal)
    if starting_after is None:
        return Position(None, -1)
    client_ordinal, local = starting_after // STRIDE + 1, starting_after % STRIDE
    if client_ordinal < ordinal:
        if local > _HEAD:
            return Position(None, -1, reset_from=client_ordinal)
        return Position(None, base + local)  # nothing but the head seen: same place, new epoch
    if client_ordinal > ordinal or meta.epoch is None:
        return Position(None, starting_after)  # before the first epoch: wait for it
    seq = local - 3
    if seq < 1:
        return Position(None, starting_after)
    if meta.finished:
        seq = min(seq, meta.last_seq - 1)  # inside the terminal group: replay it, filtered
    return Position(Cursor(meta.epoch, seq), starting_after)


def reset_event(ordinal: int) -> dict[str, Any]:
    """The end of epoch ``ordinal``, for a client that saw some of its text."""
    return {"type": "error", "sequence_number": base_of(ordinal + 1) - 1,
            "code": "stream_reset",
            "message": "the generation restarted after a failure; retrieve the response again "
                       "without starting_after", "param": None}


class ResponseEvents:
    """Turns one stream's events into the Responses API's, numbered."""

    def __init__(self, item_id: str, describe: Callable[..., dict[str, Any]],
                 final_text: Callable[[], Awaitable[str]], meta: StreamMeta) -> None:
        self._item_id = item_id
        self._describe = describe  # (status, output, **extra) -> the response object
        self._final_text = final_text
        self._ordinal = max(meta.epoch_attempt, 1)
        self._seen_text = False

    async def convert(self, events: AsyncIterator[Event], position: Position
                      ) -> AsyncIterator[dict[str, Any]]:
        if position.reset_from:
            yield reset_event(position.reset_from)
            return
        if position.cursor is None:
            for head in self._head(self._ordinal):
                if head["sequence_number"] > position.after:
                    yield head
        async for event in events:
            for converted in await self._convert(event):
                if converted["sequence_number"] > position.after:
                    yield converted
                if converted["type"] == "error":
                    return

    def _head(self, ordinal: int) -> list[dict[str, Any]]:
        base = base_of(ordinal)
        queued = self._describe("queued", [])
        return [{"type": "response.created", "sequence_number": base, "response": queued},
                {"type": "response.queued", "sequence_number": base + 1, "response": queued}]

    async def _convert(self, event: Event) -> list[dict[str, Any]]:
        data = event.payload()
        if event.type == "reset":
            if self._seen_text:
                return [reset_event(self._ordinal)]
            return []  # nothing of the old epoch's text was sent: carry on
        if event.type == "start":
            self._ordinal = int(data.get("attempt", self._ordinal))
            base = base_of(self._ordinal)
            return [
                {"type": "response.in_progress", "sequence_number": base + 2,
                 "response": self._describe("in_progress", [])},
                {"type": "response.output_item.added", "sequence_number": base + 3,
                 "output_index": 0, "item": self._item("in_progress", None)},
                {"type": "response.content_part.added", "sequence_number": base + 4,
                 "item_id": self._item_id, "output_index": 0, "content_index": 0,
                 "part": _part("")}]
        number = base_of(self._ordinal) + event.seq + 3
        if event.type in ("token", "snapshot"):
            if event.type == "snapshot" and self._seen_text:
                return [reset_event(self._ordinal)]
            self._seen_text = self._seen_text or bool(data["content"])
            return [{"type": "response.output_text.delta", "sequence_number": number,
                     "item_id": self._item_id, "output_index": 0, "content_index": 0,
                     "delta": data["content"], "logprobs": []}]
        if event.type == "error":
            failed = self._describe("failed", [], error={"code": data["code"],
                                                         "message": data["message"]})
            return [{"type": "response.failed", "sequence_number": number, "response": failed}]
        if event.type != "done":
            return []
        text = await self._final_text()
        status, extra = status_of_done(data)
        item = self._item("completed" if status == "completed" else "incomplete", text)
        response = self._describe(status, [item], usage=usage_of(data), **extra)
        kind = "response.completed" if status == "completed" else "response.incomplete"
        return [
            {"type": "response.output_text.done", "sequence_number": number,
             "item_id": self._item_id, "output_index": 0, "content_index": 0, "text": text,
             "logprobs": []},
            {"type": "response.content_part.done", "sequence_number": number + 1,
             "item_id": self._item_id, "output_index": 0, "content_index": 0,
             "part": _part(text)},
            {"type": "response.output_item.done", "sequence_number": number + 2,
             "output_index": 0, "item": item},
            {"type": kind, "sequence_number": number + 3, "response": response}]

    def _item(self, status: str, text: str | None) -> dict[str, Any]:
        return {"id": self._item_id, "type": "message", "status": status, "role": "assistant",
                "content": [] if text is None else [_part(text)]}


def _part(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def status_of_done(done: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The response status a ``done`` event means, and what goes with it."""
    reason = done.get("finish_reason")
    if reason == "cancelled":
        return "cancelled", {"incomplete_details": {"reason": "cancelled"}}
    if reason == "length":
        return "incomplete", {"incomplete_details": {"reason": "max_output_tokens"}}
    return "completed", {}


def usage_of(done: dict[str, Any]) -> dict[str, Any]:
    usage = done.get("usage") or {}
    output = int(usage.get("completion_tokens", done.get("tokens", 0)))
    given = int(usage.get("prompt_tokens", 0))
    return {"input_tokens": given, "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": output, "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": given + output}
