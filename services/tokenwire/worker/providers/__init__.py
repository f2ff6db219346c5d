"""LLM token sources behind one protocol (``Provider``)."""

from __future__ import annotations

from tokenwire.settings import Settings
from tokenwire.tracing import NO_TRACING, Tracing
from tokenwire.worker.providers.base import Delta, Provider, UpstreamError
from tokenwire.worker.providers.openai_provider import OpenAIProvider
from tokenwire.worker.providers.simulated import SimulatedProvider

__all__ = ["Delta", "OpenAIProvider", "Provider", "SimulatedProvider", "UpstreamError",
           "create_provider"]


def create_provider(settings: Settings, tracing: Tracing = NO_TRACING) -> Provider:
    """``tracing``: the model server gets the current span's ``traceparent``."""
    if settings.effective_provider == "openai":
        return OpenAIProvider(settings, trace_headers=tracing.headers)
    return SimulatedProvider(
        tokens_per_second=settings.simulated_tokens_per_second,
        first_token_delay=settings.simulated_first_token_delay_ms / 1000,
    )
