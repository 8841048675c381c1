"""OpenAI conformance: every request field through the official client, streaming and not.

Raw responses are validated against the ``openai`` package's own types, with the fields
that those types leave optional but OpenAI always sends checked by hand.

The tiny checkpoint has random weights: greedy decoding repeats "\\n", and the template
opens <think>, so its output is all reasoning unless a logit bias makes it close the block.
"""

from __future__ import annotations

import json
import time
from typing import Any

import openai
import pytest
from openai.types.chat import ChatCompletion, ChatCompletionChunk, ChatCompletionMessageParam

from tests.conftest import Stack, StackFactory

HELLO: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Hello"}]
THINK_END, IM_END, END_OF_TEXT, NEWLINE, HELLO_TOKEN = 151668, 151645, 151643, 198, 23811
NO_EOS = {str(IM_END): -100, str(END_OF_TEXT): -100}
# Greedy, every token new, and </think> as the first token: all answer, no reasoning.
ANSWER_AT_ONCE: dict[str, Any] = {
    "temperature": 0,
    "presence_penalty": 2,
    "logit_bias": {str(THINK_END): 1, **NO_EOS},
}
# The same with a smaller bias: </think> wins only after some reasoning.
REASON_THEN_ANSWER: dict[str, Any] = {**ANSWER_AT_ONCE, "logit_bias": {str(THINK_END): 0.75, **NO_EOS}}


def check_completion(raw: dict[str, Any]) -> ChatCompletion:
    assert {"id", "object", "created", "model", "choices", "usage", "system_fingerprint"} <= raw.keys()
    for choice in raw["choices"]:
        assert {"index", "message", "finish_reason", "logprobs"} <= choice.keys()
        assert {"role", "content"} <= choice["message"].keys()
    assert {"prompt_tokens", "completion_tokens", "total_tokens"} <= raw["usage"].keys()
    return ChatCompletion.model_validate(raw)


def check_chunk(raw: dict[str, Any]) -> ChatCompletionChunk:
    assert {"id", "object", "created", "model", "choices", "system_fingerprint"} <= raw.keys()
    for choice in raw["choices"]:
        assert {"index", "delta", "finish_reason", "logprobs"} <= choice.keys()
    return ChatCompletionChunk.model_validate(raw)


def complete(client: openai.OpenAI, **params: Any) -> ChatCompletion:
    """A non-streaming completion, validated from the raw body, and as the SDK parses it."""
    params.setdefault("messages", HELLO)
    raw = client.chat.completions.with_raw_response.create(model="m", **params)
    completion = check_completion(raw.http_response.json())
    assert raw.parse().model_dump() == completion.model_dump()
    return completion


def stream(client: openai.OpenAI, **params: Any) -> list[ChatCompletionChunk]:
    """A streaming completion's chunks, each validated from its raw SSE data."""
    params.setdefault("messages", HELLO)
    chunks: list[ChatCompletionChunk] = []
    with client.chat.completions.with_streaming_response.create(model="m", stream=True, **params) as response:
        for line in response.iter_lines():
            if not line.startswith("data: "):
                continue
            data = line.removeprefix("data: ")
            if data == "[DONE]":
                return chunks
            chunks.append(check_chunk(json.loads(data)))
    raise AssertionError("the stream ended without [DONE]")


def error_message(error: openai.APIStatusError) -> str:
    assert isinstance(error.body, dict)
    return str(error.body["message"])


def reasoning_of(completion: ChatCompletion) -> str:
    return str((completion.choices[0].message.model_extra or {}).get("reasoning_content") or "")


def streamed(chunks: list[ChatCompletionChunk]) -> tuple[str, str]:
    """The (reasoning, content) of a stream."""
    reasoning, content = [], []
    for chunk in chunks:
        for choice in chunk.choices:
            reasoning.append(str((choice.delta.model_extra or {}).get("reasoning_content") or ""))
            content.append(choice.delta.content or "")
    return "".join(reasoning), "".join(content)


def finish_of(chunks: list[ChatCompletionChunk]) -> str | None:
    return next(choice.finish_reason for c in chunks for choice in c.choices if choice.finish_reason)


# ---------------------------------------------------------------- response objects


