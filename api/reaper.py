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
            pipe.hmget(keys.session_meta(session_id), "status", "last_attached")
            pipe.exists(keys.session_lease(session_id))
            pipe.exists(keys.session_attached(session_id))
        results = await pipe.execute()
        now = time.time()
        cancel_after = self._settings.cancel_after_disconnect_seconds
        for position, session_id in enumerate(session_ids):
            (status, last_attached), leased, attached = results[3 * position : 3 * position + 3]
            if status is None:
                await self._redis.srem(keys.active_sessions(), session_id)
            elif status == SessionStatus.RUNNING and not leased:
                if await self._store.fail(session_id, WORKER_LOST, only_if_dead=True):
                    log.warning("session %s failed: its worker died", session_id)
            elif cancel_after > 0 and not attached and now - float(last_attached or now) > cancel_after:
                log.info("session %s cancelled: no client for %ss", session_id, cancel_after)
                await cancel_session(self._store, self._queue, session_id)

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_seconds)
            try:
                await self.reap_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("reaper pass failed")
