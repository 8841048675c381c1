"""Bad input gets OpenAI's error object with the right status, and harms nothing else."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from tests.conftest import Stack, StackFactory
from tests.processes import wait_until

HELLO: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Hello"}]


def assert_openai_error(response: httpx.Response, status: int) -> dict[str, object]:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}
    error: dict[str, object] = body["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert isinstance(error["message"], str) and error["message"]
    return error


def test_malformed_json_is_400(stack: Stack) -> None:
    response = httpx.post(
        f"{stack.gateway.url}/v1/chat/completions",
        content=b'{"messages": [',
        headers={"content-type": "application/json"},
        timeout=10,
    )
    error = assert_openai_error(response, 400)
    assert error["code"] == "invalid_json"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({}, "messages"),
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "robot", "content": "hi"}]}, "messages.0.role"),
        ({"messages": HELLO, "max_tokens": 0}, "max_tokens"),
        # Over MAX_TOKENS_CAP (32768 by default): refused before anything is queued.
        ({"messages": HELLO, "max_tokens": 32769}, "max_tokens"),
        ({"messages": HELLO, "max_completion_tokens": 10**6}, "max_completion_tokens"),
        ({"messages": HELLO, "temperature": 3}, "temperature"),
        ({"messages": HELLO, "top_p": 0}, "top_p"),
        ({"messages": HELLO, "session_id": "has spaces"}, "session_id"),
        ({"messages": HELLO, "n": 100}, "n"),
        (
            {"messages": HELLO, "tools": [{"type": "function", "function": {"name": "f", "parameters": []}}]},
            "tools.0.function.parameters",
        ),
        ({"messages": HELLO, "logprobs": 5}, "logprobs"),
        ({"messages": [{"role": "user", "content": [{"type": "audio"}]}]}, "messages[0].content[0]"),
    ],
)
def test_invalid_requests_are_400_naming_the_parameter(
    stack: Stack, body: dict[str, object], param: str
) -> None:
    response = httpx.post(f"{stack.gateway.url}/v1/chat/completions", json=body, timeout=10)
    error = assert_openai_error(response, 400)
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param


def test_unknown_fields_are_ignored(stack: Stack) -> None:
    response = httpx.post(
        f"{stack.gateway.url}/v1/chat/completions",
        timeout=60,
        json={"messages": HELLO, "max_tokens": 2, "user": "u1", "metadata": {}},
    )
    assert response.status_code == 200


def test_unknown_route_and_method_use_the_error_object(stack: Stack) -> None:
    assert_openai_error(httpx.get(f"{stack.gateway.url}/v1/nothing-here", timeout=5), 404)
    assert_openai_error(httpx.get(f"{stack.gateway.url}/v1/chat/completions", timeout=5), 405)


def test_openai_client_raises_bad_request(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as raised:
        client.chat.completions.create(model="m", messages=HELLO, temperature=5)
    assert raised.value.status_code == 400


def test_a_good_request_after_bad_ones_succeeds(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(model="m", messages=HELLO, max_tokens=3)
    assert completion.choices[0].finish_reason in ("length", "stop")


def test_cors_preflight_is_allowed(stack: Stack) -> None:
    response = httpx.options(
        f"{stack.gateway.url}/v1/chat/completions",
        timeout=5,
        headers={"Origin": "https://example.com", "Access-Control-Request-Method": "POST"},
    )
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] in ("*", "https://example.com")


def test_api_keys_guard_sessions(make_stack: StackFactory) -> None:
    private = make_stack(workers=0, API_KEYS="key-a,key-b")
    url = private.gateway.url
    assert_openai_error(httpx.get(f"{url}/v1/models", timeout=5), 401)
    assert_openai_error(
        httpx.get(f"{url}/v1/models", headers={"Authorization": "Bearer nope"}, timeout=5), 401
    )
    assert (
        httpx.get(f"{url}/v1/models", headers={"Authorization": "Bearer key-a"}, timeout=5).status_code == 200
    )
    assert httpx.get(f"{url}/health", timeout=5).status_code == 200
    # No worker in this stack: the request is refused before anything is queued.
    refused = httpx.post(
        f"{url}/v1/chat/completions",
        json={"messages": HELLO},
        headers={"Authorization": "Bearer key-a"},
        timeout=5,
    )
    assert_openai_error(refused, 503)
    assert refused.headers["retry-after"]


@pytest.fixture(scope="module")
def two_keys(make_module_stack: StackFactory) -> Stack:
    """One stack with two API keys for the tests below (their session ids differ)."""
    return make_module_stack(API_KEYS="key-a,key-b")


def test_sessions_are_private_to_their_key(two_keys: Stack) -> None:
    private = two_keys
    url = private.gateway.url
    owner = {"Authorization": "Bearer key-a"}
    other = {"Authorization": "Bearer key-b"}
    body = {"messages": HELLO, "max_tokens": 3, "session_id": "owned"}
    first = httpx.post(f"{url}/v1/chat/completions", json=body, headers=owner, timeout=60)
    assert first.status_code == 200 and first.json()["id"] == "owned"
    assert httpx.get(f"{url}/v1/sessions/owned", headers=owner, timeout=5).status_code == 200
    # Another key does not see it: for that key the id is free.
    assert_openai_error(httpx.get(f"{url}/v1/sessions/owned", headers=other, timeout=5), 404)
    assert_openai_error(httpx.post(f"{url}/v1/cancel/owned", headers=other, timeout=5), 404)
    resume = httpx.post(
        f"{url}/v1/chat/completions", json=body, headers={**other, "Last-Event-ID": "owned:0"}, timeout=5
    )
    assert_openai_error(resume, 404)


def test_two_keys_may_use_the_same_session_id(two_keys: Stack) -> None:
    private = two_keys
    url = private.gateway.url
    keys_headers = [{"Authorization": "Bearer key-a"}, {"Authorization": "Bearer key-b"}]
    bodies = [
        {"messages": HELLO, "max_tokens": 3, "session_id": "same", "temperature": 0.0},
        {"messages": HELLO, "max_tokens": 5, "session_id": "same", "temperature": 0.0},
    ]
    answers = [
        httpx.post(f"{url}/v1/chat/completions", json=body, headers=headers, timeout=60).json()
        for body, headers in zip(bodies, keys_headers, strict=True)
    ]
    # Each key started its own generation under the same id, and reads back only its own.
    assert [a["id"] for a in answers] == ["same", "same"]
    assert [a["usage"]["completion_tokens"] for a in answers] == [3, 5]
    for headers, answer in zip(keys_headers, answers, strict=True):
        session = httpx.get(f"{url}/v1/sessions/same", headers=headers, timeout=5).json()
        assert session["id"] == "same" and session["usage"] == answer["usage"]
        stream = httpx.get(f"{url}/v1/sessions/same/stream", headers=headers, timeout=10)
        assert stream.text.count('"id":"same"') >= 3


def test_full_queue_is_429_with_retry_after(make_stack: StackFactory) -> None:
    private = make_stack(MAX_QUEUE_DEPTH="1", WORKER_MAX_BATCH="1")
    url = private.gateway.url

    def long_stream(session_id: str) -> int:
        body = {"messages": HELLO, "max_tokens": 20000, "stream": True, "session_id": session_id}
        with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, timeout=60) as response:
            return sum(1 for _ in response.iter_lines())

    def status(session_id: str) -> str | None:
        value = private.redis.hget(f"qvl:session:{session_id}", "status")
        return None if value is None else str(value)

    with ThreadPoolExecutor(2) as pool:
        running = pool.submit(long_stream, "q-running")
        wait_until(lambda: status("q-running") == "running", 10, "the first job to run")
        waiting = pool.submit(long_stream, "q-waiting")
        wait_until(lambda: status("q-waiting") == "queued", 10, "the second job to queue")
        refused = httpx.post(f"{url}/v1/chat/completions", json={"messages": HELLO}, timeout=10)
        assert_openai_error(refused, 429)
        assert refused.headers["retry-after"] == "1"
        for session_id in ("q-waiting", "q-running"):
            httpx.post(f"{url}/v1/cancel/{session_id}", timeout=10)
        assert running.result(timeout=30) > 0 and waiting.result(timeout=30) > 0


@pytest.mark.parametrize("stream", [False, True])
def test_prompt_longer_than_the_context_is_400_with_token_counts(stack: Stack, stream: bool) -> None:
    too_long = [{"role": "user", "content": "Hello " * 33000}]
    response = httpx.post(
        f"{stack.gateway.url}/v1/chat/completions", timeout=60, json={"messages": too_long, "stream": stream}
    )
    error = assert_openai_error(response, 400)
    assert error["param"] == "messages"
    assert "32768" in str(error["message"]) and "330" in str(error["message"])
    # The worker refused it and goes on serving.
    ok = httpx.post(
        f"{stack.gateway.url}/v1/chat/completions",
        timeout=60,
        json={"messages": HELLO, "max_tokens": 2, "stream": stream},
    )
    assert ok.status_code == 200
