"""The RQ side of the gateway: enqueue jobs, cancel queued ones, fail abandoned ones.

RQ's API is synchronous, so its calls run in worker threads, off the event loop.
"""

from __future__ import annotations

import contextlib
import time
from functools import partial

import redis
from anyio import to_thread
from redis.asyncio import Redis as AsyncRedis
from rq import Queue
from rq.exceptions import NoSuchJobError
from rq.job import Job
from rq.registry import StartedJobRegistry
from rq.serializers import JSONSerializer

from shared import keys
from shared.jobs import JOB_FUNCTION, GenerationJob
from shared.settings import Settings


class JobQueue:
    def __init__(self, settings: Settings, async_redis: AsyncRedis) -> None:
        self._settings = settings
        self._redis = async_redis
        self._sync = redis.Redis.from_url(settings.redis_url)
        self._queue = Queue(settings.queue_name, connection=self._sync, serializer=JSONSerializer)

    async def enqueue(self, job: GenerationJob, job_id: str, inline_media: list[str] | None = None) -> None:
        """Queue the job; its inline media go first to their own hash, read once by the worker.

        Keeping megabytes of base64 out of the RQ job means they cross Redis once each way:
        RQ would otherwise compress them on enqueue, rewrite them when the job ends and keep
        them for the result TTL, and every ``Job.fetch`` (a cancel) would read them back.
        """
        if inline_media and job.inline_media_key:
            pipe = self._redis.pipeline(transaction=False)
            pipe.hset(job.inline_media_key, mapping=dict(enumerate(inline_media)))
            # Until a worker takes the job: at most the life of an open session.
            pipe.expire(job.inline_media_key, self._settings.session_keep_seconds)
            await pipe.execute()
        ttl = self._settings.sessions_ttl_seconds
        enqueue = partial(
            self._queue.enqueue,
            JOB_FUNCTION,
            job.model_dump(mode="json"),
            job_id=job_id,
            job_timeout=self._settings.job_timeout_seconds,
            result_ttl=ttl,
            failure_ttl=ttl,
            description=f"chat completion for session {job.session_id}",
        )
        await to_thread.run_sync(enqueue)

    async def job_states(self, job_ids: list[str]) -> list[str | None]:
        """RQ's status of each job (None for a job RQ no longer has), in one round trip."""
        pipe = self._redis.pipeline(transaction=False)
        for job_id in job_ids:
            pipe.hget(Job.key_for(job_id), "status")
        return [None if state is None else str(state) for state in await pipe.execute()]

    async def depth(self) -> int:
        return int(await self._redis.llen(self._queue.key))

    async def live_workers(self) -> int:
        return int(await self._redis.zcount(keys.live_workers(), f"({time.time()}", "+inf"))

    def _cancel_job(self, job_id: str) -> None:
        with contextlib.suppress(NoSuchJobError):
            Job.fetch(job_id, connection=self._sync, serializer=JSONSerializer).cancel()

    async def cancel(self, job_id: str) -> None:
        """Cancel a queued job; its inline media will never be read."""
        await self._redis.delete(keys.job_inline_media(job_id))
        await to_thread.run_sync(self._cancel_job, job_id)

    def _cleanup_abandoned(self) -> None:
        StartedJobRegistry(queue=self._queue, serializer=JSONSerializer).cleanup()

    async def fail_abandoned_jobs(self) -> None:
        """Move jobs whose worker stopped renewing their lease to RQ's failed registry."""
        await to_thread.run_sync(self._cleanup_abandoned)

    def close(self) -> None:
        self._sync.close()
