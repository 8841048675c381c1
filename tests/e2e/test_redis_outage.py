"""Redis restarted, paused or emptied under a running stream.

Each test runs its own redis-server with an append-only file (as compose runs it), so that
it can be stopped and started again without touching the other tests' server.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from shared import keys
from tests.conftest import Stack, _start_stack
from tests.processes import RedisServer, wait_until
from tests.sse import SSEvent, iter_events

HELLO = [{"role": "user", "content": "Hello"}]
# Greedy with a penalty: deterministic, and the output depends on the whole history.
BODY = {"messages": HELLO, "max_tokens": 120, "stream": True, "temperature": 0.0, "presence_penalty": 1.5}


@pytest.fixture
def outage_stack(tmp_path: Path, tiny_model: str) -> Iterator[Stack]:
    server = RedisServer(data_dir=tmp_path)
    stack = _start_stack(server, 0, workers=1, LEASE_GRACE_SECONDS="3")
    stack.redis_server = server  # type: ignore[attr-defined]
    yield stack
    stack.stop()
    stack.redis_server.stop()  # type: ignore[attr-defined]


def server_of(stack: Stack) -> RedisServer:
    return stack.redis_server  # type: ignore[attr-defined,no-any-return]


def resuming_stream(stack: Stack, session_id: str, on_event: Any = None) -> list[SSEvent]:
    """Read a stream to its end as a careful client does: resume after a broken connection."""
    events: list[SSEvent] = []
    url = f"{stack.gateway.url}/v1/chat/completions"
    body = {**BODY, "session_id": session_id}
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        headers = {"Last-Event-ID": events[-1].id or ""} if events else {}
        try:
            with httpx.stream("POST", url, json=body, headers=headers, timeout=30) as response:
                if response.status_code != 200:
                    time.sleep(0.5)
                    continue
                for event in iter_events(response):
                    events.append(event)
                    if on_event is not None:
                        on_event(len(events))
                    if event.is_done:
                        return events
        except httpx.HTTPError:
            time.sleep(0.5)
    raise TimeoutError(f"stream {session_id} did not end")


def assert_complete(events: list[SSEvent], expected: list[SSEvent]) -> None:
    data = [e for e in events if not e.is_done]
    assert [e.index for e in data] == list(range(len(data))), "an event is missing or repeated"
    for event in data:
        assert "error" not in event.json, event.json

    def deltas(stream: list[SSEvent]) -> list[Any]:
        return [e.json["choices"] for e in stream if not e.is_done and e.json.get("choices")]

    assert [[c["delta"] for c in d] for d in deltas(events)] == [
        [c["delta"] for c in d] for d in deltas(expected)
    ]


def serves_a_request(stack: Stack) -> None:
    response = httpx.post(
        f"{stack.gateway.url}/v1/chat/completions", json={"messages": HELLO, "max_tokens": 3}, timeout=60
    )
    assert response.status_code == 200, response.text


def test_a_redis_restart_loses_no_accepted_request(outage_stack: Stack) -> None:
    stack = outage_stack
    expected = resuming_stream(stack, "before-outage")
    seen_during: dict[str, Any] = {}

    def outage() -> None:
        server = server_of(stack)
        server.stop()
        time.sleep(1)
        health = httpx.get(f"{stack.gateway.url}/health", timeout=10)
        seen_during["health"] = (health.status_code, health.json())
        refused = httpx.post(
            f"{stack.gateway.url}/v1/chat/completions", json={"messages": HELLO, "max_tokens": 3}, timeout=30
        )
        seen_during["new request"] = (refused.status_code, refused.headers.get("retry-after"))
        time.sleep(12)
        stack.redis_server = server.restarted()  # type: ignore[attr-defined]

    faults: list[threading.Thread] = []

    def on_event(count: int) -> None:
        if count == 10:
            faults.append(threading.Thread(target=outage))
            faults[0].start()

    events = resuming_stream(stack, "through-outage", on_event)
    faults[0].join()
    assert_complete(events, expected)
    status, body = seen_during["health"]
    assert status == 503 and body["modelReady"] is False
    code, retry_after = seen_during["new request"]
    assert code == 503 and retry_after
    serves_a_request(stack)


def test_a_redis_pause_does_not_fail_healthy_sessions(outage_stack: Stack) -> None:
    stack = outage_stack
    expected = resuming_stream(stack, "before-pause")

    def on_event(count: int) -> None:
        if count == 10:
            stack.redis.client_pause(8000, all=True)

    events = resuming_stream(stack, "through-pause", on_event)
    assert_complete(events, expected)
    assert stack.redis.hget(keys.session_meta("through-pause"), "attempts") == "1"


def test_after_redis_lost_everything_nothing_is_left_without_a_ttl(outage_stack: Stack) -> None:
    stack = outage_stack
    url = f"{stack.gateway.url}/v1/chat/completions"
    body = {**BODY, "max_tokens": 20000, "session_id": "flushed"}
    events = []
    with httpx.stream("POST", url, json=body, timeout=30) as response:
        for event in iter_events(response):
            events.append(event)
            if len(events) == 10:
                stack.redis.flushall()
    # The client learns that the session is gone, and the worker stops writing it.
    assert events[-1].is_done
    assert events[-2].json["error"]["code"] == "session_expired"
    time.sleep(2)
    leaked = [key for key in stack.redis.keys("qvl:*") if stack.redis.ttl(key) == -1]
    assert leaked in ([], [keys.live_workers()])
    wait_until(
        lambda: "no longer this worker's" in stack.workers[0].log_path.read_text(), 10, "the worker to stop"
    )
    serves_a_request(stack)
