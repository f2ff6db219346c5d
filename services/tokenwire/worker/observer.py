"""How a generation is observed without knowing by whom: the seam between the
generation loop and the worker's metrics and trace spans (``observe``).

``Generation`` enters ``GenerationObserver.upstream_call`` around each call to
the model and tells the ``UpstreamCall`` what it sees; no span or metric is
made per token other than the inter-token gap, which is one histogram
observation.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Protocol

from tokenwire.worker.providers import UpstreamError


class UpstreamCall(Protocol):
    """One upstream call, as an observer sees it (the worker's metrics, a trace
    span). Told per text delta: keep it cheap."""

    def first_text(self, seconds: float) -> None:
        """The call's first text arrived ``seconds`` after the call began."""

    def gap(self, seconds: float) -> None:
        """A text delta arrived ``seconds`` after the previous one."""

    def ended(self, outcome: str | UpstreamError, usage: dict[str, Any] | None) -> None:
        """The call ended: a finish reason (``cancelled`` too), or its error."""


class GenerationObserver(Protocol):
    def upstream_call(self) -> AbstractContextManager[UpstreamCall]:
        """Entered around each upstream call; the reader task starts inside it
        (so a trace span entered here is the current one for the call)."""


class Unobserved:
    """No observer: every hook does nothing."""

    def first_text(self, seconds: float) -> None:
        pass

    def gap(self, seconds: float) -> None:
        pass

    def ended(self, outcome: str | UpstreamError, usage: dict[str, Any] | None) -> None:
        pass

    @contextlib.contextmanager
    def upstream_call(self) -> Iterator[UpstreamCall]:
        yield self


@dataclass(frozen=True, slots=True)
class GenerationReport:
    """What one attempt did, for the worker's log line and metrics."""

    tokens: int  # the stream's model tokens so far (a continued epoch's included)
    ttft_seconds: float | None  # attempt start → first text from the model
    duration_seconds: float
    finish_reason: str | None
    cancel_latency_seconds: float | None
    usage: dict[str, Any] | None
