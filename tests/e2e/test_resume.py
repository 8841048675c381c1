"""Resuming a stream: Last-Event-ID header or query, GET stream, other gateways, followers."""

from __future__ import annotations

import threading

import httpx
import pytest

from tests.conftest import Stack
from tests.sse import SSEvent, iter_events

HELLO = [{"role": "user", "content": "Hello"}]


def stream_post(
    url: str,
    body: dict[str, object],
    headers: dict[str, str] | None = None,
    params: dict[str, str] | None = None,
) -> list[SSEvent]:
    with httpx.stream(
        "POST", f"{url}/v1/chat/completions", json=body, headers=headers, params=params, timeout=60
    ) as response:
        assert response.status_code == 200, response.read()
        return list(iter_events(response))


def full_session(stack: Stack, session_id: str, max_tokens: int = 30) -> list[SSEvent]:
    body = {"messages": HELLO, "max_tokens": max_tokens, "stream": True, "session_id": session_id}
    return stream_post(stack.gateway.url, body)


@pytest.mark.parametrize("via", ["header", "query"])
def test_resume_after_several_points_replays_exactly_the_rest(stack: Stack, via: str) -> None:
    session_id = f"resume-{via}"
    events = full_session(stack, session_id)
    chunks = events[:-1]
    body = {"messages": HELLO, "stream": True, "session_id": session_id}
    for after in (0, 1, len(chunks) // 2, len(chunks) - 2, len(chunks) - 1):
        last_event_id = f"{session_id}:{after}"
        if via == "header":
            resumed = stream_post(stack.gateway.url, body, headers={"Last-Event-ID": last_event_id})
        else:
            resumed = stream_post(stack.gateway.url, body, params={"last_event_id": last_event_id})
        assert [e.id for e in resumed[:-1]] == [e.id for e in chunks[after + 1 :]]
        assert [e.data for e in resumed[:-1]] == [e.data for e in chunks[after + 1 :]]
        assert resumed[-1].is_done


def test_resume_without_session_id_in_body_uses_the_event_id(stack: Stack) -> None:
    events = full_session(stack, "resume-no-body-id")
    resumed = stream_post(
        stack.gateway.url,
        {"messages": HELLO, "stream": True},
        headers={"Last-Event-ID": "resume-no-body-id:2"},
    )
    assert [e.data for e in resumed] == [e.data for e in events[3:]]


def test_get_stream_endpoint_resumes_like_eventsource(stack: Stack) -> None:
    events = full_session(stack, "resume-get")
    url = f"{stack.gateway.url}/v1/sessions/resume-get/stream"
    with httpx.stream("GET", url, headers={"Last-Event-ID": "resume-get:3"}, timeout=30) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        resumed = list(iter_events(response))
    assert [e.data for e in resumed] == [e.data for e in events[4:]]
    with httpx.stream("GET", url, timeout=30) as response:
        assert [e.data for e in iter_events(response)] == [e.data for e in events]


def test_resume_mid_generation_has_no_gap_and_no_duplicate(stack: Stack) -> None:
    session_id = "resume-live"
    body = {"messages": HELLO, "max_tokens": 300, "stream": True, "session_id": session_id}
    seen: list[SSEvent] = []
    with httpx.stream("POST", f"{stack.gateway.url}/v1/chat/completions", json=body, timeout=60) as response:
        for event in iter_events(response):
            seen.append(event)
            if len(seen) == 20:
                break  # the client drops the connection mid-stream
    resumed = stream_post(stack.gateway.url, {**body}, headers={"Last-Event-ID": seen[-1].id or ""})
    combined = seen + resumed
    indexes = [e.index for e in combined[:-1]]
    assert indexes == list(range(len(indexes)))
    assert combined[-2].json["choices"][0]["finish_reason"] in ("length", "stop")
    assert stack.redis.xlen(f"qvl:session:{session_id}:events") == len(indexes)


def test_two_followers_see_the_same_events(stack: Stack) -> None:
    session_id = "two-followers"
    body = {"messages": HELLO, "max_tokens": 400, "stream": True, "session_id": session_id}
    results: dict[str, list[SSEvent]] = {}

    def follow(name: str) -> None:
        results[name] = stream_post(stack.gateway.url, body)

    threads = [threading.Thread(target=follow, args=(name,)) for name in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert [e.data for e in results["a"]] == [e.data for e in results["b"]]
    assert results["a"][-1].is_done
    assert stack.redis.xlen(f"qvl:session:{session_id}:events") == len(results["a"]) - 1


def test_resume_on_another_gateway_after_the_first_dies(stack: Stack) -> None:
    first, second = stack.add_gateway(), stack.add_gateway()
    session_id = "gateway-dies"
    body = {"messages": HELLO, "max_tokens": 400, "stream": True, "session_id": session_id}
    seen: list[SSEvent] = []
    with httpx.stream("POST", f"{first.url}/v1/chat/completions", json=body, timeout=60) as response:
        for event in iter_events(response):
            seen.append(event)
            if len(seen) == 30:
                first.kill()
                break
    assert not first.alive
    resumed = stream_post(second.url, body, headers={"Last-Event-ID": seen[-1].id or ""})
    indexes = [e.index for e in (seen + resumed)[:-1]]
    assert indexes == list(range(len(indexes)))
    assert resumed[-1].is_done
    assert resumed[-2].json["choices"][0]["finish_reason"] in ("length", "stop")


def test_unknown_session_is_404(stack: Stack) -> None:
    for method, path in [
        ("GET", "/v1/sessions/nope"),
        ("GET", "/v1/sessions/nope/stream"),
        ("POST", "/v1/cancel/nope"),
    ]:
        response = httpx.request(method, f"{stack.gateway.url}{path}", timeout=10)
        assert response.status_code == 404
        assert response.json()["error"]["type"] == "not_found_error"
    resumed = httpx.post(
        f"{stack.gateway.url}/v1/chat/completions",
        timeout=10,
        json={"messages": HELLO, "stream": True},
        headers={"Last-Event-ID": "never-existed:3"},
    )
    assert resumed.status_code == 404


def test_last_event_id_for_another_session_is_400(stack: Stack) -> None:
    response = httpx.post(
        f"{stack.gateway.url}/v1/chat/completions",
        timeout=10,
        json={"messages": HELLO, "stream": True, "session_id": "mine"},
        headers={"Last-Event-ID": "theirs:3"},
    )
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "Last-Event-ID"
