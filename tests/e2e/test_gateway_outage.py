"""Redis down: requests get 503 redis_unavailable, /health says so, open streams wait for it.

Each test runs its own redis-server (with its data on disk, so that it can come back with
the sessions it had) and a gateway on it; no worker is needed.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import redis

from tests.e2e.test_errors import assert_openai_error
from tests.live_sessions import append, event_data, open_session
from tests.processes import Gateway, RedisServer, stack_env
from tests.sse import SSEvent, iter_events


@dataclass
class OwnRedis:
    server: RedisServer
    data_dir: Path

    def writer(self) -> redis.Redis:
        return redis.Redis.from_url(self.server.url(), decode_responses=True)

    def restart(self) -> None:
        self.server = RedisServer(port=self.server.port, data_dir=self.data_dir)


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[OwnRedis]:
    own = OwnRedis(RedisServer(data_dir=tmp_path), tmp_path)
    yield own
    own.server.stop()


def start_gateway(own: OwnRedis, **overrides: str) -> Gateway:
    return Gateway(stack_env(own.server.url(), **overrides))


def next_data(events: Iterator[SSEvent]) -> SSEvent:
    event = next(events)
    assert not event.is_done
    return event


def test_a_stream_rides_out_an_outage_while_requests_get_503(own_redis: OwnRedis) -> None:
    gateway = start_gateway(own_redis, REDIS_OUTAGE_TOLERANCE_SECONDS="120")
    try:
        with own_redis.writer() as writer:
            open_session(writer, "outage")
            append(writer, "outage", 0, 2)
        with httpx.stream("GET", f"{gateway.url}/v1/sessions/outage/stream", timeout=120) as response:
            events = iter_events(response)
            assert [next_data(events).index for _ in range(2)] == [0, 1]
            own_redis.server.stop()

            refused = httpx.get(f"{gateway.url}/v1/sessions/outage", timeout=60)
            assert assert_openai_error(refused, 503)["code"] == "redis_unavailable"
            assert int(refused.headers["retry-after"]) > 0
            health = httpx.get(f"{gateway.url}/health", timeout=60)
            assert health.status_code == 503
            assert health.json()["redisReachable"] is False
            assert health.json()["modelReady"] is False

            own_redis.restart()
            with own_redis.writer() as writer:
                append(writer, "outage", 2, 3, end=True)
            rest = list(events)
        assert [event.index for event in rest[:-1]] == [2, 3, 4]
        assert [event.data for event in rest[:-1]] == [event_data("outage", i) for i in (2, 3, 4)]
        assert rest[-1].is_done
        health = httpx.get(f"{gateway.url}/health", timeout=60)
        assert health.status_code == 200
        assert health.json()["redisReachable"] is True
    finally:
        gateway.stop()


def test_a_stream_ends_with_an_error_event_when_the_outage_outlasts_its_tolerance(
    own_redis: OwnRedis,
) -> None:
    gateway = start_gateway(own_redis, REDIS_OUTAGE_TOLERANCE_SECONDS="1")
    try:
        with own_redis.writer() as writer:
            open_session(writer, "lost")
            append(writer, "lost", 0, 1)
        with httpx.stream("GET", f"{gateway.url}/v1/sessions/lost/stream", timeout=120) as response:
            events = iter_events(response)
            assert next_data(events).index == 0
            own_redis.server.stop()
            rest = list(events)
        assert len(rest) == 2
        assert json.loads(rest[0].data)["error"]["code"] == "redis_unavailable"
        assert rest[1].is_done
    finally:
        gateway.stop()
