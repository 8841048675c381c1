"""Request models of the Chat Completions endpoint, and their translation into a job."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from api.agent_protocol import (
    RequestTool,
    ResponseFormat,
    ToolChoice,
    check_tools,
    format_constraint,
    thinking_budget,
    tool_constraint,
)
from api.errors import BadRequest
from api.media_parts import MediaCollector, MediaLimits
from shared.jobs import ChatMessage, Constraint, ContentPart, SamplingParams, TextPart, ToolCall, ToolFunction
from shared.settings import Settings

SESSION_ID_PATTERN = r"^[A-Za-z0-9_.\-]{1,128}$"
SessionId = Annotated[str, Field(pattern=SESSION_ID_PATTERN)]

# Fields of OpenAI's Chat Completions this server does not honour; sending them is a 400
# that names them rather than a silently different answer. Fields that change nothing in
# the output (user, metadata, store, service_tier, safety_identifier, prompt_cache_key,
# ...) are ignored, as are unknown ones.
UNSUPPORTED_FIELDS = (
    "functions",
    "function_call",
    "audio",
    "modalities",
    "prediction",
    "verbosity",
    "web_search_options",
    "moderation",
)
# Values of those fields that ask for nothing, which clients often send explicitly.
NEUTRAL_VALUES: dict[str, tuple[Any, ...]] = {
    "modalities": (["text"],),
}
MAX_STOP_SEQUENCES = 16
LOGIT_BIAS_LIMIT = 100.0
# torch's generators take seeds in this range.
SEED_MIN, SEED_MAX = -(2**63), 2**64 - 1
Penalty = Annotated[float, Field(ge=-2.0, le=2.0)]


def refuse_unsupported(
    extra: dict[str, Any] | None, names: tuple[str, ...], neutral: dict[str, tuple[Any, ...]]
) -> None:
    """A 400 naming the first unsupported field that asks for something."""
    for name in names:
        value = (extra or {}).get(name)
        if value is not None and value not in neutral.get(name, ()):
            raise BadRequest(
                f"The parameter '{name}' is not supported by this server.",
                param=name,
                code="unsupported_parameter",
            )


class RequestPart(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: str
    text: str | None = None


class RequestToolCallFunction(BaseModel):
    model_config = ConfigDict(extra="ignore")
    name: str
    arguments: str


class RequestToolCall(BaseModel):
    model_config = ConfigDict(extra="ignore")
    id: str
    type: Literal["function"] = "function"
    function: RequestToolCallFunction


class RequestMessage(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[RequestPart] | None = None
    tool_calls: list[RequestToolCall] | None = None  # assistant turns
    tool_call_id: str | None = None  # tool turns


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
    logprobs: bool | None = None
    top_logprobs: int | None = Field(None, ge=0, le=20)
    tools: list[RequestTool] | None = None
    tool_choice: ToolChoice | None = None
    parallel_tool_calls: bool | None = None
    response_format: ResponseFormat | None = None
    reasoning_effort: str | None = None
    # vLLM's name for a cap on the reasoning tokens.
    thinking_token_budget: int | None = Field(None, ge=0)
    session_id: SessionId | None = None
    # Extension: fewer frames than MAX_VIDEO_FRAMES for every video of the request.
    max_video_frames: int | None = Field(None, ge=1)

    @model_validator(mode="after")
    def _refuse_unsupported_fields(self) -> ChatCompletionRequest:
        refuse_unsupported(self.model_extra, UNSUPPORTED_FIELDS, NEUTRAL_VALUES)
        if self.top_logprobs and not self.logprobs:
            raise BadRequest("'top_logprobs' needs 'logprobs' set to true.", param="top_logprobs")
        if self.tool_choice not in (None, "none", "auto") and not self.tools:
            raise BadRequest("'tool_choice' asks for a tool call but 'tools' is empty.", param="tool_choice")
        if (
            self.tool_choice not in (None, "none", "auto")
            and self.response_format is not None
            and self.response_format.type != "text"
        ):
            raise BadRequest(
                "'response_format' cannot be combined with a 'tool_choice' that forces a call.",
                param="response_format",
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
        if message.role == "assistant" and message.tool_calls:
            return []
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
    call_ids: set[str] = set()
    for index, message in enumerate(request.messages):
        role = "system" if message.role == "developer" else message.role
        calls = [
            ToolCall(id=call.id, name=call.function.name, arguments=call.function.arguments)
            for call in message.tool_calls or []
        ]
        if calls and role != "assistant":
            raise BadRequest(
                f"messages[{index}]: only assistant messages carry 'tool_calls'.",
                param=f"messages[{index}].tool_calls",
            )
        call_ids.update(call.id for call in calls)
        if role == "tool" and message.tool_call_id not in call_ids:
            raise BadRequest(
                f"messages[{index}].tool_call_id must name a tool call of an earlier assistant "
                f"message; got {message.tool_call_id!r}.",
                param=f"messages[{index}].tool_call_id",
            )
        messages.append(
            ChatMessage(
                role=role,
                content=_normalise_content(index, message, media),
                tool_calls=calls,
                tool_call_id=message.tool_call_id if role == "tool" else None,
            )
        )
    return messages, media.inline


def to_tools(request: ChatCompletionRequest) -> tuple[list[ToolFunction], Constraint | None]:
    """The tools the model is shown, and the constraint its answer follows (if any).

    With tool_choice "none" the tools are not shown at all, so the model cannot call them.
    """
    functions = check_tools(request.tools or [])
    format_rule = format_constraint(request.response_format)
    if request.tool_choice == "none":
        return [], format_rule
    return functions, tool_constraint(
        functions, request.tool_choice, request.parallel_tool_calls
    ) or format_rule


def check_n(request: ChatCompletionRequest, max_n: int) -> int:
    n = request.n or 1
    if n > max_n:
        raise BadRequest(f"'n' is {n}, more than this server allows ({max_n}).", param="n")
    return n


def check_max_tokens(request: ChatCompletionRequest, cap: int) -> None:
    """Refuse a completion budget beyond MAX_TOKENS_CAP.

    Every generated token stays in Redis (its event and its id) until the session expires,
    so this bounds what one request can make the sessions' store hold.
    """
    for name in ("max_completion_tokens", "max_tokens"):
        value = getattr(request, name)
        if value is not None and value > cap:
            raise BadRequest(f"'{name}' is {value}, more than this server allows ({cap}).", param=name)


def to_sampling(request: ChatCompletionRequest, settings: Settings) -> SamplingParams:
    if request.max_completion_tokens is not None:
        max_tokens, max_tokens_param = request.max_completion_tokens, "max_completion_tokens"
    elif request.max_tokens is not None:
        max_tokens, max_tokens_param = request.max_tokens, "max_tokens"
    else:
        max_tokens, max_tokens_param = settings.max_tokens, None
    temperature = request.temperature if request.temperature is not None else settings.temperature
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
        logprobs=bool(request.logprobs),
        top_logprobs=request.top_logprobs or 0,
        thinking_budget=thinking_budget(request.reasoning_effort, request.thinking_token_budget, settings),
    )
