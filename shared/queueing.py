"""Putting a generation job on the RQ queue: the same call from the gateway and the worker.

The gateway enqueues a new request; a gateway's reaper or a worker that shuts down
enqueues a session again under a new job id. The job's arguments are the session's stored
job payload, so every attempt runs exactly the same request.

Requests with images or videos go to a queue of their own, consumed by job slots of their
own: fetching and decoding media can be slow (a URL that answers late, a long video), and
on one queue a burst of such requests would hold every job slot while text requests,
which could be decoding, wait behind them.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

import redis
from redis.client import Pipeline
from rq import Queue
from rq.serializers import JSONSerializer

from shared.jobs import JOB_FUNCTION, GenerationJob
from shared.settings import Settings


class QueueKind(StrEnum):
    TEXT = "text"
    MEDIA = "media"


def queue_name(settings: Settings, kind: QueueKind) -> str:
    return settings.queue_name if kind is QueueKind.TEXT else f"{settings.queue_name}-media"


def kind_of(payload: dict[str, Any]) -> QueueKind:
    return QueueKind.MEDIA if GenerationJob.model_validate(payload).media_parts() else QueueKind.TEXT


def generation_queues(settings: Settings, connection: redis.Redis) -> dict[QueueKind, Queue]:
    return {
        kind: Queue(queue_name(settings, kind), connection=connection, serializer=JSONSerializer)
        for kind in QueueKind
    }


def enqueue_generation(
    queues: dict[QueueKind, Queue],
    settings: Settings,
    session_id: str,
    payload: dict[str, Any],
    job_id: str,
    again: bool,
    pipeline: Pipeline | None = None,
) -> None:
    """Queue one attempt at a session; a session queued again goes to the front.

    With a ``pipeline``, RQ only adds its commands to it (in a transaction), for the
    caller to send.
    """
    ttl = settings.sessions_ttl_seconds
    queues[kind_of(payload)].enqueue(
        JOB_FUNCTION,
        payload,
        job_id=job_id,
        job_timeout=settings.job_timeout_seconds,
        result_ttl=ttl,
        failure_ttl=ttl,
        description=f"chat completion for session {session_id}",
        at_front=again,
        pipeline=pipeline,
    )
