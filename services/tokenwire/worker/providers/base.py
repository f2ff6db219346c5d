"""The seam between the generation loop and an LLM."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Protocol

from tokenwire.jobs import Job


@dataclass(frozen=True, slots=True)
class Delta:
    """One piece of a streamed completion: text, and/or the end of it."""

    text: str = ""
    finish_reason: str | None = None
    usage: dict[str, Any] | None = None


class UpstreamError(Exception):
    """The LLM call failed.

    ``code`` and ``message`` reach clients in the ``error`` event, so ``message``
    is one of our own fixed texts, never the provider's (which can quote key
    fragments and internal URLs). ``detail`` is the provider's own account,
    already redacted, for the log only."""

    def __init__(
        self, code: str, message: str, retryable: bool, retry_after: float | None = None,
        detail: str = "",
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.retryable = retryable
        self.retry_after = retry_after  # seconds the server asked us to wait
        self.detail = detail


class Provider(Protocol):
    name: str

    def stream(self, job: Job, prefix: str = "") -> AsyncIterator[Delta]:
        """Yield the completion — with a ``prefix``, only what follows it (the
        ``continue`` recovery mode). Closing the iterator early closes the
        upstream call. A stream that ends without a ``finish_reason`` raises
        ``UpstreamError``."""
        ...

    async def aclose(self) -> None: ...
