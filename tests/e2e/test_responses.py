"""The Responses API through the official openai client: background, resume, cancel, chains."""

from __future__ import annotations

import time
from typing import Any

import httpx
import openai
import pytest
from openai.types.responses import Response, ResponseStreamEvent
from pydantic import TypeAdapter

from tests.conftest import Stack, StackFactory
from tests.sse import iter_events

EVENTS: TypeAdapter[Any] = TypeAdapter(ResponseStreamEvent)
SHORT_THINKING: dict[str, Any] = {"thinking_token_budget": 4}


def raw_events(url: str, response_id: str, starting_after: int = -1) -> list[dict[str, Any]]:
    """Every event after ``starting_after``, read as plain SSE and checked against the SDK's types."""
    params = {"stream": "true", "starting_after": str(starting_after)}
    with httpx.stream("GET", f"{url}/v1/responses/{response_id}", params=params, timeout=60) as response:
        assert response.status_code == 200, response.read()
        events = [event.json for event in iter_events(response) if not event.is_done]
    for event in events:
        EVENTS.validate_python(event)
    return events


def text_of(events: list[Any]) -> str:
    return "".join(event.delta for event in events if event.type == "response.output_text.delta")


def test_a_foreground_response_has_reasoning_and_a_message(client: openai.OpenAI) -> None:
    response = client.responses.create(
        model="m", input="Hello", instructions="Be brief.", max_output_tokens=48, extra_body=SHORT_THINKING
    )
    assert response.id.startswith("resp_") and response.object == "response"
    assert response.status in ("completed", "incomplete")
    kinds = [item.type for item in response.output]
    assert kinds[0] == "reasoning" and "message" in kinds
    assert response.usage is not None and response.usage.output_tokens <= 48
    assert response.usage.output_tokens_details.reasoning_tokens > 0
    assert response.instructions == "Be brief."
    assert response.output_text == client.responses.retrieve(response.id).output_text


def test_background_stream_cut_and_resumed_elsewhere_equals_the_whole(stack: Stack) -> None:
    client = stack.client()
    stream = client.responses.create(
        model="m",
        input="Tell me a story.",
        background=True,
        stream=True,
        max_output_tokens=60,
        extra_body=SHORT_THINKING,
    )
    seen: list[Any] = []
    for event in stream:
        seen.append(event)
        if len(seen) == 8:
            break
    stream.close()  # the client leaves; a background response goes on
    response_id = seen[0].response.id
    other = stack.client(stack.add_gateway())
    rest: list[Any] = list(
        other.responses.retrieve(response_id, stream=True, starting_after=seen[-1].sequence_number)
    )
    events = seen + rest
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert events[-1].type in ("response.completed", "response.incomplete")
    whole = raw_events(stack.gateway.url, response_id)
    assert [e.model_dump(mode="json", exclude_unset=True) for e in events] == [
        EVENTS.validate_python(e).model_dump(mode="json", exclude_unset=True) for e in whole
    ]
    final = other.responses.retrieve(response_id)
    assert final.output_text == text_of(events) and final.status == events[-1].response.status
    assert final.background is True


def test_starting_after_the_end_returns_nothing_more(stack: Stack, client: openai.OpenAI) -> None:
    response = client.responses.create(
        model="m", input="Hi", max_output_tokens=8, store=True, extra_body=SHORT_THINKING
    )
    events = raw_events(stack.gateway.url, response.id)
    assert raw_events(stack.gateway.url, response.id, starting_after=len(events) - 1) == []
    assert raw_events(stack.gateway.url, response.id, starting_after=len(events) + 10) == []


def test_cancel_while_queued_and_while_running(make_stack: StackFactory) -> None:
    private = make_stack(WORKER_MAX_BATCH="1")
    client = private.client()
    running = client.responses.create(
        model="m", input="Go on and on.", background=True, max_output_tokens=4000
    )
    queued = client.responses.create(model="m", input="Wait.", background=True, max_output_tokens=8)
    assert queued.status == "queued"
    deadline = time.monotonic() + 30
    while client.responses.retrieve(running.id).status != "in_progress":
        assert time.monotonic() < deadline
        time.sleep(0.1)
    cancelled = client.responses.cancel(queued.id)
    assert cancelled.status == "cancelled" and cancelled.output == []
    stopped = client.responses.cancel(running.id)
    assert stopped.status == "cancelled"
    assert stopped.output and stopped.usage is not None and stopped.usage.output_tokens < 4000
    # Idempotent: a finished response is returned unchanged.
    assert (
        client.responses.cancel(running.id).model_dump() == client.responses.retrieve(running.id).model_dump()
    )
    events = raw_events(private.gateway.url, queued.id)
    assert [e["type"] for e in events] == ["response.created", "response.incomplete"]


def test_previous_response_id_chains_two_turns(client: openai.OpenAI) -> None:
    first = client.responses.create(
        model="m",
        input="My name is Ada.",
        instructions="Be brief.",
        max_output_tokens=12,
        extra_body={"thinking_token_budget": 0},
    )
    second = client.responses.create(
        model="m",
        input="What is my name?",
        previous_response_id=first.id,
        max_output_tokens=8,
        extra_body=SHORT_THINKING,
    )
    assert second.previous_response_id == first.id
    assert first.usage is not None and second.usage is not None
    # The second prompt holds the first turn and its answer (but not its instructions).
    assert second.usage.input_tokens > first.usage.input_tokens
    items = client.responses.input_items.list(second.id)
    assert [item.type for item in items.data] == ["message"]
    with pytest.raises(openai.NotFoundError) as raised:
        client.responses.create(model="m", input="x", previous_response_id="resp_" + "0" * 48)
    assert isinstance(raised.value.body, dict) and raised.value.body.get("param") == "previous_response_id"


