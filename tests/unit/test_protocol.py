from __future__ import annotations

import pytest
from pydantic import ValidationError

from api.errors import BadRequest
from api.media_parts import MediaLimits
from api.protocol import ChatCompletionRequest, check_max_tokens, check_n, to_messages, to_sampling, to_tools
from shared.jobs import TextPart
from shared.settings import Settings

SETTINGS = Settings(max_tokens=256, temperature=0.7)
LIMITS = MediaLimits(max_items=4, max_image_bytes=1000, max_video_bytes=2000)


def request(**fields: object) -> ChatCompletionRequest:
    return ChatCompletionRequest.model_validate({"messages": [{"role": "user", "content": "hi"}], **fields})


def test_string_and_part_contents_become_text_parts() -> None:
    parsed = ChatCompletionRequest.model_validate(
        {
            "messages": [
                {"role": "developer", "content": "be brief"},
                {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
            ]
        }
    )
    messages, inline = to_messages(parsed, LIMITS)
    assert inline == []
    assert [m.role for m in messages] == ["system", "user"]
    assert [p.text for p in messages[1].content if isinstance(p, TextPart)] == ["a", "b"]


def test_sampling_defaults_and_precedence() -> None:
    sampling = to_sampling(request(), SETTINGS)
    assert sampling.max_new_tokens == 256 and sampling.temperature == 0.7
    assert sampling.max_tokens_param is None
    assert sampling.top_p is None and sampling.top_k is None and sampling.repetition_penalty is None
    assert sampling.presence_penalty == sampling.frequency_penalty == 0.0
    assert sampling.stop == [] and sampling.logit_bias == {}
    both = to_sampling(request(max_tokens=10, max_completion_tokens=20, temperature=0), SETTINGS)
    assert both.max_new_tokens == 20 and both.temperature == 0
    assert both.max_tokens_param == "max_completion_tokens"
    assert to_sampling(request(max_tokens=10), SETTINGS).max_tokens_param == "max_tokens"


def test_openai_sampling_fields_reach_the_job() -> None:
    sampling = to_sampling(
        request(
            stop="END",
            presence_penalty=1.5,
            frequency_penalty=-0.5,
            logit_bias={"151668": 100, "13": -7.5},
            seed=2**64 - 1,
            top_k=-1,
            top_p=0.5,
            repetition_penalty=1.1,
        ),
        SETTINGS,
    )
    assert sampling.stop == ["END"]
    assert (sampling.presence_penalty, sampling.frequency_penalty) == (1.5, -0.5)
    assert sampling.logit_bias == {151668: 100.0, 13: -7.5}
    assert (sampling.seed, sampling.top_k, sampling.top_p) == (2**64 - 1, 0, 0.5)
    assert sampling.repetition_penalty == 1.1
    assert to_sampling(request(stop=["a", "b"]), SETTINGS).stop == ["a", "b"]


@pytest.mark.parametrize(
    "field",
    [
        {"functions": [{"name": "f"}]},
        {"tool_choice": "required"},
        {"top_logprobs": 2},
        {"stream_options": {"include_usage": True}},
        {"stop": ""},
        {"stop": ["x"] * 17},
        {"logit_bias": {"abc": 1}},
        {"logit_bias": {"-5": 1}},
        {"logit_bias": {"5": 100.5}},
    ],
)
def test_refused_fields_are_named(field: dict[str, object]) -> None:
    with pytest.raises(BadRequest) as raised:
        request(**field)
    assert raised.value.param == next(iter(field))


@pytest.mark.parametrize(
    "field",
    [{"presence_penalty": 2.5}, {"frequency_penalty": -2.1}, {"seed": 2**64}, {"top_k": -2}, {"n": 0}],
)
def test_out_of_range_values_are_refused(field: dict[str, object]) -> None:
    with pytest.raises(ValidationError) as raised:
        request(**field)
    assert raised.value.errors()[0]["loc"] == (next(iter(field)),)


@pytest.mark.parametrize(
    "field",
    [
        {"logprobs": False},
        {"presence_penalty": 0},
        {"response_format": {"type": "text"}},
        {"user": "x"},
        {"store": False},
        {"metadata": {"a": "b"}},
        {"service_tier": "auto"},
        {"stop": None},
        {"logit_bias": {}},
        {"n": 1},
        {"n": 3},
        {"tool_choice": "auto"},
        {"logprobs": True, "top_logprobs": 2},
        {"reasoning_effort": "low"},
        {"response_format": {"type": "json_object"}},
        {"stream": True, "stream_options": {"include_usage": True}},
    ],
)
def test_neutral_or_unknown_fields_pass(field: dict[str, object]) -> None:
    request(**field)


@pytest.mark.parametrize("field", ["max_tokens", "max_completion_tokens"])
def test_a_completion_budget_over_the_cap_is_refused_naming_the_field(field: str) -> None:
    check_max_tokens(request(**{field: 1000}), cap=1000)
    with pytest.raises(BadRequest) as raised:
        check_max_tokens(request(**{field: 1001}), cap=1000)
    assert raised.value.param == field and "1000" in raised.value.message


WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}
CALL = {
    "id": "call_1",
    "type": "function",
    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
}


