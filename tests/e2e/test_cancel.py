"""Cancel while running, cancel while queued, auto-cancel after the clients left."""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
from rq.job import Job, JobStatus
from rq.registry import StartedJobRegistry
from rq.serializers import JSONSerializer

from tests.conftest import Stack, StackFactory
from tests.processes import wait_until
from tests.sse import SSEvent, iter_events

HELLO = [{"role": "user", "content": "Hello"}]
LONG = 20000  # far more tokens than a test waits for: only a cancel ends it early


def start_stream(url: str, session_id: str, max_tokens: int = LONG) -> httpx.Response:
    body = {"messages": HELLO, "max_tokens": max_tokens, "stream": True, "session_id": session_id}
    client = httpx.Client(timeout=60)
    request = client.build_request("POST", f"{url}/v1/chat/completions", json=body)
    return client.send(request, stream=True)


def stream_events(url: str, session_id: str) -> list[SSEvent]:
    body = {"messages": HELLO, "max_tokens": LONG, "stream": True, "session_id": session_id}
    with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, timeout=60) as response:
        return list(iter_events(response))


def rq_status(stack: Stack, session_id: str) -> JobStatus:
    job_id = stack.redis.hget(f"qvl:session:{session_id}", "job_id")
    job = Job.fetch(str(job_id), connection=stack.rq_redis, serializer=JSONSerializer)
    status = job.get_status()
    assert status is not None
    return status


def test_cancel_while_running_stops_generation(stack: Stack) -> None:
    response = start_stream(stack.gateway.url, "cancel-running")
    events: list[SSEvent] = []
    cancelled_at = None
    for event in iter_events(response):
        events.append(event)
        if len(events) == 10:
            reply = httpx.post(f"{stack.gateway.url}/v1/cancel/cancel-running", timeout=10)
            assert reply.status_code == 200
            assert reply.json()["cancel_requested"] is True
            cancelled_at = time.monotonic()
    response.close()

    assert cancelled_at is not None and time.monotonic() - cancelled_at < 5
    assert events[-1].is_done
    assert events[-2].json["choices"][0]["finish_reason"] == "cancelled"
    session = httpx.get(f"{stack.gateway.url}/v1/sessions/cancel-running", timeout=5).json()
    assert session["status"] == "cancelled" and session["finish_reason"] == "cancelled"
    assert session["usage"]["completion_tokens"] < LONG
    # Cancelling again is harmless and says nothing new was requested.
    again = httpx.post(f"{stack.gateway.url}/v1/cancel/cancel-running", timeout=10).json()
    assert again["status"] == "cancelled" and again["cancel_requested"] is False


def test_cancelled_queued_job_never_runs(make_stack: StackFactory) -> None:
    # One job slot: the second job has to wait in the queue.
    stack = make_stack(WORKER_MAX_BATCH="1")
    busy = start_stream(stack.gateway.url, "keeps-worker-busy")
    busy_stream = iter_events(busy)
    first = next(busy_stream)  # the worker holds this one
    assert first.index == 0
    wait_until(
        lambda: stack.redis.hget("qvl:session:keeps-worker-busy", "status") == "running",
        10,
        "the first job to run",
    )

    # A streaming request waits for a worker to accept it before its response starts.
    with ThreadPoolExecutor(1) as pool:
        waiting = pool.submit(stream_events, stack.gateway.url, "cancel-queued")
        wait_until(
            lambda: stack.redis.hget("qvl:session:cancel-queued", "status") == "queued",
            10,
            "the second job to be queued",
        )
        reply = httpx.post(f"{stack.gateway.url}/v1/cancel/cancel-queued", timeout=10)
        assert reply.json()["status"] == "cancelled"
        queued_events = waiting.result(timeout=30)

    assert [e.index for e in queued_events[:-1]] == [0, 1]
    assert queued_events[1].json["choices"][0]["finish_reason"] == "cancelled"
    assert queued_events[-1].is_done
    assert rq_status(stack, "cancel-queued") == JobStatus.CANCELED

    httpx.post(f"{stack.gateway.url}/v1/cancel/keeps-worker-busy", timeout=10)
    busy_events = list(busy_stream)
    busy.close()
    assert busy_events[-2].json["choices"][0]["finish_reason"] == "cancelled"
    # The worker moved on without running the cancelled job: no event was ever added.
    time.sleep(0.5)
    assert stack.redis.xlen("qvl:session:cancel-queued:events") == 2
    assert stack.redis.hget("qvl:session:cancel-queued", "worker") is None


