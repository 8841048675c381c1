from __future__ import annotations

import json
from typing import Any

import pytest
from openai.types.responses import ResponseStreamEvent
from pydantic import TypeAdapter

from api.errors import BadRequest
from api.media_parts import MediaLimits
from api.protocol import to_messages
from api.response_snapshot import ResponseSnapshot, output_text
from api.responses_protocol import ResponsesRequest, input_items, rename_param, renamed, to_chat_request
from shared.events import usage_of
from shared.responses import ResponseEvents, ResponseSpec, cancelled_response_events, response_object

EVENTS: TypeAdapter[Any] = TypeAdapter(ResponseStreamEvent)


def render(spec: ResponseSpec | None = None) -> tuple[list[str], ResponseEvents]:
    events: list[str] = []
    renderer = ResponseEvents("resp_x", "m", 1, spec or ResponseSpec(), lambda: len(events))
    events += renderer.role()
    events += renderer.delta(reasoning="Let me ")
    events += renderer.delta(reasoning="think.")
    events += renderer.delta(content="Hello")
    events += renderer.delta(content=" there")
    events += renderer.tool_call_start(0, "call_1", "f")
    events += renderer.tool_call_arguments(0, '{"a": 1}')
    events += renderer.finish("tool_calls", usage_of(5, 9, 3))
    return events, renderer


def test_rendered_events_are_valid_numbered_and_fold_into_the_final_response() -> None:
    events, _ = render()
    payloads = [json.loads(event) for event in events]
    for payload in payloads:
        EVENTS.validate_python(payload)
    assert [p["sequence_number"] for p in payloads] == list(range(len(payloads)))
    assert payloads[0]["type"] == "response.created" and payloads[-1]["type"] == "response.completed"
    final = payloads[-1]["response"]
    assert [item["type"] for item in final["output"]] == ["reasoning", "message", "function_call"]
    assert final["output"][0]["content"][0]["text"] == "Let me think."
    assert output_text(final) == "Hello there"
    assert final["output"][2]["arguments"] == '{"a": 1}' and final["output"][2]["call_id"] == "call_1"
    assert final["usage"]["output_tokens_details"]["reasoning_tokens"] == 3
    # Any prefix of the events folds into the response as it stood then.
    skeleton = response_object("resp_x", "m", 1, ResponseSpec(), "queued")
    for cut in range(len(events) + 1):
        snapshot = ResponseSnapshot(skeleton)
        for event in events[:cut]:
            snapshot.add(event)
        built = snapshot.build()
        if cut == len(events):
            assert built == final
        elif cut >= 1:
            assert built["status"] == "in_progress"


def test_length_and_cancel_end_as_incomplete() -> None:
    events: list[str] = []
    renderer = ResponseEvents("resp_y", "m", 1, ResponseSpec(), lambda: len(events))
    last = json.loads(renderer.finish("length", usage_of(1, 2, 0))[-1])
    assert last["type"] == "response.incomplete"
    assert last["response"]["incomplete_details"] == {"reason": "max_output_tokens"}
    created, end = (json.loads(e) for e in cancelled_response_events("resp_y", "m", 1, ResponseSpec()))
    assert (created["sequence_number"], end["sequence_number"]) == (0, 1)
    assert end["response"]["status"] == "cancelled"
    EVENTS.validate_python(end)


def test_input_items_become_chat_messages() -> None:
    request = ResponsesRequest.model_validate(
        {
            "instructions": "Be kind.",
            "input": [
                {"role": "user", "content": [{"type": "input_text", "text": "Weather?"}]},
                {"type": "function_call", "call_id": "c1", "name": "w", "arguments": "{}"},
                {"type": "function_call_output", "call_id": "c1", "output": "sunny"},
                {"type": "reasoning", "id": "rs_1", "summary": []},
                {
                    "type": "message",
                    "role": "assistant",
                    "content": [{"type": "output_text", "text": "Sunny."}],
                },
                {"role": "user", "content": "Thanks"},
            ],
            "max_output_tokens": 30,
            "reasoning": {"effort": "low"},
            "text": {"format": {"type": "json_schema", "name": "x", "schema": {"type": "object"}}},
        }
    )
    history = [{"role": "user", "content": "Earlier"}, {"role": "assistant", "content": "Yes"}]
    chat, origins = to_chat_request(request, "resp_1", history)
    assert [m.role for m in chat.messages] == [
        "user",
        "assistant",
        "system",
        "user",
        "assistant",
        "tool",
        "assistant",
        "user",
    ]
    assert origins[:3] == ["previous_response_id", "previous_response_id", "instructions"]
    assert chat.messages[4].tool_calls is not None and chat.messages[4].tool_calls[0].id == "c1"
    assert chat.max_completion_tokens == 30 and chat.reasoning_effort == "low"
    assert chat.response_format is not None and chat.response_format.type == "json_schema"
    assert chat.session_id == "resp_1"
    assert len(input_items(request)) == 6


def test_chat_errors_are_renamed_to_the_responses_fields() -> None:
    origins = ["instructions", "input[0]", "input[2]"]
    assert rename_param("messages[2].content[1]", origins) == "input[2].content[1]"
    assert rename_param("messages.1.role", origins) == "input[0].role"
    assert rename_param("max_completion_tokens", origins) == "max_output_tokens"
    assert rename_param("response_format.json_schema", origins) == "text.format.json_schema"
    assert rename_param("messages", origins) == "input"
    request = ResponsesRequest.model_validate(
        {
            "input": [
                {"role": "user", "content": "a"},
                {"type": "function_call_output", "call_id": "nope", "output": "x"},
            ]
        }
    )
    chat, origins = to_chat_request(request, "resp_2", [])
    with pytest.raises(BadRequest) as raised:
        to_messages(chat, MediaLimits(1, 1, 1))
    assert renamed(raised.value, origins).param == "input[1].tool_call_id"
