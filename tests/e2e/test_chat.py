"""A text prompt through the official openai client: gateway, RQ, worker, stream, relay."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import openai
from openai.types.chat import ChatCompletionMessageParam
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer

from tests.conftest import Stack, StackFactory
from tests.sse import iter_events, text_of

HELLO: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Hello"}]


def test_non_streaming_completion_has_openai_shape(client: openai.OpenAI, stack: Stack) -> None:
    completion = client.chat.completions.create(model="anything", messages=HELLO, max_tokens=8)

    assert completion.object == "chat.completion"
    assert completion.model == stack.env["MODEL_REPO_ID"]
    assert completion.id.startswith("chatcmpl-")
    choice = completion.choices[0]
    assert choice.message.role == "assistant"
    assert choice.finish_reason in ("length", "stop")
    assert completion.usage is not None
    assert completion.usage.prompt_tokens > 0
    assert 0 < completion.usage.completion_tokens <= 8
    assert completion.usage.total_tokens == (
        completion.usage.prompt_tokens + completion.usage.completion_tokens
    )
    # The template opens <think>, so what the tiny model writes is reasoning.
    reasoning = (completion.choices[0].message.model_extra or {}).get("reasoning_content")
    assert reasoning or choice.message.content


def test_streaming_completion_with_openai_client(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model="m",
        messages=HELLO,
        max_tokens=6,
        stream=True,
    )
    chunks = list(stream)

    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-1].choices[0].finish_reason in ("length", "stop")
    assert all(chunk.id == chunks[0].id for chunk in chunks)
    assert all(chunk.object == "chat.completion.chunk" for chunk in chunks)
    assert all(chunk.choices[0].finish_reason is None for chunk in chunks[:-1])


def test_stream_ids_count_from_zero_and_end_with_done(stack: Stack) -> None:
    body = {"messages": HELLO, "max_tokens": 12, "stream": True, "session_id": "ids-from-zero"}
    with httpx.stream("POST", f"{stack.gateway.url}/v1/chat/completions", json=body, timeout=60) as response:
        assert response.status_code == 200
        assert response.headers["x-session-id"] == "ids-from-zero"
        events = list(iter_events(response))

    assert events[-1].is_done and events[-1].id is None
    chunks = events[:-1]
    assert [event.id for event in chunks] == [f"ids-from-zero:{i}" for i in range(len(chunks))]
    assert chunks[0].json["choices"][0]["delta"]["role"] == "assistant"
    assert chunks[-1].json["choices"][0]["finish_reason"] == "length"
    assert all(event.json["id"] == "ids-from-zero" for event in chunks)


def test_generated_session_id_is_returned_in_header_and_chunk_ids(stack: Stack) -> None:
    body = {"messages": HELLO, "max_tokens": 3, "stream": True}
    with httpx.stream("POST", f"{stack.gateway.url}/v1/chat/completions", json=body, timeout=60) as response:
        session_id = response.headers["x-session-id"]
        events = list(iter_events(response))
    assert len(session_id) > 20
    assert all(event.id.startswith(f"{session_id}:") for event in events[:-1] if event.id)


def test_usage_chunk_when_requested(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model="m",
        messages=HELLO,
        max_tokens=5,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 5
    assert chunks[-2].choices[0].finish_reason == "length"


def test_job_is_visible_in_rq_and_session_reports_finished(stack: Stack) -> None:
    response = httpx.post(
        f"{stack.gateway.url}/v1/chat/completions",
        json={"messages": HELLO, "max_tokens": 4, "session_id": "rq-visible"},
        timeout=60,
    )
    assert response.status_code == 200
    session = httpx.get(f"{stack.gateway.url}/v1/sessions/rq-visible", timeout=5).json()
    assert session["status"] == "finished"
    assert session["finish_reason"] == "length"
    assert session["usage"]["completion_tokens"] == 4
    # role, 4 deltas at most (held-back bytes may merge), finish
    assert 3 <= session["events"] <= 6
    job_id = stack.redis.hget("qvl:session:rq-visible", "job_id")
    job = Job.fetch(str(job_id), connection=stack.rq_redis, serializer=JSONSerializer)
    assert job.get_status() == JobStatus.FINISHED


def test_same_session_id_attaches_instead_of_generating_again(stack: Stack) -> None:
    url = f"{stack.gateway.url}/v1/chat/completions"
    body = {"messages": HELLO, "max_tokens": 10, "session_id": "attach-twice", "stream": True}
    with httpx.stream("POST", url, json=body, timeout=60) as first:
        first_events = list(iter_events(first))
    # Different messages, same session: the existing generation is replayed, not a new one.
    other = {**body, "messages": [{"role": "user", "content": "Something else entirely"}]}
    with httpx.stream("POST", url, json=other, timeout=60) as second:
        second_events = list(iter_events(second))

    assert [e.data for e in first_events] == [e.data for e in second_events]
    assert stack.redis.xlen("qvl:session:attach-twice:events") == len(first_events) - 1


def test_health_and_models(stack: Stack, client: openai.OpenAI) -> None:
    health = stack.gateway.health()
    assert health["ok"] is True and health["modelReady"] is True
    assert health["modelId"] == stack.env["MODEL_REPO_ID"] and health["error"] is None
    assert health["workers"] == 1 and health["queueDepth"] == 0
    models = client.models.list()
    assert [model.id for model in models.data] == [stack.env["MODEL_REPO_ID"]]


def test_text_of_reads_reasoning_and_content() -> None:
    from tests.sse import SSEvent

    events = [
        SSEvent("s:1", '{"choices":[{"delta":{"reasoning_content":"a"}}]}'),
        SSEvent("s:2", '{"choices":[{"delta":{"content":"b"}}]}'),
        SSEvent(None, "[DONE]"),
    ]
    assert text_of(events) == "ab"


def test_a_wide_worker_serves_many_streams_at_once(make_stack: StackFactory) -> None:
    # More job slots than redis-py's default pool of 100 connections: each slot holds one
    # in its blocking dequeue, and the heartbeat and the engine need theirs too.
    private = make_stack(WORKER_MAX_BATCH="120")
    body = {"messages": HELLO, "max_tokens": 8}

    def complete(index: int) -> str | None:
        reply = httpx.post(f"{private.gateway.url}/v1/chat/completions", json=body, timeout=60)
        assert reply.status_code == 200, reply.text
        return str(reply.json()["choices"][0]["finish_reason"])

    with ThreadPoolExecutor(24) as pool:
        reasons = list(pool.map(complete, range(24)))
    assert set(reasons) <= {"length", "stop"}
    time.sleep(2 * float(private.env["WORKER_LEASE_SECONDS"]))
    assert private.gateway.health()["workers"] == 1  # its heartbeat never failed
