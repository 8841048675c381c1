"""A prompt without images or video is built without the processor's call, to the same inputs."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from transformers import AutoProcessor

from worker.errors import InvalidRequest
from worker.prompt import processor_inputs, refuse_orphan_placeholders, text_inputs

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


def text(role: str, content: str, **more: Any) -> dict[str, Any]:
    return {"role": role, "content": [{"type": "text", "text": content}], **more}


CONVERSATIONS: dict[str, tuple[list[dict[str, Any]], list[dict[str, Any]] | None]] = {
    "one question": ([text("user", "Write a short story about a lighthouse keeper.")], None),
    "system and turns": (
        [
            text("system", "You answer in French."),
            text("user", "Hello!"),
            text("assistant", "<think>\nA greeting.\n</think>\n\nBonjour !"),
            text("user", "Ça va ? ünïcödé 🙂, and\nnew lines\t\ttabs"),
        ],
        None,
    ),
    "tools, a call and its result": (
        [
            text("user", "Weather in Paris?"),
            {
                "role": "assistant",
                "content": [],
                "tool_calls": [
                    {
                        "id": "call-1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                    }
                ],
            },
            text("tool", '{"sky": "clear"}', tool_call_id="call-1"),
        ],
        [WEATHER_TOOL],
    ),
    "the image frame's tokens typed as text": (
        [text("user", "What is <|vision_start|><|vision_end|>?")],
        None,
    ),
    "an empty message": ([text("user", "")], None),
}


@pytest.fixture(scope="module")
def processor(tiny_model: str) -> Any:
    return AutoProcessor.from_pretrained(tiny_model)  # type: ignore[no-untyped-call]


@pytest.mark.parametrize("name", list(CONVERSATIONS))
def test_text_inputs_are_the_processors(processor: Any, name: str) -> None:
    conversation, tools = CONVERSATIONS[name]
    expected = processor_inputs(processor, conversation, tools)
    built = text_inputs(processor, conversation, tools)
    assert set(built.keys()) == set(expected.keys())
    for key in expected:
        assert built[key].dtype == expected[key].dtype, key
        assert torch.equal(built[key], expected[key]), key


@pytest.mark.parametrize("placeholder", ["<|image_pad|>", "<|video_pad|>"])
def test_a_placeholder_typed_as_text_is_refused(processor: Any, placeholder: str) -> None:
    conversation = [text("user", f"What is {placeholder}?")]
    with pytest.raises(ValueError):  # the processor's own call refuses it too
        processor_inputs(processor, conversation, None)
    with pytest.raises(InvalidRequest) as refused:
        refuse_orphan_placeholders(processor, text_inputs(processor, conversation, None))
    assert refused.value.param == "messages" and placeholder in str(refused.value)
