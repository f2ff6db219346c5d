"""Configuration: environment variables with the ``TOKENWIRE_`` prefix and a ``.env`` file.

Built once in an entry point and passed down; nothing reads the environment elsewhere.
``REDIS_URL``, ``OPENAI_API_KEY`` and ``OPENAI_BASE_URL`` are honoured as well, the
way the wider ecosystem names them.
"""

from __future__ import annotations

import json
import os
import re
import socket
from typing import Annotated, Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

BufferMode = Literal["none", "word", "sentence", "coalesce"]

_ORIGIN = re.compile(r"^https?://[A-Za-z0-9.-]+(:\d{1,5})?$|^https?://\[[0-9A-Fa-f:.]+\](:\d{1,5})?$")


def _default_consumer_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


class Settings(BaseSettings):
    """Every knob of Tokenwire. The README's settings table mirrors this class."""

    model_config = SettingsConfigDict(
        env_prefix="TOKENWIRE_", env_file=".env", extra="ignore", populate_by_name=True
    )

    # Redis / Valkey
    redis_url: str = Field(
        "redis://127.0.0.1:6379/0",
        validation_alias=AliasChoices("TOKENWIRE_REDIS_URL", "REDIS_URL"),
    )
    redis_mode: Literal["standalone", "sentinel", "cluster"] = Field(
        "standalone", description="standalone: redis_url names the server; sentinel: the "
                                  "sentinels; cluster: any node of a Valkey/Redis Cluster")
    redis_sentinel_master: str = Field(
        "mymaster", min_length=1, description="sentinel mode: the monitored master's name")
    redis_max_connections: int = Field(16, ge=2, description="pool size per worker process")
    edge_redis_max_connections: int = Field(
        4, ge=2, description="pool size per edge process, its hub's pub/sub connection included")
    redis_socket_timeout: float = Field(10.0, gt=0)
    read_block_ms: int = Field(
        2000, ge=10, description="the longest an idle worker goes without reading every job "
                                 "partition (a wake-up usually comes first)")

    # Data retention
    events_maxlen: int = Field(10_000, ge=10, description="cap of each event stream")
    events_ttl_seconds: int = Field(3600, ge=1, description="event stream TTL after the end")
    meta_ttl_seconds: int = Field(86_400, ge=60, description="meta hash and text TTL")
    idempotency_ttl_seconds: int = Field(86_400, ge=60)
    max_queue_length: int = Field(10_000, ge=1, description="queued jobs before 429")
    job_partitions: int = Field(
        16, ge=1, le=256, description="job streams, spread over a cluster's slots")

    # Worker
    worker_concurrency: int = Field(64, ge=1)
    worker_claim_timeout_ms: int = Field(30_000, ge=100, description="idle time before reclaim")
    worker_shutdown_grace_seconds: float = Field(10.0, ge=0)
    consumer_name: str = Field(default_factory=_default_consumer_name)
    worker_metrics_port: int | None = Field(
        None, ge=0, le=65535,
        description="the worker's /metrics, /healthz, /readyz listener (unset: none; 0: any)")
    worker_metrics_host: str = Field("127.0.0.1", description="address of that listener")

    # Failure handling
    max_attempts: int = Field(
        3, ge=1, description="generation attempts per job before it is dead-lettered")
    recovery_mode: Literal["restart", "continue"] = Field(
        "restart", description="after a worker crash: restart (reset) or continue from the text")
    upstream_retries: int = Field(
        3, ge=0, description="retries of a failed LLM call before its first token")
    upstream_backoff_seconds: float = Field(
        0.5, ge=0, description="first retry delay (doubles; Retry-After wins)")
    upstream_deadline_seconds: float = Field(
        600.0, gt=0, description="longest one generation attempt may take")
    upstream_max_gap_seconds: float = Field(
        60.0, gt=0, description="longest silence from the LLM, first token included")

    # LLM providers
    provider: Literal["auto", "openai", "simulated"] = "auto"
    openai_api_key: SecretStr | None = Field(
        None, validation_alias=AliasChoices("TOKENWIRE_OPENAI_API_KEY", "OPENAI_API_KEY")
    )
    openai_base_url: str | None = Field(
        None, validation_alias=AliasChoices("TOKENWIRE_OPENAI_BASE_URL", "OPENAI_BASE_URL")
    )
    openai_timeout_seconds: float = Field(60.0, gt=0)
    default_model: str = "gpt-4o-mini"
    models: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="the models this deployment serves (GET /v1/models); empty: the default")
    simulated_tokens_per_second: float = Field(40.0, gt=0)
    simulated_first_token_delay_ms: int = Field(150, ge=0)

    # Token buffering
    default_buffer: BufferMode = "coalesce"
    coalesce_chars: int = Field(64, ge=1)
    flush_interval_ms: int = Field(40, ge=1, description="longest a buffer holds text")

    # Input limits
    max_body_bytes: int = Field(256 * 1024, ge=1024)
    max_tokens_limit: int = Field(16_384, ge=1)
    max_json_depth: int = Field(32, ge=4, description="deeper JSON bodies get 400")
    request_head_timeout_seconds: float = Field(
        10.0, gt=0, description="a request head (line + headers) must arrive within this")
    request_body_timeout_seconds: float = Field(
        30.0, gt=0, description="a request body must arrive within this (408)")
    keepalive_timeout_seconds: float = Field(
        75.0, gt=0, description="an idle keep-alive connection is closed after this")

    # Edge
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    sse_ping_seconds: float = Field(15.0, gt=0, le=15.0)
    sse_retry_ms: int = Field(2000, ge=100, description="base of the jittered retry: field")
    ws_heartbeat_seconds: float = Field(20.0, gt=0)
    subscriber_queue_size: int = Field(1024, ge=8, description="live events queued per client")
    client_backlog_chars: int = Field(64 * 1024, ge=1024,
                                      description="unsent text per client before backpressure")
    slow_consumer_seconds: float = Field(10.0, gt=0,
                                         description="stuck this long: disconnect, resume later")
    send_timeout_seconds: float = Field(10.0, gt=0, description="one write to a client")
    drain_ready_delay_seconds: float = Field(
        1.0, ge=0, description="on SIGTERM: fail /readyz this long before closing streams")
    drain_seconds: float = Field(5.0, ge=0,
                                 description="reconnects are spread over this window")
    idle_resync_seconds: float = Field(30.0, gt=0, description="re-check Redis when quiet")
    edge_redis_outage_seconds: float = Field(
        30.0, ge=0, description="hold open streams (pinging) this long while Redis is down")
    edge_rebuild_grace_seconds: float = Field(
        15.0, ge=0, description="after Redis came back or restarted, a missing stream record "
                                "is answered as transient (being rebuilt) this long")
    watch_touch_seconds: float = Field(
        2.0, gt=0, description="how often an edge reports streams it is delivering")

    # Conversations
    conversation_max_messages: int = Field(
        200, ge=2, description="history kept per conversation; older whole turns are dropped")
    conversation_max_chars: int = Field(
        100_000, ge=1000, description="characters kept per conversation (older whole turns go)")
    conversation_ttl_seconds: int = Field(
        7 * 86_400, ge=60, description="a conversation expires this long after its last change")

    # Security (README "Security")
    auth_disabled: bool = Field(
        False, description="no API keys or tokens at all: anyone may create and read any stream")
    token_secret: SecretStr | None = Field(
        None, description="HS256 secret: the edge mints and verifies stream tokens")
    token_public_key: str | None = Field(
        None, description="PEM public key (RS256/ES256/EdDSA): verify tokens a backend signed")
    token_audience: str = Field("tokenwire", min_length=1, description="the tokens' aud claim")
    token_ttl_seconds: int = Field(
        7200, ge=60, description="default lifetime of a stream token (covers the history window)")
    token_max_ttl_seconds: int = Field(
        86_400, ge=60, description="longest lifetime a request may ask for")
    admin_key: SecretStr | None = Field(
        None, description="Bearer key of the admin API (unset: not served); at least 32 bytes")
    metrics_key: SecretStr | None = Field(
        None, description="Bearer key of /metrics (a scraper's credential, which cannot "
        "mint API keys); unset: the admin key")
    metrics_public: bool = Field(False, description="serve /metrics to anyone")
    delivery_metrics: bool = Field(
        True, description="observe each frame's delivery lag and each client's time to first "
        "token on an edge (off: only events sent are counted on the hot path)")
    cors_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="origins allowed by CORS and the WebSocket check")
    key_cache_seconds: float = Field(
        2.0, ge=0, le=5, description="how long an edge trusts an API key lookup")
    running_lease_seconds: int = Field(
        900, ge=10, description="a key's running-generation slot heals after this if leaked")
    connection_lease_seconds: float = Field(
        60.0, ge=1, description="a key's connection slot heals after this if its edge died")
    demo_api_key: SecretStr | None = Field(
        None, description="dev only: POST /demo/streams creates streams with this key")

    # Runtime
    event_loop: Literal["asyncio", "uvloop"] = Field(
        "asyncio", description="uvloop: faster I/O, if installed (pip install uvloop)")

    # Logging
    log_level: str = "INFO"
    log_format: Literal["text", "json"] = "text"

    @model_validator(mode="after")
    def _block_below_socket_timeout(self) -> Settings:
        # redis-py issue 2807: a blocking read longer than the socket timeout
        # looks like a dead connection.
        if self.read_block_ms / 1000 >= self.redis_socket_timeout:
            raise ValueError("read_block_ms must stay below redis_socket_timeout")
        return self

    @model_validator(mode="after")
    def _sentinel_urls_name_sentinels(self) -> Settings:
        if self.redis_mode == "sentinel" and self.redis_url.startswith("unix://"):
            raise ValueError("sentinel mode: TOKENWIRE_REDIS_URL names the sentinels "
                             "(redis://host:port,host:port)")
        if self.redis_mode == "cluster" and self.redis_url.startswith("unix://"):
            raise ValueError("cluster mode: TOKENWIRE_REDIS_URL names a node (redis://host:port)")
        return self

    @field_validator("token_secret", "token_public_key", "admin_key", "metrics_key",
                     "demo_api_key", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        """``TOKENWIRE_ADMIN_KEY=`` (as compose writes an unset variable) is no key."""
        if value == "" or (isinstance(value, SecretStr) and not value.get_secret_value()):
            return None
        return value

    @field_validator("token_secret", "admin_key")
    @classmethod
    def _secret_long_enough(cls, secret: SecretStr | None) -> SecretStr | None:
        # RFC 7518 3.2: an HS256 key of at least 256 bits; the admin key, which
        # mints API keys on a public listener, no weaker.
        if secret is not None and len(secret.get_secret_value().encode()) < 32:
            raise ValueError("must be at least 32 bytes")
        return secret

    @model_validator(mode="after")
    def _token_ttl_within_max(self) -> Settings:
        if self.token_ttl_seconds > self.token_max_ttl_seconds:
            raise ValueError("token_ttl_seconds must not exceed token_max_ttl_seconds")
        return self

    @field_validator("cors_origins", "models", mode="before")
    @classmethod
    def _list_from_text(cls, value: object) -> object:
        """``https://a.example,https://b.example`` or a JSON list."""
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                return json.loads(text)
            return [part.strip() for part in text.split(",") if part.strip()]
        return value

    @field_validator("cors_origins")
    @classmethod
    def _origins_are_origins(cls, origins: list[str]) -> list[str]:
        for origin in origins:
            if not _ORIGIN.fullmatch(origin):
                raise ValueError(f"{origin!r} is not an origin like https://app.example[:port]")
        return [origin.lower() for origin in origins]

    @property
    def served_models(self) -> list[str]:
        """What ``GET /v1/models`` lists: ``models``, or else the default model."""
        return self.models or [self.default_model_name]

    @property
    def default_model_name(self) -> str:
        """The model a job gets when it names none."""
        return "simulated" if self.effective_provider == "simulated" else self.default_model

    @property
    def effective_provider(self) -> Literal["openai", "simulated"]:
        """``auto`` means: the real API when a key is configured, else the simulator."""
        if self.provider == "auto":
            return "openai" if self.openai_api_key else "simulated"
        return self.provider
