"""What agent frameworks send, through the official openai client, on the tiny checkpoint.

The checkpoint's weights are random: the calls and JSON seen here are well formed only
because the grammar enforces them. A thinking budget of 0 starts the answer at once.
"""

from __future__ import annotations

import json
from typing import Any, Literal

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam, ChatCompletionToolParam
from pydantic import BaseModel

from tests.conftest import Stack
from tests.sse import iter_events

WEATHER: ChatCompletionToolParam = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "enum": ["Paris", "Rome"]},
                "days": {"type": "integer", "minimum": 1, "maximum": 7},
            },
            "required": ["city", "days"],
            "additionalProperties": False,
        },
    },
}
CLOCK: ChatCompletionToolParam = {
    "type": "function",
    "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}},
}
ASK: list[ChatCompletionMessageParam] = [{"role": "user", "content": "What is the weather in Paris?"}]
NO_THINKING: dict[str, Any] = {"thinking_token_budget": 0}
FORCE_WEATHER: Any = {"type": "function", "function": {"name": "get_weather"}}


class Answer(BaseModel):
    ok: bool
    size: Literal["small", "large"]


def check_weather_arguments(arguments: str) -> None:
    parsed = json.loads(arguments)
    assert set(parsed) == {"city", "days"}
    assert parsed["city"] in ("Paris", "Rome") and 1 <= parsed["days"] <= 7


def test_a_forced_tool_call_parses_and_validates(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(
        model="m",
        messages=ASK,
        tools=[WEATHER, CLOCK],
        tool_choice=FORCE_WEATHER,
        max_tokens=60,
        seed=1,
        extra_body=NO_THINKING,
    )
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    (call,) = choice.message.tool_calls or []
    assert call.type == "function" and call.id.startswith("call_")
    assert call.function.name == "get_weather"
    check_weather_arguments(call.function.arguments)


def test_streamed_tool_call_deltas_reassemble_into_the_same_call(client: openai.OpenAI) -> None:
    request: dict[str, Any] = {
        "model": "m",
        "messages": ASK,
        "tools": [WEATHER, CLOCK],
        "tool_choice": "required",
        "parallel_tool_calls": False,
        "max_tokens": 60,
        "seed": 4,
        "temperature": 1.0,
        "extra_body": NO_THINKING,
    }
    whole = client.chat.completions.create(**request).choices[0].message.tool_calls or []
    calls: dict[int, dict[str, str]] = {}
    finish = None
    for chunk in client.chat.completions.create(**request, stream=True):
        for choice in chunk.choices:
            assert not choice.delta.content  # calls never arrive as text
            for part in choice.delta.tool_calls or ():
                call = calls.setdefault(part.index, {"id": "", "name": "", "arguments": ""})
                if part.id:
                    assert not call["arguments"]  # id and name come before the arguments
                    call["id"] = part.id
                if part.function and part.function.name:
                    call["name"] = part.function.name
                if part.function and part.function.arguments:
                    call["arguments"] += part.function.arguments
            finish = choice.finish_reason or finish
    assert finish == "tool_calls"
    # The same seed makes the same call; each session names its calls itself.
    assert [(c.function.name, c.function.arguments) for c in whole] == [
        (c["name"], c["arguments"]) for _, c in sorted(calls.items())
    ]
    assert all(c["id"].startswith("call_") for c in calls.values())
    assert whole[0].function.name in ("get_weather", "get_time")


def test_a_two_turn_tool_loop(client: openai.OpenAI) -> None:
    first = client.chat.completions.create(
        model="m",
        messages=ASK,
        tools=[WEATHER],
        tool_choice=FORCE_WEATHER,
        max_tokens=60,
        extra_body=NO_THINKING,
    )
    message = first.choices[0].message
    (call,) = message.tool_calls or []
    assert call.type == "function"
    history: list[ChatCompletionMessageParam] = [
        *ASK,
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": call.id,
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": call.function.arguments},
                }
            ],
        },
        {"role": "tool", "tool_call_id": call.id, "content": [{"type": "text", "text": "Sunny, 24 C."}]},
    ]
    second = client.chat.completions.create(
        model="m", messages=history, tools=[WEATHER], max_tokens=12, extra_body=NO_THINKING
    )
    answer = second.choices[0]
    assert answer.finish_reason in ("stop", "length", "tool_calls")
    assert second.usage is not None and second.usage.prompt_tokens > (
        first.usage.prompt_tokens if first.usage else 0
    )
    assert answer.message.content or answer.message.tool_calls


def test_parse_with_a_pydantic_model_returns_an_instance(client: openai.OpenAI) -> None:
    completion = client.chat.completions.parse(
        model="m",
        messages=ASK,
        response_format=Answer,
        max_tokens=80,
        seed=6,
        extra_body={"thinking_token_budget": 2},
    )
    message = completion.choices[0].message
    assert isinstance(message.parsed, Answer)
    extra = message.model_extra or {}
    assert extra["reasoning"] == extra["reasoning_content"] != ""