def test_completion_has_every_openai_field(client: openai.OpenAI, stack: Stack) -> None:
    completion = complete(client, max_tokens=6, seed=1)
    assert completion.object == "chat.completion"
    assert completion.id.startswith("chatcmpl-")
    assert abs(completion.created - time.time()) < 120
    assert completion.model == stack.env["MODEL_REPO_ID"]
    assert completion.system_fingerprint
    [choice] = completion.choices
    assert choice.index == 0 and choice.message.role == "assistant" and choice.logprobs is None
    assert choice.finish_reason == "length"
    usage = completion.usage
    assert usage is not None and usage.completion_tokens == 6
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    assert usage.completion_tokens_details is not None
    assert usage.completion_tokens_details.reasoning_tokens == 6


def test_stream_chunks_have_every_openai_field(client: openai.OpenAI) -> None:
    chunks = stream(client, max_tokens=6, seed=1, stream_options={"include_usage": True})
    first, *deltas, finish, usage_chunk = chunks
    assert first.choices[0].delta.role == "assistant"
    assert {(c.id, c.created, c.model, c.system_fingerprint) for c in chunks} == {
        (first.id, first.created, first.model, first.system_fingerprint)
    }
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert all(c.choices[0].index == 0 and c.choices[0].finish_reason is None for c in [first, *deltas])
    assert finish.choices[0].finish_reason == "length" and finish.choices[0].delta.content is None
    assert usage_chunk.choices == [] and usage_chunk.usage is not None
    # The stream carries what the non-streaming response does.
    whole = complete(client, max_tokens=6, seed=1)
    assert usage_chunk.usage.model_dump() == whole.usage.model_dump()  # type: ignore[union-attr]
    assert streamed(chunks) == (reasoning_of(whole), whole.choices[0].message.content)


def test_no_usage_chunk_unless_asked(client: openai.OpenAI) -> None:
    chunks = stream(client, max_tokens=3)
    assert chunks[-1].choices[0].finish_reason == "length"
    assert all(chunk.usage is None for chunk in chunks)


# ---------------------------------------------------------------- thinking


def test_unclosed_thinking_is_all_reasoning(client: openai.OpenAI) -> None:
    completion = complete(client, max_tokens=8, temperature=0)
    message = completion.choices[0].message
    assert reasoning_of(completion) == "\n" * 8 and message.content == ""
    assert completion.choices[0].finish_reason == "length"
    assert completion.usage is not None and completion.usage.completion_tokens_details is not None
    assert completion.usage.completion_tokens_details.reasoning_tokens == 8
    chunks = stream(client, max_tokens=8, temperature=0)
    assert streamed(chunks) == ("\n" * 8, "") and finish_of(chunks) == "length"


@pytest.mark.parametrize("sampling", [ANSWER_AT_ONCE, REASON_THEN_ANSWER], ids=["answer", "reason-answer"])
def test_reasoning_and_answer_are_split(client: openai.OpenAI, sampling: dict[str, Any]) -> None:
    completion = complete(client, max_tokens=24, **sampling)
    reasoning, content = reasoning_of(completion), completion.choices[0].message.content or ""
    usage = completion.usage
    assert usage is not None and usage.completion_tokens_details is not None
    reasoning_tokens = usage.completion_tokens_details.reasoning_tokens or 0
    assert content and "think>" not in content + reasoning
    assert 0 < reasoning_tokens < usage.completion_tokens == 24
    if sampling is ANSWER_AT_ONCE:
        assert reasoning == "" and reasoning_tokens == 1  # just </think>
    else:
        assert reasoning
    chunks = stream(client, max_tokens=24, **sampling)
    assert streamed(chunks) == (reasoning, content)
    # Reasoning deltas all come before the answer's.
    kinds = [
        "content" if choice.delta.content else "reasoning"
        for chunk in chunks[1:]
        for choice in chunk.choices
        if choice.delta.content or (choice.delta.model_extra or {}).get("reasoning_content")
    ]
    assert kinds == sorted(kinds, key=lambda kind: kind == "content")


# ---------------------------------------------------------------- stop


def answer_deltas(client: openai.OpenAI, max_tokens: int = 24) -> list[str]:
    chunks = stream(client, max_tokens=max_tokens, **ANSWER_AT_ONCE)
    return [choice.delta.content for c in chunks for choice in c.choices if choice.delta.content]


