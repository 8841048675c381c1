"""A worker that dies or shuts down mid-generation: its sessions continue on another worker.

The client's stream pauses and goes on: no error, no missing and no duplicated event, and
the text is exactly what a run without the fault produces (seeded sampling is a function
of the seed and the position, so the continuing worker draws what the dead one would have).
"""

from __future__ import annotations

import json
import signal
import threading
import time
from typing import Any

import httpx

from shared import keys
from shared.session_scripts import Create, SyncScripts
from tests.conftest import Stack, StackFactory
from tests.processes import Worker, wait_until
from tests.sse import SSEvent, iter_events

HELLO = [{"role": "user", "content": "Hello"}]


def stream_body(session_id: str, max_tokens: int = 160, **extra: Any) -> dict[str, Any]:
    return {
        "messages": HELLO,
        "max_tokens": max_tokens,
        "stream": True,
        "session_id": session_id,
        "temperature": 1.0,
        "seed": 1234,
        **extra,
    }


def running_worker(stack: Stack, session_id: str) -> Worker:
    """The worker process that runs the session (its name carries its pid)."""
    name = str(stack.redis.hget(keys.session_meta(session_id), "worker"))
    return next(w for w in stack.workers if f".{w.popen.pid}." in name)


def stream_with_fault(stack: Stack, body: dict[str, Any], fault_after: int, fault: Any) -> list[SSEvent]:
    events: list[SSEvent] = []
    with httpx.stream("POST", f"{stack.gateway.url}/v1/chat/completions", json=body, timeout=60) as response:
        assert response.status_code == 200
        for event in iter_events(response):
            events.append(event)
            if len(events) == fault_after:
                fault(running_worker(stack, body["session_id"]))
    return events


def contents(events: list[SSEvent]) -> list[Any]:
    """What a client reads from each event, without the session's own id."""
    seen: list[Any] = []
    for event in events:
        if event.is_done:
            seen.append("[DONE]")
            continue
        payload = event.json
        assert "error" not in payload, payload
        seen.append([(c["delta"], c["finish_reason"]) for c in payload["choices"]])
    return seen


def reference(stack: Stack, session_id: str) -> list[SSEvent]:
    """The same request with nothing going wrong."""
    return stream_with_fault(stack, stream_body(session_id), 0, lambda _: None)


def assert_seamless(events: list[SSEvent], expected: list[SSEvent]) -> None:
    indexes = [e.index for e in events if not e.is_done]
    assert indexes == list(range(len(indexes))), "an event is missing or repeated"
    assert contents(events) == contents(expected)


def test_a_killed_worker_costs_its_client_nothing(make_stack: StackFactory) -> None:
    private = make_stack(workers=2)
    events = stream_with_fault(private, stream_body("dies"), 10, Worker.kill)
    assert_seamless(events, reference(private, "reference"))
    meta = private.redis.hgetall(keys.session_meta("dies"))
    assert meta["status"] == "finished" and meta["attempts"] == "2"


def test_a_greedy_stream_survives_a_kill_too(make_stack: StackFactory) -> None:
    private = make_stack(workers=2)
    greedy: dict[str, Any] = {"temperature": 0.0, "presence_penalty": 1.5}  # penalties: the history counts
    events = stream_with_fault(private, stream_body("greedy-dies", **greedy), 10, Worker.kill)
    expected = stream_with_fault(private, stream_body("greedy-ref", **greedy), 0, lambda _: None)
    assert_seamless(events, expected)


def test_sigterm_hands_running_sessions_over(make_stack: StackFactory) -> None:
    private = make_stack(workers=2, WORKER_DRAIN_SECONDS="10")
    stopped: list[Worker] = []

    def terminate(worker: Worker) -> None:
        worker.popen.send_signal(signal.SIGTERM)
        stopped.append(worker)

    events = stream_with_fault(private, stream_body("drained"), 10, terminate)
    assert_seamless(events, reference(private, "drain-ref"))
    stopped[0].popen.wait(timeout=15)  # it exits within its grace
    # A clean hand-over does not count against the session's attempts.
    assert private.redis.hget(keys.session_meta("drained"), "attempts") == "1"
    assert "handed over" in stopped[0].log_path.read_text()


def test_after_the_last_attempt_the_session_ends_with_an_error(make_stack: StackFactory) -> None:
    private = make_stack(workers=2, MAX_JOB_ATTEMPTS="1")
    events = []
    body = stream_body("poison", max_tokens=20000)
    with httpx.stream(
        "POST", f"{private.gateway.url}/v1/chat/completions", json=body, timeout=30
    ) as response:
        for event in iter_events(response):
            events.append(event)
            if len(events) == 10:
                running_worker(private, "poison").kill()
    assert events[-1].is_done
    error = events[-2].json["error"]
    assert error["type"] == "server_error" and error["code"] == "worker_lost"
    assert "stopped 1 times" in error["message"]
    indexes = [e.index for e in events[:-1]]
    assert indexes == list(range(len(indexes)))
    # Resuming the failed session replays the same ending instead of hanging.
    with httpx.stream(
        "POST",
        f"{private.gateway.url}/v1/chat/completions",
        json=body,
        headers={"Last-Event-ID": events[3].id or ""},
        timeout=30,
    ) as response:
        resumed = list(iter_events(response))
    assert [e.data for e in resumed] == [e.data for e in events[4:]]


