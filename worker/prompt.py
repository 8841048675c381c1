"""Turns a job's messages into model inputs with the checkpoint's own chat template."""

from __future__ import annotations

from typing import Any

from shared.jobs import ChatMessage
from worker.model import LoadedModel


def template_messages(messages: list[ChatMessage]) -> list[dict[str, Any]]:
    """The message shape the Qwen3-VL processor's chat template expects."""
    return [
        {"role": message.role, "content": [part.model_dump() for part in message.content]}
        for message in messages
    ]


def build_inputs(loaded: LoadedModel, messages: list[ChatMessage]) -> Any:
    inputs = loaded.processor.apply_chat_template(
        template_messages(messages),
        add_generation_prompt=True,
        tokenize=True,
        return_dict=True,
        return_tensors="pt",
    )
    return inputs.to(loaded.device)


def prompt_opens_reasoning(prompt_ids: list[int], loaded: LoadedModel, im_start_id: int) -> bool:
    """Whether the template left the assistant turn inside an open <think> block."""
    last_turn = len(prompt_ids) - 1 - prompt_ids[::-1].index(im_start_id) if im_start_id in prompt_ids else 0
    tail = prompt_ids[last_turn:]
    if loaded.think_start_id not in tail:
        return False
    opened_at = len(tail) - 1 - tail[::-1].index(loaded.think_start_id)
    return loaded.think_end_id not in tail[opened_at:]