def test_a_gateway_killed_mid_stream_loses_nothing(make_stack: StackFactory) -> None:
    private = make_stack()
    doomed = private.add_gateway()
    seen: list[Any] = []
    with private.client(doomed).responses.create(
        model="m", input="A long story.", background=True, stream=True, max_output_tokens=300
    ) as stream:
        try:
            for event in stream:
                seen.append(event)
                if len(seen) == 10:
                    doomed.kill()
        except (httpx.HTTPError, openai.APIError):
            pass
    response_id = seen[0].response.id
    rest = list(
        private.client().responses.retrieve(response_id, stream=True, starting_after=seen[-1].sequence_number)
    )
    events = seen + rest
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert events[-1].type in ("response.completed", "response.incomplete")
    assert text_of(events) == private.client().responses.retrieve(response_id).output_text


def test_delete_and_other_keys_see_nothing(make_stack: StackFactory) -> None:
    private = make_stack(API_KEYS="key-a,key-b")
    owner, stranger = private.client(api_key="key-a"), private.client(api_key="key-b")
    response = owner.responses.create(model="m", input="Hi", max_output_tokens=4)
    with pytest.raises(openai.NotFoundError):
        stranger.responses.retrieve(response.id)
    with pytest.raises(openai.NotFoundError):
        stranger.responses.create(model="m", input="x", previous_response_id=response.id)
    owner.responses.delete(response.id)
    with pytest.raises(openai.NotFoundError):
        owner.responses.retrieve(response.id)


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"input": [{"type": "message", "role": "robot", "content": "x"}]}, "input[0].role"),
        ({"input": [{"role": "user", "content": [{"type": "input_audio"}]}]}, "input[0].content[0].type"),
        ({"input": [{"type": "function_call", "name": "f"}]}, "input[0].call_id"),
        ({"input": "x", "tools": [{"type": "web_search"}]}, "tools[0].type"),
        ({"input": "x", "include": ["reasoning.encrypted_content"]}, "include"),
        ({"input": "x", "max_output_tokens": 0}, "max_output_tokens"),
        (
            {"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "ftp://x"}]}]},
            "input[0].content[0]",
        ),
    ],
)
def test_malformed_requests_are_400_naming_the_field(stack: Stack, body: dict[str, Any], param: str) -> None:
    response = httpx.post(f"{stack.gateway.url}/v1/responses", json={"model": "m", **body}, timeout=30)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == param


def test_a_response_is_a_chat_session_underneath(stack: Stack, client: openai.OpenAI) -> None:
    response: Response = client.responses.create(model="m", input="Hi", max_output_tokens=4)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve("chatcmpl-unknown")
    assert (
        httpx.get(f"{stack.gateway.url}/v1/sessions/{response.id}", timeout=10).json()["status"] == "finished"
    )


def test_a_background_response_is_not_auto_cancelled_a_foreground_one_is(make_stack: StackFactory) -> None:
    private = make_stack(CANCEL_AFTER_DISCONNECT_SECONDS="1")
    client = private.client()
    # Long enough to outlast the auto-cancel delay several times over.
    background = client.responses.create(model="m", input="Go on.", background=True, max_output_tokens=1500)
    with client.responses.create(model="m", input="Go on.", stream=True, max_output_tokens=1500) as stream:
        foreground_id = next(iter(stream)).response.id  # type: ignore[union-attr]
    deadline = time.monotonic() + 30
    while client.responses.retrieve(foreground_id).status != "cancelled":
        assert time.monotonic() < deadline, "the foreground response was never auto-cancelled"
        time.sleep(0.2)
    time.sleep(2)  # more passes of the reaper, which would have cancelled both by now
    assert client.responses.retrieve(background.id).status in ("in_progress", "completed", "incomplete")
    client.responses.cancel(background.id)


def test_a_forced_function_call_is_a_function_call_item(stack: Stack, client: openai.OpenAI) -> None:
    tool = {
        "type": "function",
        "name": "get_weather",
        "parameters": {
            "type": "object",
            "properties": {"city": {"enum": ["Paris", "Rome"]}},
            "required": ["city"],
            "additionalProperties": False,
        },
    }
    request: dict[str, Any] = {
        "model": "m",
        "input": "Weather in Paris?",
        "tools": [tool],
        "tool_choice": {"type": "function", "name": "get_weather"},
        "max_output_tokens": 60,
        "extra_body": {"thinking_token_budget": 0},
    }
    response = client.responses.create(**request)
    (call,) = [item for item in response.output if item.type == "function_call"]
    assert call.name == "get_weather" and call.call_id.startswith("call_")
    assert call.arguments in ('{"city": "Paris"}', '{"city": "Rome"}')
    events = raw_events(stack.gateway.url, response.id)
    kinds = [event["type"] for event in events]
    assert "response.function_call_arguments.done" in kinds
    # The next turn sends only the call's output: the call is in the previous response.
    follow_up = client.responses.create(
        model="m",
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": "Sunny."}],
        previous_response_id=response.id,
        max_output_tokens=8,
    )
    assert follow_up.status in ("completed", "incomplete")
    # Without the previous response, the output answers no call: a 400 naming it.
    with pytest.raises(openai.BadRequestError) as raised:
        client.responses.create(
            model="m",
            input=[{"type": "function_call_output", "call_id": call.call_id, "output": "Sunny."}],
            max_output_tokens=8,
        )
    assert isinstance(raised.value.body, dict) and raised.value.body.get("param") == "input[0].tool_call_id"