def test_a_tool_history_becomes_tool_turns() -> None:
    parsed = request(
        messages=[
            {"role": "user", "content": "weather?"},
            {"role": "assistant", "content": None, "tool_calls": [CALL]},
            {"role": "tool", "tool_call_id": "call_1", "content": [{"type": "text", "text": "sunny"}]},
        ],
        tools=[WEATHER_TOOL],
    )
    messages, _ = to_messages(parsed, LIMITS)
    assert [m.role for m in messages] == ["user", "assistant", "tool"]
    assert messages[1].content == [] and messages[1].tool_calls[0].arguments == '{"city": "Paris"}'
    assert messages[2].tool_call_id == "call_1"
    tools, constraint = to_tools(parsed)
    assert [t.name for t in tools] == ["get_weather"] and constraint is None


def test_a_tool_message_must_answer_an_earlier_call() -> None:
    parsed = request(
        messages=[
            {"role": "user", "content": "weather?"},
            {"role": "assistant", "content": None, "tool_calls": [CALL]},
            {"role": "tool", "tool_call_id": "call_2", "content": "sunny"},
        ]
    )
    with pytest.raises(BadRequest) as raised:
        to_messages(parsed, LIMITS)
    assert raised.value.param == "messages[2].tool_call_id"


def test_tool_choice_picks_the_constraint() -> None:
    named = request(
        tools=[WEATHER_TOOL], tool_choice={"type": "function", "function": {"name": "get_weather"}}
    )
    _, constraint = to_tools(named)
    assert constraint is not None and constraint.kind == "tool_calls" and not constraint.parallel
    required = request(tools=[WEATHER_TOOL], tool_choice="required", parallel_tool_calls=False)
    assert to_tools(required)[1] == constraint.model_copy(update={"parallel": False})
    assert to_tools(request(tools=[WEATHER_TOOL], tool_choice="none")) == ([], None)
    schema = {"type": "json_schema", "json_schema": {"name": "answer", "schema": {"type": "object"}}}
    _, from_format = to_tools(request(response_format=schema))
    assert from_format is not None and from_format.json_schema == {"type": "object"}


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        (
            {"tools": [WEATHER_TOOL], "tool_choice": {"type": "function", "function": {"name": "nope"}}},
            "tool_choice",
        ),
        ({"tools": [{"type": "retrieval", "function": {"name": "x"}}]}, "tools[0].type"),
        ({"tools": [WEATHER_TOOL, WEATHER_TOOL]}, "tools[1].function.name"),
        ({"response_format": {"type": "json_schema"}}, "response_format.json_schema"),
    ],
)
def test_bad_agent_fields_are_refused_naming_them(fields: dict[str, object], param: str) -> None:
    with pytest.raises(BadRequest) as raised:
        to_tools(request(**fields))
    assert raised.value.param == param


def test_n_and_reasoning_effort_are_checked() -> None:
    assert check_n(request(n=8), 8) == 8
    with pytest.raises(BadRequest) as raised:
        check_n(request(n=9), 8)
    assert raised.value.param == "n"
    assert to_sampling(request(reasoning_effort="none"), SETTINGS).thinking_budget == 0
    assert (
        to_sampling(request(reasoning_effort="low"), SETTINGS).thinking_budget == SETTINGS.thinking_budget_low
    )
    assert (
        to_sampling(request(thinking_token_budget=7, reasoning_effort="low"), SETTINGS).thinking_budget == 7
    )
    with pytest.raises(BadRequest) as effort:
        to_sampling(request(reasoning_effort="extreme"), SETTINGS)
    assert effort.value.param == "reasoning_effort"
