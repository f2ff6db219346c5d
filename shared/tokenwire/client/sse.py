"""Server-Sent Events, parsed line by line, tolerant of every framing the edge
has used or may use: ``retry:`` alone in a block or inside an event's block,
``: ping`` comments, typed heartbeat or notice events, CRLF or LF."""

from __future__ import annotations

import re
from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass

_LINE_END = re.compile("\r\n|\r|\n")


@dataclass(frozen=True, slots=True)
class SseMessage:
    """One dispatched message. ``id`` is the message's own id, None when it has
    none — unlike EventSource, which repeats the last one."""

    id: str | None
    event: str
    data: str


class LineSplitter:
    """Text chunks → lines, split only where SSE says a line ends: CRLF, LF or CR.

    Not ``str.splitlines`` (nor httpx's ``iter_lines``, built on it), which also
    splits at U+2028, U+0085 and other characters that JSON leaves unescaped in
    a ``data:`` line: model output containing one would cut an event in two."""

    def __init__(self) -> None:
        self._partial = ""

    def feed(self, text: str) -> list[str]:
        text = self._partial + text
        if text.endswith("\r"):  # maybe the first half of a CRLF: decide with the next chunk
            text, self._partial = text[:-1], "\r"
        else:
            self._partial = ""
        lines = _LINE_END.split(text)
        self._partial = lines.pop() + self._partial
        return lines


class SseParser:
    """Feed lines (without their line ending); get a message at each blank line
    that ends a block with data. Blocks without data (a lone ``retry:``,
    comments) dispatch nothing. ``retry_ms`` is the last ``retry:`` seen."""

    def __init__(self) -> None:
        self.retry_ms: int | None = None
        self._id: str | None = None
        self._event = "message"
        self._data: list[str] = []

    def feed(self, line: str) -> SseMessage | None:
        line = line.rstrip("\r\n")
        if not line:
            message = (SseMessage(self._id, self._event, "\n".join(self._data))
                       if self._data else None)
            self._id, self._event, self._data = None, "message", []
            return message
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "id":
            self._id = value
        elif name == "event":
            self._event = value
        elif name == "data":
            self._data.append(value)
        elif name == "retry" and value.isdigit():
            self.retry_ms = int(value)
        return None


async def parse_sse(lines: AsyncIterable[bytes | str],
                    ) -> AsyncIterator[tuple[str | None, str, str]]:
    """Yield ``(id, event, data)`` per SSE message from an async iterable of lines
    (an aiohttp ``response.content``, httpx's ``aiter_lines()``)."""
    parser = SseParser()
    async for raw in lines:
        message = parser.feed(raw.decode("utf-8") if isinstance(raw, bytes) else raw)
        if message is not None:
            yield message.id, message.event, message.data
