"""Any OpenAI-compatible server, through the official SDK's async client."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import openai
from openai import AsyncOpenAI

from tokenwire.jobs import Job
from tokenwire.settings import Settings
from tokenwire.worker.providers.base import Delta, UpstreamError


class OpenAIProvider:
    """One ``AsyncOpenAI`` per process. The SDK retries failed requests itself
    (``openai_max_retries``) before the first byte; nothing here retries again."""

    name = "openai"

    def __init__(self, settings: Settings) -> None:
        key = settings.openai_api_key.get_secret_value() if settings.openai_api_key else "none"
        self._client = AsyncOpenAI(
            api_key=key,
            base_url=settings.openai_base_url,
            max_retries=settings.openai_max_retries,
            timeout=settings.openai_timeout_seconds,
        )

    async def stream(self, job: Job) -> AsyncIterator[Delta]:
        params: dict[str, Any] = {
            "model": job.model,
            "messages": job.messages,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if job.max_tokens is not None:
            params["max_tokens"] = job.max_tokens
        if job.temperature is not None:
            params["temperature"] = job.temperature
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
            retryable = exc.status_code == 429 or exc.status_code >= 500
            raise UpstreamError(f"upstream_{exc.status_code}", str(exc.message), retryable) from exc
        except openai.APITimeoutError as exc:
            raise UpstreamError("upstream_timeout", "the model server timed out", True) from exc
        except openai.APIConnectionError as exc:
            raise UpstreamError(
                "upstream_unavailable", "cannot reach the model server", True
            ) from exc
        if finish_reason is None:
            raise UpstreamError(
                "upstream_incomplete", "the model stream ended without a finish reason", True
            )

    async def aclose(self) -> None:
        await self._client.close()
