"""The job a backend enqueues (``POST /v1/streams``), validated before anything is written."""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)

from tokenwire.settings import BufferMode

MetadataValue = str | int | float | bool | None


def json_integer(value: Any) -> Any:
    """``5.0`` → ``5``, for a ``mode="before"`` field validator: JSON Schema's
    ``integer`` includes it, and the edge validates bodies strictly (no ``"5"``,
    no ``true``), where pydantic would refuse it. (A validator on the field, not
    on an ``Annotated`` type, so that the generated schema keeps its bounds.)"""
    return int(value) if isinstance(value, float) and value.is_integer() else value


ModelName = Annotated[str, StringConstraints(min_length=1, max_length=200,
                                             pattern=r"^[\x21-\x7e]+$")]
#: What a stream token may allow: follow the stream, or cancel it too.
TokenScope = Literal["read", "cancel"]


def _read_only() -> list[TokenScope]:
    return ["read"]


class Message(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Literal["system", "user", "assistant", "developer", "tool"]
    content: str = Field(max_length=200_000)


#: "Exactly one of ``messages`` and ``prompt``", in JSON Schema, for the OpenAPI
#: document (the validator below is what enforces it).
_ONE_INPUT: dict[str, Any] = {"oneOf": [
    {"required": ["messages"], "properties": {"messages": {"type": "array"}}},
    {"required": ["prompt"], "properties": {"prompt": {"type": "string"}}},
]}


class JobOptions(BaseModel):
    """What a request may say about how to generate, besides the input."""

    model_config = ConfigDict(extra="forbid")

    model: ModelName | None = None
    max_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    buffer: BufferMode | None = None
    metadata: dict[str, MetadataValue] = Field(default_factory=dict, max_length=64)
    # cancel_after is at least a second: edges report viewers a few times a
    # second at most; less would cancel streams that are being watched. The
    # pattern says so (no validator), so the OpenAPI document says it too.
    on_disconnect: str | None = Field(
        None, max_length=40, pattern=r"^(continue|cancel_after=0*[1-9]\d{0,5}(\.\d{1,3})?)$"
    )
    #: The stream token in the answer: its lifetime (the edge's default and
    #: maximum apply).
    token_ttl_seconds: int | None = Field(None, ge=60)

    _json_integers = field_validator("max_tokens", "token_ttl_seconds", mode="before")(
        json_integer)

    def idle_cancel_ms(self) -> int | None:
        """``on_disconnect: cancel_after=<seconds>`` in milliseconds; None: continue."""
        if self.on_disconnect is None or self.on_disconnect == "continue":
            return None
        return round(float(self.on_disconnect.split("=", 1)[1]) * 1000)


class JobRequest(JobOptions):
    """Either ``messages`` or ``prompt``; everything else optional."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=_ONE_INPUT)

    messages: list[Message] | None = Field(None, min_length=1, max_length=1000)
    prompt: str | None = Field(None, min_length=1, max_length=200_000)
    #: What the stream token allows (``read``; ``cancel`` too on request).
    token_scopes: list[TokenScope] = Field(default_factory=_read_only, min_length=1,
                                           max_length=2)

    @model_validator(mode="after")
    def _exactly_one_input(self) -> JobRequest:
        if (self.messages is None) == (self.prompt is None):
            raise ValueError("give exactly one of 'messages' or 'prompt'")
        return self

    def chat_messages(self) -> list[dict[str, str]]:
        if self.messages is not None:
            return [m.model_dump() for m in self.messages]
        return [{"role": "user", "content": self.prompt or ""}]


class Job(BaseModel):
    """A job as it travels on ``tw:jobs``: the request plus its resolved defaults."""

    stream_id: str
    messages: list[dict[str, str]]
    model: str
    max_tokens: int | None = None
    temperature: float | None = None
    buffer: BufferMode
    metadata: dict[str, MetadataValue] = Field(default_factory=dict)
    created_at_ms: int
    #: cancel when no client of any edge watched for this long (None: never)
    idle_cancel_ms: int | None = None
    #: who created it (None: auth disabled); the key's limits count this job
    tenant: str | None = None
    key_id: str | None = None
    #: the conversation whose turn this is: its answer is appended to its history
    conversation: str | None = None
    #: what a protocol facade needs to describe this stream later (e.g. the
    #: Responses API's request parameters), kept in the stream's record
    facade: dict[str, Any] | None = None
    #: W3C trace context (``traceparent``, ``tracestate``) of the request that
    #: created it, when tracing is on: the worker's spans join that trace
    trace: dict[str, str] | None = None

    def meta_fields(self) -> dict[str, str | int]:
        """The meta hash a new stream starts with (also rebuilt from here when
        Redis lost the stream while a worker was generating it)."""
        fields: dict[str, str | int] = {
            "status": "queued", "attempt": 0, "last_seq": 0, "model": self.model,
            "created_at": self.created_at_ms, "buffer": self.buffer,
        }
        if self.idle_cancel_ms is not None:
            fields["idle_cancel_ms"] = self.idle_cancel_ms
        if self.tenant is not None:
            fields["tenant"] = self.tenant
        if self.key_id is not None:
            fields["key_id"] = self.key_id
        if self.conversation is not None:
            fields["conversation"] = self.conversation
        if self.facade is not None:
            fields["facade"] = json.dumps(self.facade, separators=(",", ":"))
        return fields