@pytest.mark.parametrize("as_list", [False, True])
def test_stop_cuts_the_answer_and_is_never_emitted(client: openai.OpenAI, as_list: bool) -> None:
    deltas = answer_deltas(client)
    answer = "".join(deltas)
    # A stop string spanning two steps: the end of one delta and the start of the next.
    i = next(i for i in range(3, len(deltas) - 1) if len(deltas[i]) > 1 and len(deltas[i + 1]) > 1)
    stop_string = deltas[i][-2:] + deltas[i + 1][:2]
    cut = answer[: answer.index(stop_string)]
    stop: str | list[str] = [stop_string, "not-in-the-answer"] if as_list else stop_string

    completion = complete(client, max_tokens=24, stop=stop, **ANSWER_AT_ONCE)
    assert completion.choices[0].message.content == cut
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None and completion.usage.completion_tokens < 24
    chunks = stream(client, max_tokens=24, stop=stop, **ANSWER_AT_ONCE)
    assert streamed(chunks) == ("", cut) and finish_of(chunks) == "stop"
    assert not any(stop_string in (choice.delta.content or "") for c in chunks for choice in c.choices)


def test_a_stop_string_that_never_occurs_changes_nothing(client: openai.OpenAI) -> None:
    answer = "".join(answer_deltas(client, max_tokens=10))
    completion = complete(client, max_tokens=10, stop=["\u2603 never"], **ANSWER_AT_ONCE)
    assert completion.choices[0].message.content == answer
    assert completion.choices[0].finish_reason == "length"


def test_stop_does_not_apply_to_reasoning(client: openai.OpenAI) -> None:
    completion = complete(client, max_tokens=6, temperature=0, stop="\n")
    assert reasoning_of(completion) == "\n" * 6 and completion.choices[0].finish_reason == "length"


# ---------------------------------------------------------------- sampling


def texts(completion: ChatCompletion) -> tuple[str, str]:
    return reasoning_of(completion), completion.choices[0].message.content or ""


def test_same_seed_same_output(client: openai.OpenAI) -> None:
    params: dict[str, Any] = {"max_tokens": 16, "temperature": 1.0, "logit_bias": NO_EOS}
    first = texts(complete(client, seed=1234, **params))
    assert texts(complete(client, seed=1234, **params)) == first
    assert streamed(stream(client, seed=1234, **params)) == first
    assert texts(complete(client, seed=4321, **params)) != first


def test_top_k_one_and_tiny_top_p_decode_greedily(client: openai.OpenAI) -> None:
    greedy = texts(complete(client, max_tokens=8, temperature=0, presence_penalty=2))
    cuts: list[dict[str, Any]] = [{"extra_body": {"top_k": 1}}, {"top_p": 1e-9}]
    for seed, cut in enumerate(cuts):
        sampled = complete(client, max_tokens=8, temperature=1.5, presence_penalty=2, seed=seed, **cut)
        assert texts(sampled) == greedy


def test_temperature_zero_is_deterministic(client: openai.OpenAI) -> None:
    params: dict[str, Any] = {"max_tokens": 8, "temperature": 0, "presence_penalty": 2}
    assert texts(complete(client, **params)) == texts(complete(client, **params))


@pytest.mark.parametrize(
    "penalty",
    [
        {"presence_penalty": 2},
        {"frequency_penalty": 0.5},
        {"extra_body": {"repetition_penalty": 1.5}},
        {"logit_bias": {str(NEWLINE): -100}},
    ],
)
def test_penalties_and_bias_steer_greedy_decoding(client: openai.OpenAI, penalty: dict[str, Any]) -> None:
    # Greedy decoding of the tiny model repeats one token; each of these breaks that.
    steered = complete(client, max_tokens=8, temperature=0, **penalty)
    assert reasoning_of(steered) != "\n" * 8


def test_negative_presence_penalty_keeps_repeating(client: openai.OpenAI) -> None:
    completion = complete(client, max_tokens=8, temperature=0, presence_penalty=-2)
    assert reasoning_of(completion) == "\n" * 8


def test_logit_bias_forces_a_token(client: openai.OpenAI) -> None:
    completion = complete(client, max_tokens=5, temperature=1.0, seed=3, logit_bias={str(HELLO_TOKEN): 100})
    assert reasoning_of(completion) == " hello" * 5


# ---------------------------------------------------------------- limits


