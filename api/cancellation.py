"""Cancelling a session, for a client's request and for auto-cancel alike."""

from __future__ import annotations

from api.job_queue import JobQueue
from api.session_store import SessionStore
from shared.events import SessionStatus


async def cancel_session(store: SessionStore, queue: JobQueue, session_id: str) -> SessionStatus | None:
    """Raise the session's cancel flag; a queued session ends now and its RQ job is cancelled.

    Returns the status the session had before, or None for an unknown session.
    """
    info = await store.get(session_id)
    if info is None:
        return None
    before = await store.cancel(info)
    if before is SessionStatus.QUEUED:
        await queue.cancel(info.job_id)
    return before
