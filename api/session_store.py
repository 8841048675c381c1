"""The gateway's side of a session: create or attach, read status, cancel, fail, touch."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis

from shared import keys, session_scripts
from shared.events import ChunkWriter, SessionStatus, dumps, empty_usage, error_object
from shared.session_scripts import ScriptArg
from shared.settings import Settings


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

    def public(self) -> dict[str, Any]:
        return {
            "id": self.session_id,
            "object": "chat.completion.session",
            "status": self.status.value,
            "model": self.model,
            "created": self.created,
            "events": self.event_count,
            "finish_reason": self.finish_reason,
            "usage": self.usage,
            "error": self.error,
        }


class SessionStore:
    def __init__(self, redis: Redis, settings: Settings) -> None:
        self._redis = redis
        self._settings = settings
        self._create = redis.register_script(session_scripts.CREATE)
        self._cancel = redis.register_script(session_scripts.CANCEL)
        self._fail = redis.register_script(session_scripts.FAIL)
        self._touch = redis.register_script(session_scripts.TOUCH_ATTACHED)

    async def create(self, session_id: str, job_id: str, owner: str, model: str, created: int) -> bool:
        """Create a queued session; false if it already exists."""
        args: list[ScriptArg] = [
            session_id,
            created,
            job_id,
            owner,
            model,
            self._settings.session_keep_seconds,
        ]
        return bool(await self._create(keys=keys.session_keys(session_id), args=args))

    async def get(self, session_id: str) -> SessionInfo | None:
        pipe = self._redis.pipeline(transaction=False)
        pipe.hgetall(keys.session_meta(session_id))
        pipe.xlen(keys.session_events(session_id))
        meta, event_count = await pipe.execute()
        if not meta or "status" not in meta:
            return None
        usage = meta.get("usage")
        return SessionInfo(
            session_id=session_id,
            status=SessionStatus(meta["status"]),
            job_id=meta.get("job_id", ""),
            owner=meta.get("owner", ""),
            model=meta.get("model", ""),
            created=int(meta.get("created", 0)),
            event_count=int(event_count),
            finish_reason=meta.get("finish_reason"),
            usage=json.loads(usage) if usage else None,
            error=meta.get("error"),
        )

    async def cancel(self, session: SessionInfo) -> SessionStatus | None:
        """Request a cancel; returns the status the session had, None if it is gone."""
        session_id = session.session_id
        chunks = ChunkWriter(session_id, session.model, session.created)
        args: list[ScriptArg] = [
            self._settings.session_keep_seconds,
            self._settings.sessions_ttl_seconds,
            session_id,
            dumps(empty_usage()),
            chunks.role(),
            chunks.finish("cancelled"),
        ]
        status = await self._cancel(keys=keys.session_keys(session_id), args=args)
        return SessionStatus(status) if status else None

    async def fail(self, session_id: str, message: str, only_if_dead: bool, code: str) -> bool:
        """End an open session with an error event; with only_if_dead, only if its worker died."""
        payload = dumps(error_object(message, "server_error", code=code))
        args: list[ScriptArg] = [
            message,
            self._settings.sessions_ttl_seconds,
            session_id,
            "1" if only_if_dead else "0",
            payload,
        ]
        return bool(await self._fail(keys=keys.session_keys(session_id), args=args))

    async def touch_attached(self, session_id: str, hold_seconds: float) -> None:
        args: list[ScriptArg] = [int(hold_seconds * 1000), int(time.time())]
        await self._touch(keys=keys.session_keys(session_id), args=args)
