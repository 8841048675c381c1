"""Request models of the Chat Completions endpoint, and their translation into a job."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from api.errors import BadRequest
from api.media_parts import MediaCollector, MediaLimits
from shared.jobs import ChatMessage, ContentPart, SamplingParams, TextPart

SESSION_ID_PATTERN = r"^[A-Za-z0-9_.\-]{1,128}$"
SessionId = Annotated[str, Field(pattern=SESSION_ID_PATTERN)]

# Fields of OpenAI's Chat Completions this server does not honour; sending them is a 400
# that names them rather than a silently different answer.
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
    "stop",
    "presence_penalty",
    "frequency_penalty",
    "logit_bias",
    "web_search_options",
)
# Values of those fields that ask for nothing, which clients often send explicitly.
NEUTRAL_VALUES: dict[str, tuple[Any, ...]] = {
    "logprobs": (False,),
    "presence_penalty": (0, 0.0),
    "frequency_penalty": (0, 0.0),
    "response_format": ({"type": "text"},),
    "tools": ([],),
    "tool_choice": ("none",),
    "modalities": (["text"],),
    "logit_bias": ({},),
    "stop": ([],),
}


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
    top_k: int | None = Field(None, ge=0)
    seed: int | None = None
    repetition_penalty: float | None = Field(None, gt=0.0)
    n: int | None = Field(None, ge=1, le=1)
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
        return self


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


def to_sampling(
    request: ChatCompletionRequest, default_max_tokens: int, default_temperature: float
) -> SamplingParams:
    max_tokens = request.max_completion_tokens or request.max_tokens or default_max_tokens
    temperature = request.temperature if request.temperature is not None else default_temperature
    return SamplingParams(
        max_new_tokens=max_tokens,
        temperature=temperature,
        top_p=request.top_p,
        top_k=request.top_k,
        seed=request.seed,
        repetition_penalty=request.repetition_penalty,
    )
