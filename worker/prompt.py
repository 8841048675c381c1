"""Turns a job's messages and decoded media into model inputs with the checkpoint's own template."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from transformers.video_utils import VideoMetadata

from shared.jobs import ChatMessage, TextPart, ToolFunction
from worker.errors import InvalidRequest
from worker.media.loader import Media
from worker.media.video import VideoClip
from worker.model import LoadedModel


def template_messages(messages: list[ChatMessage], media: list[Media]) -> list[dict[str, Any]]:
    """The message shape the Qwen3-VL processor's chat template expects.

    Each image or video part carries its decoded picture or frames, in prompt order, for the
    processor to pick up; the template itself reads only the part types.
    """
    decoded: Iterator[Media] = iter(media)
    result = []
    for message in messages:
        content: list[dict[str, Any]] = []
        for part in message.content:
            if isinstance(part, TextPart):
                content.append({"type": "text", "text": part.text})
            else:
                content.append({"type": part.type, part.type: _pixels(next(decoded))})
        turn: dict[str, Any] = {"role": message.role, "content": content}
        if message.tool_calls:
            turn["tool_calls"] = [
                {
                    "id": call.id,
                    "type": "function",
                    "function": {"name": call.name, "arguments": call.arguments},
                }
                for call in message.tool_calls
            ]
        if message.tool_call_id is not None:
            turn["tool_call_id"] = message.tool_call_id
        result.append(turn)
    return result


def _pixels(item: Media) -> Any:
    return item.frames if isinstance(item, VideoClip) else item


def video_metadata(clip: VideoClip) -> VideoMetadata:
    """What the processor needs to write each frame's true time into the prompt."""
    return VideoMetadata(
        total_num_frames=clip.total_frames,
        fps=clip.fps,
        duration=clip.duration,
        width=int(clip.frames.shape[2]),
        height=int(clip.frames.shape[1]),
        video_backend=clip.backend,
        frames_indices=list(clip.indices),
    )


def processor_kwargs(media: list[Media]) -> dict[str, Any]:
    clips = [item for item in media if isinstance(item, VideoClip)]
    if not clips:
        return {}
    return {
        "video_metadata": [video_metadata(clip) for clip in clips],
        # The frames are already sampled, spread over the whole clip.
        "do_sample_frames": False,
        # Qwen's reference per-frame pixel budget, so a video costs what it costs upstream.
        "cap_pixels_per_frame": True,
    }


def build_inputs(
    loaded: LoadedModel,
    messages: list[ChatMessage],
    media: list[Media] | None = None,
    tools: list[ToolFunction] | None = None,
) -> Any:
    media = media or []
    try:
        inputs = loaded.processor.apply_chat_template(
            template_messages(messages, media),
            tools=[tool.template_form() for tool in tools] if tools else None,
            add_generation_prompt=True,
            tokenize=True,
            return_dict=True,
            return_tensors="pt",
            processor_kwargs=processor_kwargs(media),
        )
    except ValueError as error:
        # The processor pairs each placeholder token with an image or video; text that
        # writes the placeholder itself breaks the count.
        raise InvalidRequest(f"The prompt could not be built: {error}", param="messages") from error
    _refuse_orphan_placeholders(loaded, inputs)
    return inputs.to(loaded.device)


def _refuse_orphan_placeholders(loaded: LoadedModel, inputs: Any) -> None:
    """Placeholder tokens typed as text, with no image or video for them, would fail the prefill."""
    processor = loaded.processor
    ids = inputs["input_ids"]
    for token_id, pixels, name in (
        (processor.image_token_id, "pixel_values", processor.image_token),
        (processor.video_token_id, "pixel_values_videos", processor.video_token),
    ):
        if pixels not in inputs and bool((ids == token_id).any()):
            raise InvalidRequest(
                f"The messages contain the token {name}, which only stands for an image or video part.",
                param="messages",
            )


def prompt_opens_reasoning(prompt_ids: list[int], loaded: LoadedModel) -> bool:
    """Whether the template left the assistant turn inside an open <think> block."""
    im_start_id = loaded.im_start_id
    last_turn = len(prompt_ids) - 1 - prompt_ids[::-1].index(im_start_id) if im_start_id in prompt_ids else 0
    tail = prompt_ids[last_turn:]
    if loaded.think_start_id not in tail:
        return False
    opened_at = len(tail) - 1 - tail[::-1].index(loaded.think_start_id)
    return loaded.think_end_id not in tail[opened_at:]
