"""GET /v1/sessions/{id} tells a queued session its place in the queue."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import httpx

from tests.conftest import StackFactory
from tests.processes import wait_until
from tests.sse import SSEvent, iter_events

HELLO = [{"role": "user", "content": "Hello"}]
LONG = 20000  # far more tokens than the test waits for: only a cancel ends it


def stream_events(url: str, session_id: str) -> list[SSEvent]:
    body = {"messages": HELLO, "max_tokens": LONG, "stream": True, "session_id": session_id}
    with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, timeout=60) as response:
        return list(iter_events(response))


def test_queued_sessions_show_their_place_in_the_queue(make_stack: StackFactory) -> None:
    # One job slot: while one request runs, the next ones wait in the queue.
    stack = make_stack(WORKER_MAX_BATCH="1")
    url = stack.gateway.url

    def session(session_id: str) -> dict[str, object]:
        body: dict[str, object] = httpx.get(f"{url}/v1/sessions/{session_id}", timeout=10).json()
        return body

    def status_is(session_id: str, status: str) -> bool:
        return stack.redis.hget(f"qvl:session:{session_id}", "status") == status

    with ThreadPoolExecutor(3) as pool:
        busy = pool.submit(stream_events, url, "position-busy")
        wait_until(lambda: status_is("position-busy", "running"), 15, "the first job to run")
        first = pool.submit(stream_events, url, "position-first")
        wait_until(lambda: status_is("position-first", "queued"), 10, "the second job to be queued")
        second = pool.submit(stream_events, url, "position-second")
        wait_until(lambda: status_is("position-second", "queued"), 10, "the third job to be queued")

        running = session("position-busy")
        assert running["status"] == "running" and running["queue_position"] is None
        queued = session("position-first")
        assert queued["status"] == "queued" and queued["queue_position"] == 0
        assert session("position-second")["queue_position"] == 1

        # The first queued one leaves the queue: the one behind it moves up.
        cancelled = httpx.post(f"{url}/v1/cancel/position-first", timeout=10).json()
        assert cancelled["status"] == "cancelled" and cancelled["queue_position"] is None
        assert session("position-second")["queue_position"] == 0

        for session_id in ("position-second", "position-busy"):
            httpx.post(f"{url}/v1/cancel/{session_id}", timeout=10)
        for stream in (busy, first, second):
            assert stream.result(timeout=30)[-1].is_done
