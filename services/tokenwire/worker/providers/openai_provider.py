"""Any OpenAI-compatible server, through the official SDK's async client."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import openai
from openai import AsyncOpenAI

from tokenwire.jobs import Job
from tokenwire.redaction import redact
from tokenwire.settings import Settings
from tokenwire.worker.providers.base import Delta, UpstreamError

_MAX_DETAIL_CHARS = 2000


class OpenAIProvider:
    """One ``AsyncOpenAI`` per process. The SDK's own retries are off: the
    generation loop retries in one place (``upstream_retries``), honouring
    ``Retry-After``, and knows whether text was already sent.

    A continuation (``prefix``) sends the text so far as a trailing assistant
    message with ``continue_final_message`` — the vLLM/SGLang convention for
    continuing a partial answer; a server without it will answer from scratch,
    so use the ``continue`` recovery mode only with one that has it."""

    name = "openai"

    def __init__(self, settings: Settings,
                 trace_headers: Callable[[], dict[str, str]] | None = None) -> None:
        """``trace_headers``: W3C trace headers of the current span, sent with
        each call (tracing on: the model server joins the trace)."""
        self._trace_headers = trace_headers
        key = settings.openai_api_key.get_secret_value() if settings.openai_api_key else "none"
        self._api_key = key
        self._client = AsyncOpenAI(
            api_key=key,
            base_url=settings.openai_base_url,
            max_retries=0,
            timeout=settings.openai_timeout_seconds,
        )

    async def stream(self, job: Job, prefix: str = "") -> AsyncIterator[Delta]:
        params: dict[str, Any] = {
            "model": job.model,
            "messages": job.messages,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if prefix:
            params["messages"] = [*job.messages, {"role": "assistant", "content": prefix}]
            params["extra_body"] = {"continue_final_message": True,
                                    "add_generation_prompt": False}
        if job.max_tokens is not None:
            params["max_tokens"] = job.max_tokens
        if job.temperature is not None:
            params["temperature"] = job.temperature
        if self._trace_headers is not None and (headers := self._trace_headers()):
            params["extra_headers"] = headers
        finish_reason: str | None = None
        try:
            upstream = await self._client.chat.completions.create(**params)
            async with upstream:
                async for chunk in upstream:
                    usage = chunk.usage.model_dump() if chunk.usage else None
                    if not chunk.choices:
                        if usage:
                            yield Delta(usage=usage)
                        continue
                    choice = chunk.choices[0]
                    text = (choice.delta.content or "") if choice.delta else ""
                    finish_reason = choice.finish_reason or finish_reason
                    if text or choice.finish_reason or usage:
                        yield Delta(text=text, finish_reason=choice.finish_reason, usage=usage)
        except openai.APIStatusError as exc:
            status = exc.status_code
            retryable = status in (408, 409, 429) or status >= 500
            raise UpstreamError(f"upstream_{status}", _status_message(status), retryable,
                                _retry_after(exc.response.headers), self._detail(exc)) from exc
        except openai.APITimeoutError as exc:
            raise UpstreamError("upstream_timeout", "the model server timed out", True,
                                detail=self._detail(exc)) from exc
        except openai.APIConnectionError as exc:
            raise UpstreamError("upstream_unavailable", "cannot reach the model server", True,
                                detail=self._detail(exc)) from exc
        if finish_reason is None:
            raise UpstreamError(
                "upstream_incomplete", "the model stream ended without a finish reason", True
            )

    async def aclose(self) -> None:
        await self._client.close()

    def _detail(self, exc: openai.OpenAIError) -> str:
        """The provider's own words about a failure, for the log: redacted, bounded."""
        return redact(f"{type(exc).__name__}: {exc}", [self._api_key])[:_MAX_DETAIL_CHARS]


def _status_message(status: int) -> str:
    """A fixed, client-safe description of an upstream HTTP status."""
    if status in (401, 403):
        return "the model server refused our credentials"
    if status == 429:
        return "the model server is rate limiting requests"
    if status >= 500:
        return f"the model server failed (HTTP {status})"
    return f"the model server rejected the request (HTTP {status})"


def _retry_after(headers: Any) -> float | None:
    """``Retry-After`` (seconds) or ``retry-after-ms``, capped at a minute."""
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is None:
            continue
        try:
            return min(max(float(value) * scale, 0.0), 60.0)
        except ValueError:
            return None  # an HTTP date: rare from LLM servers; use our own backoff
    return None
