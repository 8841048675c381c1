"""Every setting of the gateway and the workers, read from the environment and `.env`."""

from __future__ import annotations

from functools import lru_cache
from typing import Annotated

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


class Settings(BaseSettings):
    """Real environment variables win over `.env`; names are case-insensitive."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore", case_sensitive=False)

    # Gateway
    host: str = "0.0.0.0"
    port: int = 3000
    api_keys: Annotated[list[str], NoDecode] = Field(default_factory=list)
    cors_allow_origins: Annotated[list[str], NoDecode] = Field(default_factory=lambda: ["*"])
    max_queue_depth: int = Field(1000, ge=1)
    # The pool for the gateway's commands; requests wait for a free connection. Waiting for
    # stream events needs none of them: the stream hub reads with a few connections of its own.
    gateway_redis_connections: int = Field(100, ge=10)
    # Streams (and non-streamed completions) one gateway follows at once: past it, 503.
    max_streams_per_gateway: int = Field(10_000, ge=1)
    # The same per API key (when API_KEYS is set), on one gateway: past it, 429. 0: no limit.
    max_streams_per_key: int = Field(256, ge=0)
    # How long an open stream waits for an unreachable Redis before it ends with an error.
    redis_outage_tolerance_seconds: float = Field(60.0, ge=0)
    # The gateway parses JSON on its event loop: this bounds how long one body can hold it.
    max_request_body_bytes: int = Field(32 * 1024 * 1024, ge=1024)

    # Media (images and videos in content parts)
    max_media_items: int = Field(16, ge=0)
    max_image_bytes: int = Field(20 * 1024 * 1024, ge=1)
    max_video_bytes: int = Field(100 * 1024 * 1024, ge=1)
    max_image_pixels: int = Field(40_000_000, ge=1)
    max_video_seconds: float = Field(600.0, gt=0)
    media_fetch_timeout_seconds: float = Field(15.0, gt=0)
    # Hosts (names or addresses) that media URLs may name even though they resolve to a
    # loopback, private or link-local address; everything else must resolve to a public one.
    allowed_media_hosts: Annotated[list[str], NoDecode] = Field(default_factory=list)

    # Model
    model_repo_id: str = "Qwen/Qwen3-VL-2B-Thinking"
    served_model_name: str = ""
    hf_token: str | None = None
    device_map: str = "auto"
    torch_dtype: str = "auto"
    max_tokens: int = Field(256, ge=1)
    temperature: float = Field(0.7, ge=0.0, le=2.0)
    max_video_frames: int = Field(16, ge=1)

    # Queue, sessions and liveness
    redis_url: str = "redis://localhost:6379/0"
    queue_name: str = "generation"
    job_timeout_seconds: int = Field(3600, ge=1)
    sessions_ttl_seconds: int = Field(600, ge=1)
    cancel_after_disconnect_seconds: float = Field(3600, ge=0)
    worker_lease_seconds: float = Field(5.0, gt=0)
    worker_name: str = ""
    worker_max_batch: int = Field(16, ge=1)

    @field_validator("api_keys", "cors_allow_origins", "allowed_media_hosts", mode="before")
    @classmethod
    def _split_comma_list(cls, value: object) -> object:
        if isinstance(value, str):
            return [item.strip() for item in value.split(",") if item.strip()]
        return value

    @property
    def model_name(self) -> str:
        """The model id clients see in responses and `/v1/models`."""
        return self.served_model_name or self.model_repo_id

    @property
    def session_keep_seconds(self) -> int:
        """How long an open session's keys live: the longest job, then the resume window."""
        return self.job_timeout_seconds + self.sessions_ttl_seconds

    @property
    def heartbeat_interval_seconds(self) -> float:
        # Several beats fit in one lease so that one late beat does not look like a death.
        return self.worker_lease_seconds / 4


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
