"""The job a gateway enqueues and a worker runs: one chat completion for one session."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, Field, model_validator


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
    # The id the session is stored under (``shared.keys.owned_session``).
    session_id: str
    model: str
    created: int
    messages: list[ChatMessage]
    sampling: SamplingParams
    include_usage: bool = False
    # Redis hash of the request's inline (base64) media, read by the worker (again on a takeover).
    inline_media_key: str | None = None

    def media_parts(self) -> list[ImagePart | VideoPart]:
        """The job's images and videos, in prompt order."""
        return [
            part for message in self.messages for part in message.content if not isinstance(part, TextPart)
        ]


# The RQ entry point, named by its import path so that the gateway never imports the worker.
JOB_FUNCTION = "worker.jobs.run_generation"
