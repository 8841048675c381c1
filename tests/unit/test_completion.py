from __future__ import annotations

from api.completion import CompletionBuilder
from shared.events import ChunkWriter, usage_of

TOP = [{"token": "b", "logprob": -2.0, "bytes": [98]}]


def test_choices_calls_and_logprobs_add_up_from_interleaved_chunks() -> None:
    first, second = ChunkWriter("s", "m", 1), ChunkWriter("s", "m", 1).for_choice(1)
    builder = CompletionBuilder()
    events = [
        first.role(),
        second.role(),
        first.delta(reasoning="thinking"),
        second.delta(
            content="A", logprobs=[{"token": "A", "logprob": -0.5, "bytes": [65], "top_logprobs": TOP}]
        ),
        first.tool_call_start(0, "call_1", "f"),
        second.delta(
            content="B", logprobs=[{"token": "B", "logprob": -0.1, "bytes": [66], "top_logprobs": []}]
        ),
        first.tool_call_arguments(0, '{"x": 1}'),
        first.finish("tool_calls"),
        second.finish("length"),
    ]
    for event in events:
        builder.add(event)
    completion = builder.build("s", "m", 1, usage_of(5, 7, 2))
    one, two = completion["choices"]
    assert one["index"] == 0 and one["finish_reason"] == "tool_calls"
    assert one["message"]["content"] is None
    assert one["message"]["reasoning_content"] == one["message"]["reasoning"] == "thinking"
    assert one["message"]["tool_calls"] == [
        {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": '{"x": 1}'}}
    ]
    assert one["logprobs"] is None
    assert two["index"] == 1 and two["message"]["content"] == "AB" and two["finish_reason"] == "length"
    assert [entry["token"] for entry in two["logprobs"]["content"]] == ["A", "B"]
    assert completion["usage"]["prompt_tokens"] == 5