def test_json_object_mode_returns_an_object(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(
        model="m",
        messages=ASK,
        response_format={"type": "json_object"},
        max_tokens=200,
        seed=3,
        extra_body=NO_THINKING,
        # A random model would grow the object until the budget ends: nudge it to close.
        logit_bias={"92": 5},
    )
    if completion.choices[0].finish_reason == "stop":
        assert isinstance(json.loads(completion.choices[0].message.content or ""), dict)
    else:
        assert (completion.choices[0].message.content or "").startswith("{")


def test_logprobs_in_both_shapes(client: openai.OpenAI) -> None:
    request: dict[str, Any] = {
        "model": "m",
        "messages": ASK,
        "max_tokens": 10,
        "temperature": 0,
        "logprobs": True,
        "top_logprobs": 4,
        "extra_body": NO_THINKING,
    }
    completion = client.chat.completions.create(**request)
    logprobs = completion.choices[0].logprobs
    assert logprobs is not None and logprobs.content
    assert "".join(entry.token for entry in logprobs.content) == completion.choices[0].message.content
    for entry in logprobs.content:
        values = [top.logprob for top in entry.top_logprobs]
        assert len(values) == 4 and values == sorted(values, reverse=True) and values[0] <= 0
        assert entry.logprob == values[0]  # greedy: the best token
        assert entry.bytes == list(entry.token.encode())
    streamed = [
        entry
        for chunk in client.chat.completions.create(**request, stream=True)
        for choice in chunk.choices
        for entry in (choice.logprobs.content or [] if choice.logprobs else [])
    ]
    assert [e.model_dump() for e in streamed] == [e.model_dump() for e in logprobs.content]


def test_n_choices_are_reproducible_with_a_seed(client: openai.OpenAI) -> None:
    request: dict[str, Any] = {
        "model": "m",
        "messages": ASK,
        "max_tokens": 12,
        "n": 3,
        "seed": 77,
        "temperature": 1.0,
    }
    first = client.chat.completions.create(**request)
    second = client.chat.completions.create(**request)
    assert [c.index for c in first.choices] == [0, 1, 2]

    def texts(completion: Any) -> list[str]:
        return [
            (c.message.model_extra or {}).get("reasoning_content", "") + (c.message.content or "")
            for c in completion.choices
        ]

    assert texts(first) == texts(second)
    assert len(set(texts(first))) == 3
    assert first.usage is not None and first.usage.prompt_tokens == second.usage.prompt_tokens
    # The prompt is counted once; each choice's tokens count (at most 12, fewer after an EOS).
    assert 3 <= first.usage.completion_tokens <= 3 * 12
    assert first.choices[0].finish_reason in ("length", "stop")
    streamed: dict[int, str] = {}
    for chunk in client.chat.completions.create(**request, stream=True):
        for choice in chunk.choices:
            delta = choice.delta
            text = (delta.model_extra or {}).get("reasoning_content") or ""
            streamed[choice.index] = streamed.get(choice.index, "") + text + (delta.content or "")
    assert [streamed[i] for i in range(3)] == texts(first)


def test_resuming_a_stream_of_choices_and_calls_replays_the_rest(stack: Stack) -> None:
    body = {
        "messages": ASK,
        "tools": [WEATHER],
        "tool_choice": "required",
        "n": 2,
        "max_tokens": 60,
        "stream": True,
        "session_id": "agents-resume",
        "thinking_token_budget": 0,
    }
    url = f"{stack.gateway.url}/v1/chat/completions"
    with httpx.stream("POST", url, json=body, timeout=60) as response:
        events = list(iter_events(response))
    assert any("tool_calls" in c["delta"] for e in events[:-1] for c in e.json["choices"])
    after = len(events) // 2
    headers = {"Last-Event-ID": f"agents-resume:{after}"}
    with httpx.stream("POST", url, json=body, headers=headers, timeout=60) as response:
        assert [e.data for e in iter_events(response)] == [e.data for e in events[after + 1 :]]


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        (
            {
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {"name": "x", "schema": {"type": "strng"}},
                }
            },
            "response_format",
        ),
        (
            {"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "nope"}}},
            "tool_choice",
        ),
        ({"top_logprobs": 3}, "top_logprobs"),
        ({"n": 9}, "n"),
        (
            {"messages": [*ASK, {"role": "tool", "tool_call_id": "call_x", "content": "hi"}]},
            "messages[1].tool_call_id",
        ),
        ({"tools": [{"type": "function", "function": {"name": "bad name!"}}]}, "tools[0].function.name"),
    ],
)
def test_bad_agent_fields_are_a_400_naming_them_and_harm_nothing(
    client: openai.OpenAI, fields: dict[str, Any], param: str
) -> None:
    request: dict[str, Any] = {"model": "m", "messages": ASK, "max_tokens": 4, **fields}
    with pytest.raises(openai.BadRequestError) as raised:
        client.chat.completions.create(**request)
    assert raised.value.status_code == 400
    assert isinstance(raised.value.body, dict) and raised.value.body.get("param") == param
    assert client.chat.completions.create(model="m", messages=ASK, max_tokens=4).choices
