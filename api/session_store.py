"""The gateway's side of a session: create or attach, read status, cancel, fail, touch."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis

from shared import keys
from shared.events import ChunkWriter, SessionStatus, dumps, empty_usage, error_object
from shared.responses import ResponseSpec, cancelled_response_events
from shared.session_scripts import (
    AsyncScripts,
    Cancel,
    Capacity,
    Create,
    Created,
    Requeue,
    Requeued,
    RequeueMode,
    TouchAttached,
)
from shared.settings import Settings

# The fields of a session's hash that SessionInfo shows (not the stored job payload).
_INFO_FIELDS = ("status", "job_id", "owner", "model", "created", "finish_reason", "usage", "error")


@dataclass(frozen=True)
class SessionInfo:
    session_id: str
    status: SessionStatus
    job_id: str
    owner: str
    model: str
    created: int
    event_count: int
    finish_reason: str | None
    usage: dict[str, Any] | None
    error: str | None

    def public(self, queue_position: int | None = None) -> dict[str, Any]:
        """``queue_position``: jobs ahead of this one in its queue (only while queued)."""
        return {
            "id": keys.client_session_id(self.session_id),
            "object": "chat.completion.session",
            "status": self.status.value,
            "model": self.model,
            "created": self.created,
            "events": self.event_count,
            "finish_reason": self.finish_reason,
            "usage": self.usage,
            "error": self.error,
            "queue_position": queue_position if self.status is SessionStatus.QUEUED else None,
        }


class SessionStore:
    def __init__(self, redis: Redis, settings: Settings) -> None:
        self._redis = redis
        self._settings = settings
        self._scripts = AsyncScripts(redis)

    async def create(
        self,
        session_id: str,
        job_id: str,
        owner: str,
        model: str,
        created: int,
        job_payload: str,
        capacity: Capacity | None = None,
    ) -> Created:
        """Create a queued session, unless it exists or ``capacity`` is short.

        The job's payload is kept with the session, so that the session can be queued again
        (its worker died, its job was lost) exactly as it was asked. A retried call whose
        first reply was lost answers RETRIED: it was this request's.
        """
        call = Create(
            session_id,
            now=created,
            request_id=job_id,
            owner=owner,
            model=model,
            keep_seconds=self._settings.session_keep_seconds,
            job_payload=job_payload,
            capacity=capacity,
        )
        return await self._scripts.run(call)

    async def get(self, session_id: str) -> SessionInfo | None:
        pipe = self._redis.pipeline(transaction=False)
        pipe.hmget(keys.session_meta(session_id), *_INFO_FIELDS)
        pipe.xlen(keys.session_events(session_id))
        values, event_count = await pipe.execute()
        meta = dict(zip(_INFO_FIELDS, values, strict=True))
        if meta["status"] is None:
            return None
        usage = meta.get("usage")
        return SessionInfo(
            session_id=session_id,
            status=SessionStatus(meta["status"]),
            job_id=meta.get("job_id") or "",
            owner=meta.get("owner") or "",
            model=meta.get("model") or "",
            created=int(meta.get("created") or 0),
            event_count=int(event_count),
            finish_reason=meta.get("finish_reason"),
            usage=json.loads(usage) if usage else None,
            error=meta.get("error"),
        )

    async def job_payload(self, session_id: str) -> dict[str, Any] | None:
        payload = await self._redis.hget(keys.session_meta(session_id), "job")
        return json.loads(payload) if payload else None

    async def cancel(self, session: SessionInfo) -> SessionStatus | None:
        """Request a cancel; returns the status the session had, None if it is gone."""
        session_id = session.session_id
        role_events, finish_events, ttl = await self._cancel_events(session)
        call = Cancel(
            session_id,
            flag_seconds=self._settings.session_keep_seconds,
            ttl=ttl,
            usage_json=dumps(empty_usage()),
            role_events=role_events,
            finish_events=finish_events,
        )
        status = await self._scripts.run(call)
        return SessionStatus(status) if status else None

    async def _cancel_events(self, session: SessionInfo) -> tuple[tuple[str, ...], tuple[str, ...], int]:
        """The first and last events of a session cancelled while queued, and its TTL.

        A chat session gets a role chunk and a finish chunk for each of its n choices, and
        the usage chunk if it asked for one.
        """
        client_id = keys.client_session_id(session.session_id)
        payload = await self.job_payload(session.session_id) or {}
        ttl = int(payload.get("ttl_seconds") or self._settings.sessions_ttl_seconds)
        if payload.get("api") == "responses":
            spec = ResponseSpec.model_validate(payload.get("response") or {})
            created, ended = cancelled_response_events(client_id, session.model, session.created, spec)
            return (created,), (ended,), ttl
        chunks = ChunkWriter(client_id, session.model, session.created)
        n, include_usage = int(payload.get("n") or 1), bool(payload.get("include_usage"))
        roles, finishes = chunks.cancelled_before_start(n, include_usage)
        return tuple(roles), tuple(finishes), ttl

    async def mark_background(self, session_id: str) -> None:
        """A background response: auto-cancel leaves it running when nobody follows it."""
        await self._redis.hset(keys.session_meta(session_id), "background", "1")

    async def delete(self, session_id: str) -> None:
        """Remove a session and all its keys (a running worker then finds it lost and stops)."""
        pipe = self._redis.pipeline(transaction=True)
        # Its own keys only: session_keys also names the set of active sessions.
        pipe.delete(*(key for key in keys.session_keys(session_id) if key != keys.active_sessions()))
        pipe.srem(keys.active_sessions(), session_id)
        await pipe.execute()

    async def requeue(
        self,
        session_id: str,
        expected_job_id: str,
        new_job_id: str,
        mode: RequeueMode,
        message: str,
        code: str,
    ) -> Requeued:
        """Queue the session again under ``new_job_id`` (see ``Requeue``); ``message`` is the
        error it ends with if its attempts ran out."""
        call = Requeue(
            session_id,
            expected_job_id=expected_job_id,
            new_job_id=new_job_id,
            mode=mode,
            worker="",
            max_attempts=self._settings.max_job_attempts,
            ttl=self._settings.sessions_ttl_seconds,
            error_message=message,
            error_event=dumps(error_object(message, "server_error", code=code)),
        )
        return await self._scripts.run(call)

    async def touch_attached_many(self, sessions: list[tuple[str, float]]) -> list[BaseException | None]:
        """Renew the attached mark of many sessions (id, hold seconds) in one round trip;
        what each renewal raised, or None."""
        now = int(time.time())
        pipe = self._redis.pipeline(transaction=False)
        for session_id, hold_seconds in sessions:
            await self._scripts.queue(
                TouchAttached(session_id, hold_ms=int(hold_seconds * 1000), now=now), pipe
            )
        replies = await pipe.execute(raise_on_error=False)
        return [reply if isinstance(reply, BaseException) else None for reply in replies]

    async def touch_attached(self, session_id: str, hold_seconds: float) -> None:
        await self._scripts.run(
            TouchAttached(session_id, hold_ms=int(hold_seconds * 1000), now=int(time.time()))
        )