@pytest.mark.parametrize("field", ["max_tokens", "max_completion_tokens"])
def test_token_limits(client: openai.OpenAI, field: str) -> None:
    completion = complete(client, logit_bias=NO_EOS, **{field: 7})
    assert completion.usage is not None and completion.usage.completion_tokens == 7
    assert completion.choices[0].finish_reason == "length"
    chunks = stream(client, logit_bias=NO_EOS, stream_options={"include_usage": True}, **{field: 7})
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 7


def test_max_completion_tokens_wins_over_max_tokens(client: openai.OpenAI) -> None:
    completion = complete(client, max_tokens=9, max_completion_tokens=4, logit_bias=NO_EOS)
    assert completion.usage is not None and completion.usage.completion_tokens == 4


@pytest.mark.parametrize("stream_it", [False, True])
def test_max_tokens_beyond_the_context_is_400_with_counts(client: openai.OpenAI, stream_it: bool) -> None:
    with pytest.raises(openai.BadRequestError) as raised:
        # The largest max_tokens the gateway accepts (MAX_TOKENS_CAP): the whole context.
        client.chat.completions.create(model="m", messages=HELLO, max_tokens=32768, stream=stream_it)
    assert raised.value.param == "max_tokens"
    message = error_message(raised.value)
    assert "32768 in the completion" in message and "context" in message


def test_defaults_come_from_the_settings(make_stack: StackFactory) -> None:
    private = make_stack(MAX_TOKENS="5", TEMPERATURE="0")
    client = private.client()
    completion = complete(client, logit_bias=NO_EOS)
    assert completion.usage is not None and completion.usage.completion_tokens == 5
    assert reasoning_of(completion) == "\n" * 5  # greedy


# ---------------------------------------------------------------- refused and ignored fields


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"temperature": 2.5}, "temperature"),
        ({"temperature": -0.5}, "temperature"),
        ({"top_p": 0}, "top_p"),
        ({"top_p": 1.5}, "top_p"),
        ({"presence_penalty": 2.5}, "presence_penalty"),
        ({"frequency_penalty": -2.5}, "frequency_penalty"),
        ({"logit_bias": {"not-a-token": 1}}, "logit_bias"),
        ({"logit_bias": {"42": 101}}, "logit_bias"),
        ({"logit_bias": {"151669": 1}}, "logit_bias"),  # past the vocabulary
        ({"max_tokens": 0}, "max_tokens"),
        ({"max_completion_tokens": 0}, "max_completion_tokens"),
        ({"seed": 2**64}, "seed"),
        ({"stop": [""]}, "stop"),
        ({"stop": [str(i) for i in range(17)]}, "stop"),
        ({"n": 9}, "n"),
        ({"stream_options": {"include_usage": True}}, "stream_options"),
        ({"extra_body": {"top_k": -2}}, "top_k"),
        ({"extra_body": {"repetition_penalty": 0}}, "repetition_penalty"),
        ({"tools": [{"type": "web", "function": {"name": "f"}}]}, "tools[0].type"),
        ({"tool_choice": "required"}, "tool_choice"),
        ({"response_format": {"type": "json_schema"}}, "response_format.json_schema"),
        ({"top_logprobs": 3}, "top_logprobs"),
        ({"audio": {"voice": "alloy", "format": "wav"}}, "audio"),
        ({"modalities": ["text", "audio"]}, "modalities"),
        ({"reasoning_effort": "extreme"}, "reasoning_effort"),
        ({"prediction": {"type": "content", "content": "x"}}, "prediction"),
        ({"web_search_options": {}}, "web_search_options"),
    ],
)
def test_bad_or_unsupported_fields_are_400_naming_them(
    client: openai.OpenAI, fields: dict[str, Any], param: str
) -> None:
    with pytest.raises(openai.BadRequestError) as raised:
        client.chat.completions.create(model="m", messages=HELLO, **{"max_tokens": 2, **fields})
    assert raised.value.status_code == 400
    assert raised.value.param == param
    assert param in error_message(raised.value)


def test_neutral_and_unknown_fields_are_accepted(client: openai.OpenAI) -> None:
    completion = complete(
        client,
        max_tokens=2,
        n=1,
        logprobs=False,
        response_format={"type": "text"},
        user="u-1",
        metadata={"k": "v"},
        store=False,
        service_tier="auto",
        extra_body={"some_future_field": {"x": 1}},
    )
    assert completion.choices[0].finish_reason in ("length", "stop")
