"""Stream admission: past a gateway's or a key's limit a new stream is refused, the open ones go on.

No worker runs here: the sessions are written straight into Redis, and the streams follow
them through ``GET /v1/sessions/{id}/stream``.
"""

from __future__ import annotations

import asyncio
import contextlib

import httpx

from api.auth import owner_of
from shared import keys
from tests.conftest import Stack, StackFactory
from tests.e2e.test_errors import assert_openai_error
from tests.live_sessions import append, append_to_all, event_data, open_session
from tests.processes import wait_until
from tests.sse import iter_events


def stream_url(stack: Stack, session_id: str) -> str:
    return f"{stack.gateway.url}/v1/sessions/{session_id}/stream"


def assert_gets_exactly(response: httpx.Response, session_id: str, count: int) -> None:
    events = list(iter_events(response))
    assert [event.data for event in events[:-1]] == [event_data(session_id, i) for i in range(count)]
    assert [event.index for event in events[:-1]] == list(range(count))
    assert events[-1].is_done


def test_a_stream_past_the_gateway_limit_gets_503_and_the_open_ones_go_on(make_stack: StackFactory) -> None:
    private = make_stack(workers=0, MAX_STREAMS_PER_GATEWAY="3")
    writer = private.redis
    for n in range(4):
        open_session(writer, f"full-{n}", status="queued")
    with httpx.Client(timeout=30) as http, contextlib.ExitStack() as streams:
        opened = [
            streams.enter_context(http.stream("GET", stream_url(private, f"full-{n}"))) for n in range(3)
        ]
        assert [response.status_code for response in opened] == [200, 200, 200]
        refused = http.get(stream_url(private, "full-3"))
        error = assert_openai_error(refused, 503)
        assert error["code"] == "too_many_streams"
        assert int(refused.headers["retry-after"]) > 0
        for n in range(3):
            append(writer, f"full-{n}", 0, 3, end=True)
        for n, response in enumerate(opened):
            assert_gets_exactly(response, f"full-{n}", 3)
    # Each stream gave its place back when it ended.
    wait_until(lambda: private.gateway.health()["streams"] == 0, 10, "the streams to be released")
    append(writer, "full-3", 0, 2, end=True)
    with httpx.stream("GET", stream_url(private, "full-3"), timeout=30) as admitted:
        assert admitted.status_code == 200
        assert_gets_exactly(admitted, "full-3", 2)


def test_a_key_past_its_own_limit_gets_429_while_other_keys_go_on(make_stack: StackFactory) -> None:
    private = make_stack(workers=0, API_KEYS="key-a,key-b", MAX_STREAMS_PER_KEY="2")
    writer = private.redis
    for n in range(3):
        open_session(writer, f"a-{n}", owner=owner_of("key-a"), status="queued")
    open_session(writer, "b-0", owner=owner_of("key-b"), status="queued")
    as_a = {"Authorization": "Bearer key-a"}
    as_b = {"Authorization": "Bearer key-b"}
    with httpx.Client(timeout=30) as http, contextlib.ExitStack() as streams:
        for n in range(2):
            response = streams.enter_context(http.stream("GET", stream_url(private, f"a-{n}"), headers=as_a))
            assert response.status_code == 200
        refused = http.get(stream_url(private, "a-2"), headers=as_a)
        error = assert_openai_error(refused, 429)
        assert error["type"] == "rate_limit_error"
        assert error["code"] == "too_many_streams_for_key"
        assert int(refused.headers["retry-after"]) > 0
        other = streams.enter_context(http.stream("GET", stream_url(private, "b-0"), headers=as_b))
        assert other.status_code == 200
        append(writer, keys.owned_session(owner_of("key-b"), "b-0"), 0, 2, end=True)
        assert_gets_exactly(other, "b-0", 2)


def test_a_refused_completion_gives_its_stream_place_back(make_stack: StackFactory) -> None:
    private = make_stack(workers=0, MAX_STREAMS_PER_GATEWAY="1")
    body = {"messages": [{"role": "user", "content": "Hello"}], "stream": True}
    for _ in range(2):
        # No worker: refused with 503 no_worker, after it was admitted as a stream.
        refused = httpx.post(f"{private.gateway.url}/v1/chat/completions", json=body, timeout=30)
        assert assert_openai_error(refused, 503)["code"] == "no_worker"
    open_session(private.redis, "after-refusals")
    append(private.redis, "after-refusals", 0, 1, end=True)
    with httpx.stream("GET", stream_url(private, "after-refusals"), timeout=30) as admitted:
        assert admitted.status_code == 200
        assert_gets_exactly(admitted, "after-refusals", 1)


def test_many_streams_through_one_gateway_on_a_few_redis_connections(make_stack: StackFactory) -> None:
    pool = 10
    private = make_stack(workers=0, GATEWAY_REDIS_CONNECTIONS=str(pool))
    writer = private.redis
    sessions = [f"many-{n}" for n in range(60)]
    followed = sessions * 2  # two clients per session
    events_per_session = 12
    for session_id in sessions:
        open_session(writer, session_id)

    async def read_one(http: httpx.AsyncClient, session_id: str) -> list[str]:
        async with http.stream("GET", stream_url(private, session_id)) as response:
            assert response.status_code == 200
            return [line async for line in response.aiter_lines() if line.startswith("data: ")]

    async def scenario() -> list[list[str]]:
        limits = httpx.Limits(max_connections=len(followed) + 5)
        async with httpx.AsyncClient(timeout=60, limits=limits) as http:
            tasks = [asyncio.create_task(read_one(http, sid)) for sid in followed]
            await asyncio.to_thread(
                wait_until, lambda: private.gateway.health()["streams"] == len(followed), 30, "every stream"
            )
            await asyncio.sleep(0.5)  # the followers are past their (empty) replay
            # The gateway waits on every stream with a few shared connections, not one each.
            clients = writer.client_list()
            assert sum(1 for client in clients if int(client["db"]) == writer_db(private)) <= pool + 5
            for start in range(0, events_per_session, 4):
                last_round = start + 4 == events_per_session
                await asyncio.to_thread(append_to_all, writer, sessions, start, 4, last_round)
            return await asyncio.gather(*tasks)

    results = asyncio.run(scenario())
    for session_id, lines in zip(followed, results, strict=True):
        expected = [f"data: {event_data(session_id, i)}" for i in range(events_per_session)]
        assert lines == [*expected, "data: [DONE]"]


def writer_db(stack: Stack) -> int:
    return int(stack.redis_url.rpartition("/")[2])