def test_auto_cancel_after_the_last_client_leaves(make_stack: StackFactory) -> None:
    private = make_stack(CANCEL_AFTER_DISCONNECT_SECONDS="2")
    response = start_stream(private.gateway.url, "auto-cancel")
    events = []
    for event in iter_events(response):
        events.append(event)
        if len(events) == 5:
            break
    response.close()  # the only client leaves

    def cancelled() -> bool:
        return private.redis.hget("qvl:session:auto-cancel", "status") == "cancelled"

    wait_until(cancelled, 15, "auto-cancel")
    session = httpx.get(f"{private.gateway.url}/v1/sessions/auto-cancel", timeout=5).json()
    assert session["finish_reason"] == "cancelled"
    assert session["usage"]["completion_tokens"] < LONG


def test_attached_client_keeps_session_alive(make_stack: StackFactory) -> None:
    private = make_stack(CANCEL_AFTER_DISCONNECT_SECONDS="1")
    body = {"messages": HELLO, "max_tokens": 300, "stream": True, "session_id": "stays"}
    with httpx.stream(
        "POST", f"{private.gateway.url}/v1/chat/completions", json=body, timeout=60
    ) as response:
        events = list(iter_events(response))
    assert events[-2].json["choices"][0]["finish_reason"] in ("length", "stop")


def test_one_worker_runs_jobs_together_and_a_cancel_stops_only_its_own(stack: Stack) -> None:
    names = [f"together-{i}" for i in range(4)]
    responses = [start_stream(stack.gateway.url, name) for name in names]
    streams = [iter_events(response) for response in responses]
    for stream in streams:
        next(stream)  # each has been accepted by the worker

    def running() -> list[str]:
        return [n for n in names if stack.redis.hget(f"qvl:session:{n}", "status") == "running"]

    wait_until(lambda: len(running()) == 4, 10, "all four jobs to run at once")
    started = StartedJobRegistry("generation", connection=stack.rq_redis, serializer=JSONSerializer)
    assert len(started.get_job_ids()) == 4

    httpx.post(f"{stack.gateway.url}/v1/cancel/{names[0]}", timeout=10)
    first = list(streams[0])
    assert first[-2].json["choices"][0]["finish_reason"] == "cancelled"
    before = [stack.redis.xlen(f"qvl:session:{n}:events") for n in names[1:]]
    time.sleep(0.5)
    after = [stack.redis.xlen(f"qvl:session:{n}:events") for n in names[1:]]
    assert all(a > b for a, b in zip(after, before, strict=True)), "the others kept generating"
    for name in names[1:]:
        httpx.post(f"{stack.gateway.url}/v1/cancel/{name}", timeout=10)
    for stream, response in zip(streams[1:], responses[1:], strict=True):
        assert list(stream)[-1].is_done
        response.close()
    responses[0].close()


def test_a_queued_stream_starts_with_its_session_id_and_can_be_cancelled(make_stack: StackFactory) -> None:
    # One job slot, taken: the next request waits in the queue. Its client gets the
    # response headers (with the session id it needs to cancel) and keep-alive comments.
    private = make_stack(WORKER_MAX_BATCH="1", VERDICT_WAIT_SECONDS="0.5", SSE_PING_SECONDS="1")
    url = private.gateway.url
    long = {"messages": HELLO, "max_tokens": 20000, "stream": True}
    with httpx.Client(timeout=30) as http:
        busy = http.send(
            http.build_request("POST", f"{url}/v1/chat/completions", json={**long, "session_id": "busy"}),
            stream=True,
        )
        wait_until(lambda: private.redis.hget("qvl:session:busy", "status") == "running", 30, "the busy job")
        with_usage = {**long, "stream_options": {"include_usage": True}}
        with http.stream("POST", f"{url}/v1/chat/completions", json=with_usage) as waiting:
            assert waiting.status_code == 200
            session_id = waiting.headers["x-session-id"]
            assert private.redis.hget(f"qvl:session:{session_id}", "status") == "queued"
            lines = waiting.iter_lines()
            assert next(line for line in lines if line).startswith(":")  # a keep-alive comment
            http.post(f"{url}/v1/cancel/{session_id}")
            rest = [line for line in lines if line.startswith("data:")]
        assert '"finish_reason":"cancelled"' in rest[-3] and rest[-1] == "data: [DONE]"
        # It asked for usage: the last chunk carries it, as a cancelled running stream's does.
        assert json.loads(rest[-2].removeprefix("data: "))["usage"]["completion_tokens"] == 0
        http.post(f"{url}/v1/cancel/busy")
        busy.close()
