"""Background duty of every gateway: end sessions whose worker died or whose clients left.

Every gateway runs it; the session scripts are atomic, so several gateways reaping at
once end a session exactly once.
"""

from __future__ import annotations

import asyncio
import logging
import time

from redis.asyncio import Redis

from api.cancellation import cancel_session
from api.job_queue import JobQueue
from api.session_store import SessionStore
from shared import keys
from shared.events import SessionStatus
from shared.settings import Settings

log = logging.getLogger(__name__)

WORKER_LOST = "The worker generating this response stopped unexpectedly."
JOB_LOST = "The job for this request was lost before a worker could run it."
# RQ job states in which the job may still move its session to running.
LIVE_JOB_STATES = {"queued", "started", "deferred", "scheduled"}


class Reaper:
    def __init__(self, redis: Redis, store: SessionStore, queue: JobQueue, settings: Settings) -> None:
        self._redis = redis
        self._store = store
        self._queue = queue
        self._settings = settings

    @property
    def interval_seconds(self) -> float:
        return min(1.0, self._settings.heartbeat_interval_seconds)

    async def reap_once(self) -> None:
        session_ids = sorted(map(str, await self._redis.smembers(keys.active_sessions())))
        if session_ids:
            await self._check_sessions(session_ids)
        await self._queue.fail_abandoned_jobs()

    async def _check_sessions(self, session_ids: list[str]) -> None:
        pipe = self._redis.pipeline(transaction=False)
        for session_id in session_ids:
            pipe.hmget(keys.session_meta(session_id), "status", "last_attached", "job_id", "created")
            pipe.exists(keys.session_lease(session_id))
            pipe.exists(keys.session_attached(session_id))
        results = await pipe.execute()
        now = time.time()
        cancel_after = self._settings.cancel_after_disconnect_seconds
        long_queued: dict[str, str] = {}
        for position, session_id in enumerate(session_ids):
            (status, last_attached, job_id, created), leased, attached = results[
                3 * position : 3 * position + 3
            ]
            if status is None:
                await self._redis.srem(keys.active_sessions(), session_id)
            elif status == SessionStatus.QUEUED and now - float(created or now) > self._queued_check_seconds:
                long_queued[session_id] = job_id
            elif status == SessionStatus.RUNNING and not leased:
                if await self._store.fail(session_id, WORKER_LOST, only_if_dead=True, code="worker_lost"):
                    log.warning("session %s failed: its worker died", session_id)
            elif cancel_after > 0 and not attached and now - float(last_attached or now) > cancel_after:
                log.info("session %s cancelled: no client for %ss", session_id, cancel_after)
                await cancel_session(self._store, self._queue, session_id)
        if long_queued:
            await self._fail_lost_jobs(long_queued)

    @property
    def _queued_check_seconds(self) -> float:
        return 2 * self._settings.worker_lease_seconds

    async def _fail_lost_jobs(self, queued: dict[str, str]) -> None:
        """Fail queued sessions whose RQ job can no longer run them.

        A job that failed or was lost before its worker moved the session to running (the
        worker died right after taking it, say) would otherwise leave the session queued,
        and its clients waiting, until the session expires.
        """
        states = await self._queue.job_states(list(queued.values()))
        for (session_id, job_id), state in zip(queued.items(), states, strict=True):
            if state in LIVE_JOB_STATES:
                continue
            if await self._store.fail(session_id, JOB_LOST, only_if_dead=False, code="job_lost"):
                log.warning("session %s failed: its job %s is %s", session_id, job_id, state or "gone")

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_seconds)
            try:
                await self.reap_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("reaper pass failed")
