"""The job a gateway enqueues and a worker runs: one chat completion for one session."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field


class TextPart(BaseModel):
    type: Literal["text"] = "text"
    text: str


ContentPart = TextPart


class ChatMessage(BaseModel):
    """A conversation turn, already normalised by the gateway to a list of parts."""

    role: Literal["system", "user", "assistant"]
    content: list[ContentPart]


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


class GenerationJob(BaseModel):
    session_id: str
    model: str
    created: int
    messages: list[ChatMessage]
    sampling: SamplingParams
    include_usage: bool = False


# The RQ entry point, named by its import path so that the gateway never imports the worker.
JOB_FUNCTION = "worker.jobs.run_generation"
