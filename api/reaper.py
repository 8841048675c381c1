"""Background duty of every gateway: look after sessions nobody else is looking after.

Each pass reads every open session once and evaluates three independent duties on it:
- a running session whose worker died (its lease has been missing for LEASE_GRACE_SECONDS)
  is queued again, to continue on another worker from its next event;
- a queued session whose RQ job can no longer run it (the job failed, vanished, or sits in
  RQ's intermediate list because its worker died while taking it) is queued again;
- a session no client has followed for CANCEL_AFTER_DISCONNECT_SECONDS is cancelled.
Every gateway runs it; the session scripts are atomic and a requeue names the job it
replaces, so several gateways reaping at once act on a session exactly once.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from dataclasses import dataclass

from redis.asyncio import Redis

from api.cancellation import cancel_session
from api.job_queue import JobQueue
from api.metrics import CANCELS
from api.session_store import SessionStore
from shared import keys
from shared.events import SessionStatus
from shared.redis_retry import OUTAGE_ERRORS
from shared.session_scripts import Requeued, RequeueMode
from shared.settings import Settings

log = logging.getLogger(__name__)

WORKER_LOST = "The session failed: the workers generating it stopped {attempts} times."
JOB_LOST = "The session failed: its job was lost {attempts} times before a worker could run it."
# RQ job states in which the job may still move its session to running.
LIVE_JOB_STATES = {"queued", "started", "deferred", "scheduled"}


@dataclass(frozen=True)
class OpenSession:
    """What one pass knows about an open session."""

    session_id: str
    status: SessionStatus | None  # None: the session is gone (expired)
    job_id: str
    last_attached: float
    leased: bool
    attached: bool
    background: bool = False  # a background response: never auto-cancelled


class Reaper:
    def __init__(self, redis: Redis, store: SessionStore, queue: JobQueue, settings: Settings) -> None:
        self._redis = redis
        self._store = store
        self._queue = queue
        self._settings = settings
        # When this gateway first saw something wrong with a session's current job, by
        # (session, job): a lease that is missing, a job that is not live. Acting only once
        # it has lasted a while lets a worker ride out a Redis stall or restart.
        self._suspect_since: dict[tuple[str, str], float] = {}

    @property
    def interval_seconds(self) -> float:
        return min(1.0, self._settings.heartbeat_interval_seconds)

    async def reap_once(self) -> None:
        sessions = await self._read_open_sessions()
        now = time.monotonic()
        suspects: set[tuple[str, str]] = set()
        queued: list[OpenSession] = []
        for session in sessions:
            if session.status is None:
                await self._redis.srem(keys.active_sessions(), session.session_id)
                continue
            if await self._auto_cancel(session):
                continue
            if session.status is SessionStatus.RUNNING and not session.leased:
                suspects.add((session.session_id, session.job_id))
                if self._suspected_for(session, now) >= self._settings.lease_grace_seconds:
                    await self._requeue(session, RequeueMode.DEAD, WORKER_LOST, "worker_lost")
            elif session.status is SessionStatus.QUEUED:
                queued.append(session)
        if queued:
            suspects |= await self._check_queued_jobs(queued, now)
        # What is no longer suspect starts from zero if it ever is again.
        self._suspect_since = {k: v for k, v in self._suspect_since.items() if k in suspects}
        await self._queue.fail_abandoned_jobs()

    async def _read_open_sessions(self) -> list[OpenSession]:
        session_ids = sorted(map(str, await self._redis.smembers(keys.active_sessions())))
        pipe = self._redis.pipeline(transaction=False)
        for session_id in session_ids:
            pipe.hmget(keys.session_meta(session_id), "status", "job_id", "last_attached", "background")
            pipe.exists(keys.session_lease(session_id))
            pipe.exists(keys.session_attached(session_id))
        results = await pipe.execute() if session_ids else []
        sessions = []
        for position, session_id in enumerate(session_ids):
            (status, job_id, last_attached, background), leased, attached = results[
                3 * position : 3 * position + 3
            ]
            sessions.append(
                OpenSession(
                    session_id=session_id,
                    status=SessionStatus(status) if status else None,
                    job_id=job_id or "",
                    last_attached=float(last_attached or time.time()),
                    leased=bool(leased),
                    attached=bool(attached),
                    background=bool(background),
                )
            )
        return sessions

    def _suspected_for(self, session: OpenSession, now: float) -> float:
        since = self._suspect_since.setdefault((session.session_id, session.job_id), now)
        return now - since

    async def _auto_cancel(self, session: OpenSession) -> bool:
        """Cancel a session, queued or running, that no client has followed for a while."""
        cancel_after = self._settings.cancel_after_disconnect_seconds
        if session.background or cancel_after <= 0 or session.attached:
            return False
        if time.time() - session.last_attached <= cancel_after:
            return False
        log.info("session %s cancelled: no client for %ss", session.session_id, cancel_after)
        CANCELS.labels("auto").inc()
        await cancel_session(self._store, self._queue, session.session_id)
        return True

    async def _check_queued_jobs(self, queued: list[OpenSession], now: float) -> set[tuple[str, str]]:
        """Queue again the queued sessions whose RQ job can no longer run them."""
        states = await self._queue.job_states([session.job_id for session in queued])
        stuck = await self._queue.taken_but_not_started()
        suspects = set()
        for session, state in zip(queued, states, strict=True):
            if state in LIVE_JOB_STATES and session.job_id not in stuck:
                continue
            suspects.add((session.session_id, session.job_id))
            if self._suspected_for(session, now) >= self._lost_job_grace_seconds:
                await self._requeue(session, RequeueMode.LOST, JOB_LOST, "job_lost")
        return suspects

    @property
    def _lost_job_grace_seconds(self) -> float:
        # A gateway enqueues a job right after creating its session, and a worker starts
        # a job it took within milliseconds: this leaves room for a slow round trip.
        return 2 * self._settings.worker_lease_seconds

    async def _requeue(self, session: OpenSession, mode: RequeueMode, message: str, code: str) -> None:
        payload = await self._store.job_payload(session.session_id)
        if payload is None:
            return
        new_job_id = uuid.uuid4().hex
        attempts = self._settings.max_job_attempts
        result = await self._store.requeue(
            session.session_id, session.job_id, new_job_id, mode, message.format(attempts=attempts), code
        )
        if result is Requeued.QUEUED:
            await self._queue.forget(session.job_id)
            await self._queue.enqueue(session.session_id, payload, new_job_id, again=True)
            log.warning("session %s queued again as job %s (%s)", session.session_id, new_job_id, mode.value)
        elif result is Requeued.FAILED:
            log.warning("session %s failed: %s", session.session_id, code)

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_seconds)
            try:
                await self.reap_once()
            except asyncio.CancelledError:
                raise
            except Exception as error:
                # After an outage every observation starts again: leases lapse while Redis
                # is down and need a beat or two to be renewed.
                self._suspect_since.clear()
                log.warning("reaper pass failed: %s", error, exc_info=not isinstance(error, OUTAGE_ERRORS))
