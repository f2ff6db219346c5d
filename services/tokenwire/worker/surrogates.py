"""Model text made encodable: lone UTF-16 surrogates become U+FFFD.

A provider's JSON may carry ``"\\ud83d"`` — half of a surrogate pair, either
because the model really produced garbage or because the server split one
emoji's pair across two chunks. Python decodes that into a ``str`` that cannot
be encoded as UTF-8, and everything downstream (the hash, Redis, every client)
needs UTF-8. ``SurrogateRepair`` sits where the text enters the generation:

- a high surrogate at the end of a piece is held back; when the next piece
  starts with its low half, the two become the real character (nothing lost);
- any other lone surrogate becomes U+FFFD, the replacement character;
- valid text passes through unchanged (it never contains surrogates), so the
  buffers' losslessness is untouched and ``done.sha256`` is the hash of exactly
  the text clients assemble.
"""

from __future__ import annotations

import re

REPLACEMENT = "\ufffd"
_HIGH = range(0xD800, 0xDC00)
_SURROGATE = re.compile("[\ud800-\udfff]")


def _replace_lone(text: str) -> str:
    """Join adjacent high+low pairs; every other surrogate becomes U+FFFD."""
    if not _SURROGATE.search(text):
        return text
    # surrogatepass round-trip joins real pairs; what remains alone is replaced
    joined = text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")
    return _SURROGATE.sub(REPLACEMENT, joined)


class SurrogateRepair:
    """Stateful across the pieces of one stream (a pair may straddle two)."""

    def __init__(self) -> None:
        self._held = ""  # a trailing high surrogate, waiting for its low half

    def push(self, piece: str) -> str:
        """The encodable text of ``held + piece``; may hold back its last character."""
        text = self._held + piece
        self._held = ""
        if text and ord(text[-1]) in _HIGH:
            text, self._held = text[:-1], text[-1]
        return _replace_lone(text)

    def flush(self) -> str:
        """End of the stream: a high surrogate still held is a lone one."""
        held, self._held = self._held, ""
        return REPLACEMENT if held else ""

    def reset(self) -> None:
        """Forget a held half (its call is being retried from the start)."""
        self._held = ""
