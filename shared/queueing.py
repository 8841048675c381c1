"""Putting a generation job on the RQ queue: the same call from the gateway and the worker.

The gateway enqueues a new request; a gateway's reaper or a worker that shuts down
enqueues a session again under a new job id. The job's arguments are the session's stored
job payload, so every attempt runs exactly the same request.
"""

from __future__ import annotations

import redis
from rq import Queue
from rq.serializers import JSONSerializer

from shared.jobs import JOB_FUNCTION
from shared.settings import Settings


def generation_queue(settings: Settings, connection: redis.Redis) -> Queue:
    return Queue(settings.queue_name, connection=connection, serializer=JSONSerializer)


def enqueue_generation(
    queue: Queue, settings: Settings, session_id: str, payload: dict[str, object], job_id: str, again: bool
) -> None:
    """Queue one attempt at a session; a session queued again goes to the front."""
    ttl = settings.sessions_ttl_seconds
    queue.enqueue(
        JOB_FUNCTION,
        payload,
        job_id=job_id,
        job_timeout=settings.job_timeout_seconds,
        result_ttl=ttl,
        failure_ttl=ttl,
        description=f"chat completion for session {session_id}",
        at_front=again,
    )
