"""Stream positions: the opaque ``<epoch>.<seq>`` cursor clients resume from."""

from __future__ import annotations

import re
from dataclasses import dataclass

from tokenwire.errors import MalformedRequest

_CURSOR = re.compile(r"^([A-Za-z0-9_-]{1,32})\.(0|[1-9][0-9]{0,17})$")


@dataclass(frozen=True, slots=True)
class Cursor:
    """``seq`` counts the events of ``epoch`` from 1; ``E.0`` means "nothing of E yet"."""

    epoch: str
    seq: int

    def __str__(self) -> str:
        return f"{self.epoch}.{self.seq}"

    @classmethod
    def parse(cls, raw: str) -> Cursor:
        """Parse a client-supplied cursor; anything malformed is a 400."""
        match = _CURSOR.fullmatch(raw)
        if match is None:
            raise MalformedRequest("bad_cursor", "Last-Event-ID must look like <epoch>.<seq>")
        return cls(match.group(1), int(match.group(2)))

    @classmethod
    def parse_optional(cls, raw: str | None) -> Cursor | None:
        if raw is None or raw == "":
            return None
        return cls.parse(raw)
