"""The job slot's changes to RQ's worker, against a real redis-server."""

from __future__ import annotations

import pytest
import redis
from rq.serializers import JSONSerializer

from tests.processes import RedisServer
from worker.rq_worker import JobSlot


def slot(connection: redis.Redis) -> JobSlot:
    return JobSlot(["generation"], connection=connection, name="vm.1.abc.text.0", serializer=JSONSerializer)


def test_heartbeat_stamps_the_worker_and_renews_its_ttl(connection: redis.Redis) -> None:
    job_slot = slot(connection)
    job_slot.heartbeat(90)
    first = connection.hget(job_slot.key, "last_heartbeat")
    assert first is not None
    assert 85 <= int(connection.ttl(job_slot.key)) <= 90
    job_slot.heartbeat(30)
    assert connection.hget(job_slot.key, "last_heartbeat") != first
    assert 25 <= int(connection.ttl(job_slot.key)) <= 30


def test_heartbeat_inside_rqs_own_pipeline_is_left_to_it(connection: redis.Redis) -> None:
    job_slot = slot(connection)
    with connection.pipeline() as pipeline:
        job_slot.heartbeat(60, pipeline=pipeline)
        assert connection.exists(job_slot.key) == 0  # queued, not sent
        pipeline.execute()
    assert 55 <= int(connection.ttl(job_slot.key)) <= 60


def test_heartbeat_through_a_stopped_redis_raises_what_the_slot_recovers_from() -> None:
    server = RedisServer()
    client = redis.Redis.from_url(server.url(), socket_connect_timeout=1)
    try:
        job_slot = slot(client)
        job_slot.heartbeat(60)
        server.stop()
        # The slot's serve loop restarts RQ's work loop after any error of it.
        with pytest.raises(redis.ConnectionError):
            job_slot.heartbeat(60)
    finally:
        client.close()
        server.stop()
