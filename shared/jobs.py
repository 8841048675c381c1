"""The job a gateway enqueues and a worker runs: one chat completion for one session."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, model_validator

from shared.responses import ResponseSpec


class TextPart(BaseModel):
    type: Literal["text"] = "text"
    text: str


class MediaPart(BaseModel):
    """An image or video, still undecoded: the worker fetches and decodes it.

    Exactly one source: ``url`` (http or https, fetched by the worker) or ``inline``, the
    field of the job's inline-media hash (``GenerationJob.inline_media_key``) holding the
    base64 text the client sent, so that inline bytes never ride inside the RQ job itself.
    """

    url: str | None = None
    inline: int | None = Field(None, ge=0)
    # Where the part was in the request (``messages[1].content[2]``), for error messages.
    param: str

    @model_validator(mode="after")
    def _one_source(self) -> MediaPart:
        if (self.url is None) == (self.inline is None):
            raise ValueError("a media part needs exactly one of 'url' and 'inline'")
        return self


class ImagePart(MediaPart):
    type: Literal["image"] = "image"


class VideoPart(MediaPart):
    type: Literal["video"] = "video"
    # The client's frame budget for this video; the worker caps it at MAX_VIDEO_FRAMES.
    max_frames: int | None = Field(None, ge=1)


# The type names are the ones the checkpoint's chat template looks for.
ContentPart = Annotated[TextPart | ImagePart | VideoPart, Field(discriminator="type")]


class ToolCall(BaseModel):
    """A function call an assistant turn of the history made (OpenAI's ``tool_calls[i]``)."""

    id: str
    name: str
    # The arguments as the client sent them: a JSON text, rendered as it is.
    arguments: str


class ChatMessage(BaseModel):
    """A conversation turn, already normalised by the gateway to a list of parts."""

    role: Literal["system", "user", "assistant", "tool"]
    content: list[ContentPart]
    tool_calls: list[ToolCall] = Field(default_factory=list)  # assistant turns only
    tool_call_id: str | None = None  # tool turns only


class ToolFunction(BaseModel):
    """A function the model may call (OpenAI's ``tools[i].function``)."""

    name: str
    description: str | None = None
    # A JSON schema of the arguments object; None accepts any object.
    parameters: dict[str, Any] | None = None
    strict: bool | None = None

    def template_form(self) -> dict[str, Any]:
        """The tool as chat templates expect it (OpenAI's shape)."""
        return {"type": "function", "function": self.model_dump(exclude_none=True)}


class Constraint(BaseModel):
    """What the answer must be, enforced token by token by a grammar.

    ``json_object``: any JSON object. ``json_schema``: JSON valid against ``json_schema``.
    ``tool_calls``: one call (or, with ``parallel``, one or more) of the ``functions``,
    as Hermes-style ``<tool_call>{"name": ..., "arguments": ...}</tool_call>`` blocks.
    """

    kind: Literal["json_object", "json_schema", "tool_calls"]
    json_schema: dict[str, Any] | None = None
    functions: list[ToolFunction] = Field(default_factory=list)
    parallel: bool = True
    # The request field a grammar that cannot be built is reported on.
    param: str = "response_format"


class SamplingParams(BaseModel):
    """Decoding settings; ``None`` means the checkpoint's own generation_config default."""

    max_new_tokens: int = Field(ge=1)
    # The request field that set max_new_tokens (max_tokens or max_completion_tokens), or
    # None for the server's default. An asked-for budget the context cannot hold is
    # refused naming this field; the default one shrinks to fit instead.
    max_tokens_param: str | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    seed: int | None = None
    repetition_penalty: float | None = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    # token id -> bias added to its logit, as in OpenAI's logit_bias
    logit_bias: dict[int, float] = Field(default_factory=dict)
    # strings that end the answer (not the reasoning); never emitted
    stop: list[str] = Field(default_factory=list)
    # Log probabilities of the answer's tokens, with this many alternatives each (0-20).
    logprobs: bool = False
    top_logprobs: int = Field(0, ge=0, le=20)
    # At most this many reasoning tokens; then the end of thinking is forced. None: no cap.
    thinking_budget: int | None = Field(None, ge=0)


class GenerationJob(BaseModel):
    # The id the session is stored under (``shared.keys.owned_session``).
    session_id: str
    model: str
    created: int
    messages: list[ChatMessage]
    sampling: SamplingParams
    include_usage: bool = False
    # Redis hash of the request's inline (base64) media, read by the worker (again on a takeover).
    inline_media_key: str | None = None
    # Tools shown to the model (rendered by the chat template); its answer's calls are parsed.
    tools: list[ToolFunction] = Field(default_factory=list)
    # The grammar the answer must follow (response_format, or tool_choice required / named).
    constraint: Constraint | None = None
    # How many choices to generate: rows that share the prompt's prefill.
    n: int = Field(1, ge=1)
    # Which API's events the session's stream holds: chat.completion.chunk payloads, or
    # Responses stream events (then ``response`` says what the response object echoes).
    api: Literal["chat", "responses"] = "chat"
    response: ResponseSpec | None = None
    # How long the session stays readable after it ends; None: SESSIONS_TTL_SECONDS.
    ttl_seconds: int | None = Field(None, ge=1)

    def media_parts(self) -> list[ImagePart | VideoPart]:
        """The job's images and videos, in prompt order."""
        return [
            part for message in self.messages for part in message.content if not isinstance(part, TextPart)
        ]


# The RQ entry point, named by its import path so that the gateway never imports the worker.
JOB_FUNCTION = "worker.jobs.run_generation"