def test_a_new_worker_serves_after_a_death(make_stack: StackFactory) -> None:
    private = make_stack()
    private.workers[0].kill()
    wait_until(lambda: private.gateway.health()["workers"] == 0, 10, "the dead worker to drop out")
    refused = httpx.post(
        f"{private.gateway.url}/v1/chat/completions", timeout=10, json={"messages": HELLO, "max_tokens": 2}
    )
    assert refused.status_code == 503
    assert refused.json()["error"]["code"] == "no_worker"
    private.add_worker()
    served = httpx.post(
        f"{private.gateway.url}/v1/chat/completions", timeout=60, json={"messages": HELLO, "max_tokens": 2}
    )
    assert served.status_code == 200


def test_two_workers_share_the_load(make_stack: StackFactory) -> None:
    private = make_stack(workers=2, WORKER_MAX_BATCH="1")
    assert private.gateway.health()["workers"] == 2
    names = ["shared-a", "shared-b"]
    body = {"messages": HELLO, "max_tokens": 20000, "stream": True}
    with httpx.Client(timeout=30) as http:
        streams = [
            http.send(
                http.build_request(
                    "POST", f"{private.gateway.url}/v1/chat/completions", json={**body, "session_id": name}
                ),
                stream=True,
            )
            for name in names
        ]

        def both_running() -> bool:
            return all(private.redis.hget(f"qvl:session:{n}", "status") == "running" for n in names)

        wait_until(both_running, 15, "both jobs to run")
        # One job slot each: the two jobs can only run at once on two different workers.
        workers = {private.redis.hget(f"qvl:session:{n}", "worker") for n in names}
        assert len(workers) == 2
        for name in names:
            http.post(f"{private.gateway.url}/v1/cancel/{name}")
        for stream in streams:
            stream.close()


def test_a_queued_session_whose_job_was_lost_is_queued_again(stack: Stack) -> None:
    # As if the gateway had died between creating the session and enqueueing its job (or
    # a worker had taken the job and died before starting it): the session is queued, its
    # job is nowhere. The reaper queues it again from the stored request.
    payload = {
        "session_id": "lost-job",
        "model": "m",
        "created": int(time.time()),
        "messages": [{"role": "user", "content": [{"type": "text", "text": "Hello"}]}],
        "sampling": {"max_new_tokens": 5, "temperature": 0.0},
    }
    create = Create(
        "lost-job",
        now=int(time.time()),
        request_id="no-such-job",
        owner="",
        model="m",
        keep_seconds=600,
        job_payload=json.dumps(payload),
    )
    SyncScripts(stack.redis).run(create)
    body = {"messages": HELLO, "stream": True, "session_id": "lost-job"}
    with httpx.stream("POST", f"{stack.gateway.url}/v1/chat/completions", json=body, timeout=60) as response:
        events = list(iter_events(response))
    assert events[-1].is_done
    assert "error" not in events[-2].json
    assert stack.redis.hget(keys.session_meta("lost-job"), "status") == "finished"


def test_a_job_stuck_between_queue_and_start_is_recovered(make_stack: StackFactory) -> None:
    # A worker took the job (RQ moved it to its intermediate list) and died before starting
    # it. Staged by hand: the only job slot is busy, the queued job is moved as RQ would.
    private = make_stack(WORKER_MAX_BATCH="1")
    gateway = private.gateway.url
    with httpx.Client(timeout=90) as http:
        busy = http.send(
            http.build_request(
                "POST", f"{gateway}/v1/chat/completions", json=stream_body("busy", max_tokens=20000)
            ),
            stream=True,
        )
        wait_until(lambda: private.redis.hget(keys.session_meta("busy"), "status") == "running", 30, "busy")
        result: dict[str, Any] = {}
        body = {"messages": HELLO, "max_tokens": 5, "session_id": "stuck", "temperature": 0.0}
        asking = threading.Thread(
            target=lambda: result.update(response=http.post(f"{gateway}/v1/chat/completions", json=body))
        )
        asking.start()
        wait_until(lambda: private.redis.llen("rq:queue:generation") == 1, 10, "the job to be queued")
        private.redis.lmove("rq:queue:generation", "rq:queue:generation:intermediate", "RIGHT", "LEFT")
        http.post(f"{gateway}/v1/cancel/busy")
        busy.close()
        asking.join(60)
    assert result["response"].status_code == 200
    assert private.redis.hget(keys.session_meta("stuck"), "attempts") == "2"
