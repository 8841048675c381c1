"""Every setting of the gateway and the workers, read from the environment and `.env`."""

from __future__ import annotations

from functools import lru_cache
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

# WORKER_PREFILL_CHUNK_TOKENS: smaller pieces cost more in launches than they save in stalls.
MIN_PREFILL_CHUNK_TOKENS = 16
# WORKER_COMPILE: off (""), or one of torch.compile's modes.
CompileMode = Literal["", "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"]


class Settings(BaseSettings):
    """Real environment variables win over `.env`; names are case-insensitive."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore", case_sensitive=False)

    # Gateway
    host: str = "0.0.0.0"
    port: int = 3000
    api_keys: Annotated[list[str], NoDecode] = Field(default_factory=list)
    cors_allow_origins: Annotated[list[str], NoDecode] = Field(default_factory=lambda: ["*"])
    max_queue_depth: int = Field(1000, ge=1)
    # "json": one JSON object per log line; anything else: plain lines.
    log_format: str = "plain"
    # Where each worker serves its Prometheus /metrics; 0: not served.
    worker_metrics_port: int = Field(9400, ge=0, le=65535)
    # The pool for the gateway's commands; requests wait for a free connection. Waiting for
    # stream events needs none of them: the stream hub reads with a few connections of its own.
    gateway_redis_connections: int = Field(100, ge=10)
    # Streams (and non-streamed completions) one gateway follows at once: past it, 503.
    max_streams_per_gateway: int = Field(10_000, ge=1)
    # The same per API key (when API_KEYS is set), on one gateway: past it, 429. 0: no limit.
    max_streams_per_key: int = Field(256, ge=0)
    # How long a new streaming request waits for the worker's verdict before its stream
    # starts: a refusal within it is an HTTP error, a later one an error event.
    verdict_wait_seconds: float = Field(2.0, ge=0)
    # Keep-alive comments on every open stream (a request waiting in the queue included).
    sse_ping_seconds: float = Field(15.0, gt=0)
    # The gateway parses JSON on its event loop: this bounds how long one body can hold it.
    max_request_body_bytes: int = Field(32 * 1024 * 1024, ge=1024)
    # The browser playground at GET / (a static page that uses only the public API).
    playground: bool = True

    # Media (images and videos in content parts)
    max_media_items: int = Field(16, ge=0)
    max_image_bytes: int = Field(20 * 1024 * 1024, ge=1)
    max_video_bytes: int = Field(100 * 1024 * 1024, ge=1)
    max_image_pixels: int = Field(40_000_000, ge=1)
    max_video_seconds: float = Field(600.0, gt=0)
    media_fetch_timeout_seconds: float = Field(15.0, gt=0)
    # All the URLs of one request are fetched at once, within this (name lookups included).
    media_fetch_deadline_seconds: float = Field(30.0, gt=0)
    # Pixels one request's media decode to (frames x pixels per frame), from the headers...
    max_request_media_pixels: int = Field(250_000_000, ge=1)
    # ...and pixels being decoded at once by all the job slots of one worker.
    max_worker_media_pixels: int = Field(1_000_000_000, ge=1)
    # Each video is probed, then decoded, in a child process killed past this time...
    media_decode_timeout_seconds: float = Field(60.0, gt=0)
    # ...and whose address space may not grow past this (the decoder's libraries take ~0.5 GiB).
    media_decode_memory_bytes: int = Field(4 * 1024**3, ge=1024**3)
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
    # Largest max_tokens a request may ask for (checked by the gateway). Every generated
    # token is kept in Redis with its event until the session expires: this bounds both.
    max_tokens_cap: int = Field(32768, ge=1)
    # Longest prompt + completion served; the model's own limit (262,144 positions for
    # Qwen3-VL) applies when it is lower. Longer contexts cost KV memory every row pays.
    max_model_len: int = Field(32768, ge=16)
    # Bytes of KV cache the engine may hold for its batch; 0: KV_CACHE_FRACTION of the GPU
    # memory free once the model is loaded (on CPU: of the available RAM, at most 4 GiB).
    kv_cache_bytes: int = Field(0, ge=0)
    kv_cache_fraction: float = Field(0.9, gt=0.0, le=1.0)
    temperature: float = Field(0.7, ge=0.0, le=2.0)
    max_video_frames: int = Field(16, ge=1)
    # Most choices one request may ask for (n); they share one prefill.
    max_n: int = Field(8, ge=1)
    # Reasoning tokens allowed by each reasoning_effort ("none" allows none).
    thinking_budget_minimal: int = Field(128, ge=0)
    thinking_budget_low: int = Field(1024, ge=0)
    thinking_budget_medium: int = Field(4096, ge=0)
    thinking_budget_high: int = Field(16384, ge=0)
    # Written before a forced end of thinking (Qwen's recommendation), so that the answer
    # follows from the reasoning cut short; empty: the end of thinking alone.
    thinking_budget_closing: str = (
        "\n\nConsidering the limited time by the user, I have to give the solution "
        "based on the thinking directly now.\n"
    )

    # Queue, sessions and liveness
    redis_url: str = "redis://localhost:6379/0"
    # With Sentinel: "host:port,host:port" of the sentinels and the name of the monitored
    # master; REDIS_URL then only gives the database, user and password.
    redis_sentinels: Annotated[list[str], NoDecode] = Field(default_factory=list)
    redis_master_name: str = "mymaster"
    queue_name: str = "generation"
    job_timeout_seconds: int = Field(3600, ge=1)
    sessions_ttl_seconds: int = Field(600, ge=1)
    # How long a stored response (the Responses API) stays retrievable after it ends.
    responses_ttl_seconds: int = Field(86400, ge=1)
    cancel_after_disconnect_seconds: float = Field(3600, ge=0)
    worker_lease_seconds: float = Field(5.0, gt=0)
    worker_name: str = ""
    worker_max_batch: int = Field(16, ge=1)
    # Threads torch uses when the model runs on the CPU; 0: every core but one.
    worker_torch_threads: int = Field(0, ge=0)
    # torch.compile the decoding steps with this mode ("" off; default, reduce-overhead
    # for CUDA graphs on a GPU, max-autotune, max-autotune-no-cudagraphs), at bucketed
    # shapes (worker/compiled.py); a failure to compile falls back to eager.
    worker_compile: Literal[
        "", "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"
    ] = ""
    # Decoding steps at a few fixed shapes, each captured as a CUDA graph on its first use
    # and replayed after (worker/step_graphs.py); a failed capture falls back to eager.
    # "auto": on where the model runs on a CUDA device (worker/device_defaults.py);
    # ignored with a WORKER_COMPILE mode that captures graphs of its own, and with another
    # one they capture the compiled step.
    worker_cuda_graphs: Literal["auto"] | bool = "auto"
    # Tokens per piece of a prompt with images or video, or of a text prompt longer than
    # this: it is prefilled a piece at a time (vision encoder, then language model), with a
    # decoding step of the running batch between pieces, so that running streams keep
    # their pace while a video or a long document is read. 0: by device (512 on a CPU,
    # 2048 on a GPU, where a piece costs its kernel launches more than its tokens).
    worker_prefill_chunk_tokens: int = Field(0, ge=0)
    # Where every row of a step is greedy with nothing that moves its logits, and the
    # lm_head is float32 (at most 256 MB) on a CPU with bfloat16 instructions: the tokens
    # come from a bfloat16 lm_head, each proven to be the largest exact logit
    # (worker/greedy_scan.py).
    worker_greedy_bf16_scan: bool = True
    # How long a running session's lease must stay missing before the gateways take its
    # worker for dead and queue the session again: longer than a Redis restart or stall.
    lease_grace_seconds: float = Field(5.0, ge=0)
    # Attempts at one session (workers that died while running it) before it fails.
    max_job_attempts: int = Field(3, ge=1)
    # How long a worker told to stop (SIGTERM) takes at most to hand its sessions over and
    # exit; keep it below the supervisor's own grace (compose's stop_grace_period).
    worker_drain_seconds: float = Field(20.0, gt=0)
    # How long workers and gateways (open streams included) keep retrying while Redis is
    # unreachable before they fail what they were doing.
    redis_outage_tolerance_seconds: float = Field(60.0, gt=0)

    @field_validator(
        "api_keys", "cors_allow_origins", "allowed_media_hosts", "redis_sentinels", mode="before"
    )
    @classmethod
    def _split_comma_list(cls, value: object) -> object:
        if isinstance(value, str):
            return [item.strip() for item in value.split(",") if item.strip()]
        return value

    @field_validator("worker_prefill_chunk_tokens")
    @classmethod
    def _piece_of_some_tokens(cls, value: int) -> int:
        if 0 < value < MIN_PREFILL_CHUNK_TOKENS:
            raise ValueError(f"0 (by device) or at least {MIN_PREFILL_CHUNK_TOKENS}")
        return value

    @model_validator(mode="after")
    def _default_max_tokens_within_cap(self) -> Settings:
        if self.max_tokens > self.max_tokens_cap:
            raise ValueError(f"MAX_TOKENS ({self.max_tokens}) exceeds MAX_TOKENS_CAP ({self.max_tokens_cap})")
        return self

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
