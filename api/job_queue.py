"""The RQ side of the gateway: enqueue jobs, cancel queued ones, find lost ones.

RQ's API is synchronous, so its calls that talk to Redis run in worker threads, off the
event loop. Enqueueing, on every request's path, does not: RQ writes its commands into a
pipeline that is never sent, and the event loop sends them itself (``enqueue``).
"""

from __future__ import annotations

import contextlib
import datetime
import time
from typing import Any

from anyio import to_thread
from redis.asyncio import Redis as AsyncRedis
from rq.exceptions import NoSuchJobError
from rq.job import Job
from rq.registry import StartedJobRegistry
from rq.serializers import JSONSerializer

from shared import keys
from shared.queueing import enqueue_generation, generation_queues
from shared.redis_connection import sync_client
from shared.session_scripts import Capacity
from shared.settings import Settings


class JobQueue:
    def __init__(self, settings: Settings, async_redis: AsyncRedis) -> None:
        self._settings = settings
        self._redis = async_redis
        self._sync = sync_client(settings)
        self._queues = generation_queues(settings, self._sync)

    def capacity_check(self) -> Capacity:
        """What a new session's creation checks first (``shared.session_scripts.Create``)."""
        return Capacity(
            live_workers_key=keys.live_workers(),
            queue_keys=tuple(queue.key for queue in self._queues.values()),
            max_queue_depth=self._settings.max_queue_depth,
            now=time.time(),
        )

    async def enqueue(
        self,
        session_id: str,
        payload: dict[str, Any],
        job_id: str,
        again: bool = False,
        inline_media: list[str] | None = None,
    ) -> None:
        """Queue one attempt at a session (a session queued again goes to the front).

        One round trip, one transaction, from the event loop: the inline media, then RQ's
        own commands for the job, recorded by a pipeline of the synchronous client that is
        never sent and replayed on the asyncio one. A thread for RQ's call would cost two
        round trips and, under load, the thread's wait for the interpreter on each side.

        Inline media are kept in the session's own hash, outside the RQ job, so that
        megabytes of base64 cross Redis once each way: RQ would otherwise compress them on
        enqueue, rewrite them when the job ends and keep them for the result TTL, and every
        ``Job.fetch`` (a cancel) would read them back. They stay until the session ends,
        for every attempt at it.
        """
        await self._know_server_version()
        recorder = self._sync.pipeline(transaction=True)
        try:
            enqueue_generation(
                self._queues, self._settings, session_id, payload, job_id, again, pipeline=recorder
            )
            pipe = self._redis.pipeline(transaction=True)
            if inline_media:
                media_key = keys.session_media(session_id)
                pipe.hset(media_key, mapping=dict(enumerate(inline_media)))
                # Until a worker takes the job (which extends it): at most an open session's life.
                pipe.expire(media_key, self._settings.session_keep_seconds)
            for args, options in recorder.command_stack:
                pipe.execute_command(*args, **options)
            await pipe.execute()
        finally:
            recorder.reset()

    async def _know_server_version(self) -> None:
        # The one thing RQ asks Redis itself while it enqueues into a pipeline (once per
        # queue object): asked in a thread, so that the event loop never blocks on it.
        for queue in self._queues.values():
            if not queue.redis_server_version:
                await to_thread.run_sync(queue.get_redis_server_version)

    async def job_states(self, job_ids: list[str]) -> list[str | None]:
        """RQ's status of each job (None for a job RQ no longer has), in one round trip."""
        pipe = self._redis.pipeline(transaction=False)
        for job_id in job_ids:
            pipe.hget(Job.key_for(job_id), "status")
        return [None if state is None else str(state) for state in await pipe.execute()]

    async def taken_but_not_started(self) -> set[str]:
        """Jobs a worker took from the queue but never started (RQ's intermediate list).

        A live worker moves a job on from there within milliseconds; one that stays is the
        job of a worker that died in between.
        """
        pipe = self._redis.pipeline(transaction=False)
        for queue in self._queues.values():
            pipe.lrange(queue.intermediate_queue_key, 0, -1)
        return {str(job_id) for job_ids in await pipe.execute() for job_id in job_ids}

    async def forget(self, job_id: str) -> None:
        """Drop a job that was replaced by a new attempt from RQ's lists."""
        pipe = self._redis.pipeline(transaction=False)
        for queue in self._queues.values():
            pipe.lrem(queue.intermediate_queue_key, 0, job_id)
            pipe.lrem(queue.key, 0, job_id)
        await pipe.execute()

    def _queue_lengths(self, pipe: Any) -> None:
        """Ask for every queue's length (text and media), in the pipeline's order."""
        for queue in self._queues.values():
            pipe.llen(queue.key)

    async def depth(self) -> int:
        pipe = self._redis.pipeline(transaction=False)
        self._queue_lengths(pipe)
        return sum(await pipe.execute())

    async def position(self, job_id: str) -> int | None:
        """The 0-based place of a waiting job in its queue; None once a worker has taken it.

        RQ queues are Redis lists that workers pop from the left, so LPOS is the number of
        jobs ahead. The job is in one of the queues (text or media): ask both at once.
        """
        pipe = self._redis.pipeline(transaction=False)
        for queue in self._queues.values():
            pipe.lpos(queue.key, job_id)
        return next((int(place) for place in await pipe.execute() if place is not None), None)

    async def oldest_queued_seconds(self) -> float | None:
        """How long the job at the head of the longest-waiting queue has waited (None: empty)."""
        pipe = self._redis.pipeline(transaction=False)
        for queue in self._queues.values():
            pipe.lindex(queue.key, 0)
        heads = [head for head in await pipe.execute() if head]
        if not heads:
            return None
        pipe = self._redis.pipeline(transaction=False)
        for head in heads:
            pipe.hget(f"rq:job:{_text(head)}", "enqueued_at")
        times = [_parse_rq_time(_text(value)) for value in await pipe.execute() if value]
        known = [value for value in times if value is not None]
        return max(0.0, time.time() - min(known)) if known else None

    async def worker_statuses(self) -> list[dict[str, Any]]:
        """The live workers and what each says of itself (model, batch in use)."""
        names = [
            _text(name)
            for name in await self._redis.zrangebyscore(keys.live_workers(), f"({time.time()}", "+inf")
        ]
        pipe = self._redis.pipeline(transaction=False)
        for name in names:
            pipe.hgetall(keys.worker_info(name))
        infos = await pipe.execute() if names else []
        statuses = []
        for name, info in zip(names, infos, strict=True):
            fields = {_text(key): _text(value) for key, value in (info or {}).items()}
            statuses.append(
                {
                    "name": name,
                    "model": fields.get("model"),
                    "running": int(fields.get("running", 0)),
                    "waiting": int(fields.get("waiting", 0)),
                    "maxBatch": int(fields.get("max_batch", 0)),
                    "contextLength": int(fields["context"]) if "context" in fields else None,
                }
            )
        return statuses

    async def capacity(self) -> tuple[int, int]:
        """The live workers and the queued jobs, in one round trip, for /metrics. (A new
        request is checked inside its session's creation: ``capacity_check``.)"""
        pipe = self._redis.pipeline(transaction=False)
        pipe.zcount(keys.live_workers(), f"({time.time()}", "+inf")
        self._queue_lengths(pipe)
        live, *depths = await pipe.execute()
        return int(live), sum(depths)

    def _cancel_job(self, job_id: str) -> None:
        with contextlib.suppress(NoSuchJobError):
            Job.fetch(job_id, connection=self._sync, serializer=JSONSerializer).cancel()

    async def cancel(self, job_id: str) -> None:
        """Cancel a queued job (its session has ended: the job would find it so and stop)."""
        await to_thread.run_sync(self._cancel_job, job_id)

    def _cleanup_abandoned(self) -> None:
        for queue in self._queues.values():
            StartedJobRegistry(queue=queue, serializer=JSONSerializer).cleanup()

    async def fail_abandoned_jobs(self) -> None:
        """Move jobs whose worker stopped renewing their lease to RQ's failed registry."""
        await to_thread.run_sync(self._cleanup_abandoned)

    def close(self) -> None:
        self._sync.close()


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _parse_rq_time(value: str) -> float | None:
    """RQ's timestamps: UTC, ISO 8601 with microseconds and a Z."""
    try:
        return (
            datetime.datetime.strptime(value, "%Y-%m-%dT%H:%M:%S.%fZ")
            .replace(tzinfo=datetime.UTC)
            .timestamp()
        )
    except ValueError:
        return None
