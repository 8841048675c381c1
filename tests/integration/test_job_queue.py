"""The gateway's enqueue, which sends RQ's own commands from the event loop, against a real redis-server."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import pytest
import redis
from rq.job import Job
from rq.serializers import JSONSerializer

from api.job_queue import JobQueue
from shared import keys
from shared.jobs import JOB_FUNCTION, GenerationJob
from shared.queueing import QueueKind, enqueue_generation, generation_queues
from shared.redis_connection import async_client
from shared.settings import Settings
from tests.integration.conftest import make_job

TEXT_PAYLOAD = make_job("Hi").model_dump(mode="json")
MEDIA_PAYLOAD = GenerationJob.model_validate(
    {
        **TEXT_PAYLOAD,
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "image", "url": "http://example.com/a.png", "param": "messages[0].content[0]"}
                ],
            }
        ],
    }
).model_dump(mode="json")
# What RQ stamps with the time of the call: not expected to match.
PER_JOB_FIELDS = {"created_at", "enqueued_at", "last_heartbeat"}


@pytest.fixture
def settings(engine_settings: Settings) -> Settings:
    return engine_settings.model_copy(update={"sessions_ttl_seconds": 600, "job_timeout_seconds": 321})


def gateway_enqueue(settings: Settings, *calls: tuple[str, dict[str, Any], bool, list[str] | None]) -> None:
    async def run() -> None:
        client = async_client(settings)
        queue = JobQueue(settings, client)
        try:
            for job_id, payload, again, media in calls:
                await queue.enqueue("s", payload, job_id, again=again, inline_media=media)
        finally:
            queue.close()
            await client.aclose()

    asyncio.run(run())


def job_hash(db: redis.Redis, job_id: str) -> dict[str, bytes]:
    stored = cast(dict[bytes, bytes], db.hgetall(Job.key_for(job_id)))
    return {k.decode(): v for k, v in stored.items() if k.decode() not in PER_JOB_FIELDS}


def test_a_job_queued_by_the_gateway_is_the_job_rq_itself_would_queue(
    connection: redis.Redis, settings: Settings
) -> None:
    queues = generation_queues(settings, connection)
    enqueue_generation(queues, settings, "s", TEXT_PAYLOAD, "by-rq", again=False)
    gateway_enqueue(settings, ("by-gateway", TEXT_PAYLOAD, False, None))

    assert job_hash(connection, "by-gateway") == job_hash(connection, "by-rq")
    job = Job.fetch("by-gateway", connection=connection, serializer=JSONSerializer)
    assert (job.func_name, list(job.args), job.timeout, job.get_status()) == (
        JOB_FUNCTION,
        [TEXT_PAYLOAD],
        321,
        "queued",
    )
    text = queues[QueueKind.TEXT]
    assert text.job_ids == ["by-rq", "by-gateway"]
    assert connection.sismember(text.redis_queues_keys, text.key)


def test_a_session_queued_again_goes_first_and_media_go_to_their_own_queue_with_their_data(
    connection: redis.Redis, settings: Settings
) -> None:
    gateway_enqueue(
        settings,
        ("first", TEXT_PAYLOAD, False, None),
        ("again", TEXT_PAYLOAD, True, None),
        ("media", MEDIA_PAYLOAD, False, ["aGVsbG8=", "d29ybGQ="]),
    )
    queues = generation_queues(settings, connection)
    assert queues[QueueKind.TEXT].job_ids == ["again", "first"]
    assert queues[QueueKind.MEDIA].job_ids == ["media"]
    media_key = keys.session_media("s")
    assert connection.hgetall(media_key) == {b"0": b"aGVsbG8=", b"1": b"d29ybGQ="}
    assert 0 < connection.ttl(media_key) <= settings.session_keep_seconds
