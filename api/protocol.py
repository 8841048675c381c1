"""Request models of the Chat Completions endpoint, and their translation into a job."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from api.errors import BadRequest
from api.media_parts import MediaCollector, MediaLimits
from shared.jobs import ChatMessage, ContentPart, SamplingParams, TextPart

SESSION_ID_PATTERN = r"^[A-Za-z0-9_.\-]{1,128}$"
SessionId = Annotated[str, Field(pattern=SESSION_ID_PATTERN)]

# Fields of OpenAI's Chat Completions this server does not honour; sending them is a 400
# that names them rather than a silently different answer. Fields that change nothing in
# the output (user, metadata, store, service_tier, safety_identifier, prompt_cache_key,
# ...) are ignored, as are unknown ones.
UNSUPPORTED_FIELDS = (
    "tools",
    "tool_choice",
    "functions",
    "function_call",
    "parallel_tool_calls",
    "response_format",
    "logprobs",
    "top_logprobs",
    "audio",
    "modalities",
    "prediction",
    "reasoning_effort",
    "verbosity",
    "web_search_options",
    "moderation",
)
# Values of those fields that ask for nothing, which clients often send explicitly.
NEUTRAL_VALUES: dict[str, tuple[Any, ...]] = {
    "logprobs": (False,),
    "top_logprobs": (0,),
    "response_format": ({"type": "text"},),
    "tools": ([],),
    "tool_choice": ("none",),
    "modalities": (["text"],),
}
MAX_STOP_SEQUENCES = 16
LOGIT_BIAS_LIMIT = 100.0
# torch's generators take seeds in this range.
SEED_MIN, SEED_MAX = -(2**63), 2**64 - 1
Penalty = Annotated[float, Field(ge=-2.0, le=2.0)]


class RequestPart(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: str
    text: str | None = None


class RequestMessage(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[RequestPart] | None = None


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")
    include_usage: bool = False


class ChatCompletionRequest(BaseModel):
    model_config = ConfigDict(extra="allow")

    messages: list[RequestMessage] = Field(min_length=1)
    model: str | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    # -1 and 0 both mean no top-k cut (vLLM's and transformers' conventions).
    top_k: int | None = Field(None, ge=-1)
    seed: int | None = Field(None, ge=SEED_MIN, le=SEED_MAX)
    stop: str | list[str] | None = None
    presence_penalty: Penalty | None = None
    frequency_penalty: Penalty | None = None
    repetition_penalty: float | None = Field(None, gt=0.0)
    logit_bias: dict[str, float] | None = None
    n: int | None = Field(None, ge=1)
    session_id: SessionId | None = None
    # Extension: fewer frames than MAX_VIDEO_FRAMES for every video of the request.
    max_video_frames: int | None = Field(None, ge=1)

    @model_validator(mode="after")
    def _refuse_unsupported_fields(self) -> ChatCompletionRequest:
        for name in UNSUPPORTED_FIELDS:
            value = (self.model_extra or {}).get(name)
            if value is not None and value not in NEUTRAL_VALUES.get(name, ()):
                raise BadRequest(
                    f"The parameter '{name}' is not supported by this server.",
                    param=name,
                    code="unsupported_parameter",
                )
        if self.n is not None and self.n > 1:
            raise BadRequest(
                "Only n=1 is supported: this server returns one choice per request.",
                param="n",
                code="unsupported_value",
            )
        if self.stream_options is not None and not self.stream:
            raise BadRequest(
                "'stream_options' is only allowed when 'stream' is true.", param="stream_options"
            )
        return self

    @field_validator("stop")
    @classmethod
    def _check_stop(cls, stop: str | list[str] | None) -> str | list[str] | None:
        stops = [stop] if isinstance(stop, str) else stop or []
        if len(stops) > MAX_STOP_SEQUENCES:
            raise BadRequest(f"'stop' may hold at most {MAX_STOP_SEQUENCES} strings.", param="stop")
        if any(not text for text in stops):
            raise BadRequest("'stop' strings must not be empty.", param="stop")
        return stop

    @field_validator("logit_bias")
    @classmethod
    def _check_logit_bias(cls, bias: dict[str, float] | None) -> dict[str, float] | None:
        for key, value in (bias or {}).items():
            if not key.isascii() or not key.isdigit():
                raise BadRequest(
                    f"'logit_bias' keys must be token ids (integers as strings), not {key!r}.",
                    param="logit_bias",
                )
            if not -LOGIT_BIAS_LIMIT <= value <= LOGIT_BIAS_LIMIT:
                raise BadRequest(
                    f"'logit_bias' values must be between -100 and 100; token {key} has {value}.",
                    param="logit_bias",
                )
        return bias


def _normalise_content(index: int, message: RequestMessage, media: MediaCollector) -> list[ContentPart]:
    if message.content is None:
        raise BadRequest(f"messages[{index}].content is required.", param=f"messages[{index}].content")
    if isinstance(message.content, str):
        return [TextPart(text=message.content)]
    parts: list[ContentPart] = []
    for position, part in enumerate(message.content):
        where = f"messages[{index}].content[{position}]"
        if part.type != "text":
            parts.append(media.convert(where, part.type, part.model_extra or {}))
        elif part.text is None:
            raise BadRequest(f"{where}: a text part needs 'text'.", param=where)
        else:
            parts.append(TextPart(text=part.text))
    return parts


def to_messages(request: ChatCompletionRequest, limits: MediaLimits) -> tuple[list[ChatMessage], list[str]]:
    """The job's messages, and the base64 payloads their inline images and videos refer to."""
    media = MediaCollector(limits, max_frames=request.max_video_frames)
    messages = []
    for index, message in enumerate(request.messages):
        role = "system" if message.role == "developer" else message.role
        messages.append(ChatMessage(role=role, content=_normalise_content(index, message, media)))
    return messages, media.inline


def check_max_tokens(request: ChatCompletionRequest, cap: int) -> None:
    """Refuse a completion budget beyond MAX_TOKENS_CAP.

    Every generated token stays in Redis (its event and its id) until the session expires,
    so this bounds what one request can make the sessions' store hold.
    """
    for name in ("max_completion_tokens", "max_tokens"):
        value = getattr(request, name)
        if value is not None and value > cap:
            raise BadRequest(f"'{name}' is {value}, more than this server allows ({cap}).", param=name)


def to_sampling(
    request: ChatCompletionRequest, default_max_tokens: int, default_temperature: float
) -> SamplingParams:
    if request.max_completion_tokens is not None:
        max_tokens, max_tokens_param = request.max_completion_tokens, "max_completion_tokens"
    elif request.max_tokens is not None:
        max_tokens, max_tokens_param = request.max_tokens, "max_tokens"
    else:
        max_tokens, max_tokens_param = default_max_tokens, None
    temperature = request.temperature if request.temperature is not None else default_temperature
    return SamplingParams(
        max_new_tokens=max_tokens,
        max_tokens_param=max_tokens_param,
        temperature=temperature,
        top_p=request.top_p,
        top_k=0 if request.top_k == -1 else request.top_k,
        seed=request.seed,
        repetition_penalty=request.repetition_penalty,
        presence_penalty=request.presence_penalty or 0.0,
        frequency_penalty=request.frequency_penalty or 0.0,
        logit_bias={int(token): bias for token, bias in (request.logit_bias or {}).items()},
        stop=[request.stop] if isinstance(request.stop, str) else list(request.stop or []),
    )
